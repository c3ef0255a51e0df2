"""The software bill of materials: the Python distributions installed in the image.

SPDX 2.3 JSON (default) or CycloneDX 1.5 JSON, built from the dist-info metadata of the
dependency layer. Pure functions of the repository and the distributions, NOT of the image
digest: its time is the build's fixed epoch and its namespace derives from the distribution
set, so a rebuild whose dependencies did not change has the very same SBOM blob, which the
registry already holds (a one-line change uploads no SBOM, only a new ~0.7 KB artifact manifest).
What ties the document to one image is the artifact manifest's OCI ``subject``.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Iterable

from .deps import Distribution

SPDX_MEDIA_TYPE = "application/spdx+json"
CYCLONEDX_MEDIA_TYPE = "application/vnd.cyclonedx+json"
FORMATS = {"spdx": SPDX_MEDIA_TYPE, "cyclonedx": CYCLONEDX_MEDIA_TYPE}

# License names that are SPDX identifiers as written (the common ones seen in dist-info).
_SPDX_IDS = {
    "MIT", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "ISC", "MPL-2.0", "PSF-2.0", "Python-2.0",
    "LGPL-2.1-only", "LGPL-2.1-or-later", "LGPL-3.0-only", "LGPL-3.0-or-later", "GPL-2.0-only",
    "GPL-2.0-or-later", "GPL-3.0-only", "GPL-3.0-or-later", "Unlicense", "0BSD", "Zlib", "CC0-1.0",
}
_ALIASES = {"BSD": "BSD-3-Clause", "Apache 2.0": "Apache-2.0", "Apache License 2.0": "Apache-2.0",
            "Apache Software License": "Apache-2.0", "Apache License, Version 2.0": "Apache-2.0",
            "MIT License": "MIT", "BSD License": "BSD-3-Clause", "3-Clause BSD License": "BSD-3-Clause"}


def spdx_license(declared: str) -> str:
    """An SPDX license expression for a dist's declared license, or NOASSERTION."""
    d = declared.strip()
    if not d:
        return "NOASSERTION"
    d = _ALIASES.get(d, d)
    tokens = [t for t in re.split(r"\s+|[()]", d) if t]
    if tokens and all(t in ("AND", "OR", "WITH") or (t in _SPDX_IDS or t.startswith("LicenseRef-")) for t in tokens):
        return d
    return "NOASSERTION"


def purl(dist: Distribution) -> str:
    name = re.sub(r"[-_.]+", "-", dist.name).lower()  # PEP 503 normalisation, as the purl spec asks
    return f"pkg:pypi/{name}@{dist.version}"


def _spdx_id(dist: Distribution) -> str:
    return "SPDXRef-Package-python-" + re.sub(r"[^A-Za-z0-9.-]", "-", f"{dist.name}-{dist.version}")


def _timestamp(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sorted(dists: Iterable[Distribution]) -> list[Distribution]:
    return sorted(set(dists), key=lambda d: (d.name.lower(), d.version))


def _set_id(image: str, dists: list[Distribution]) -> uuid.UUID:
    """One id per (repository, distribution set): the same dependencies, the same document."""
    return uuid.uuid5(uuid.NAMESPACE_URL, image + "?" + "&".join(f"{purl(d)}#{d.license}" for d in dists))


def spdx(image: str, dists: Iterable[Distribution], epoch: int, tool: str) -> dict:
    """SPDX 2.3: the image (its repository; the OCI subject names the digest) is the described
    package; it CONTAINS each distribution."""
    dists = _sorted(dists)
    root_id = "SPDXRef-Image"
    namespace = f"https://spdx.org/spdxdocs/ferry/{_set_id(image, dists)}"
    packages = [{
        "SPDXID": root_id,
        "name": image,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                          "referenceLocator": f"pkg:oci/{image.rsplit('/', 1)[-1]}"
                                              f"?repository_url={image.rsplit('/', 1)[0]}"}],
    }]
    rels = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": root_id}]
    for d in dists:
        pkg = {
            "SPDXID": _spdx_id(d),
            "name": d.name,
            "versionInfo": d.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": spdx_license(d.license),
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "LIBRARY",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": purl(d)}],
        }
        if d.summary:
            pkg["summary"] = d.summary
        if d.homepage:
            pkg["homepage"] = d.homepage
        if d.author:
            pkg["supplier"] = f"Person: {d.author}" if "@" not in d.author else f"Person: ({d.author})"
        packages.append(pkg)
        rels.append({"spdxElementId": root_id, "relationshipType": "CONTAINS", "relatedSpdxElement": _spdx_id(d)})
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": image,
        "documentNamespace": namespace,
        "creationInfo": {"created": _timestamp(epoch), "creators": [f"Tool: {tool}"]},
        "documentDescribes": [root_id],
        "packages": packages,
        "relationships": rels,
    }


def cyclonedx(image: str, dists: Iterable[Distribution], epoch: int, tool: str) -> dict:
    dists = _sorted(dists)
    tool_name, _, tool_version = tool.partition("-")
    components = []
    for d in dists:
        c = {"type": "library", "bom-ref": purl(d), "name": d.name, "version": d.version, "purl": purl(d)}
        lic = spdx_license(d.license)
        if lic != "NOASSERTION":
            c["licenses"] = [{"expression": lic}]
        elif d.license:
            c["licenses"] = [{"license": {"name": d.license}}]
        if d.summary:
            c["description"] = d.summary
        if d.homepage:
            c["externalReferences"] = [{"type": "website", "url": d.homepage}]
        components.append(c)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{_set_id(image, dists)}",
        "version": 1,
        "metadata": {
            "timestamp": _timestamp(epoch),
            "tools": {"components": [{"type": "application", "name": tool_name, "version": tool_version}]},
            "component": {"type": "container", "bom-ref": image, "name": image},
        },
        "components": components,
        "dependencies": [{"ref": image, "dependsOn": [purl(d) for d in dists]}],
    }


def document(fmt: str, image: str, dists, epoch: int, tool: str) -> dict:
    if fmt == "spdx":
        return spdx(image, dists, epoch, tool)
    if fmt == "cyclonedx":
        return cyclonedx(image, dists, epoch, tool)
    from ..errors import BuildError

    raise BuildError(f"SBOM format {fmt!r} is not known", "use spdx or cyclonedx")

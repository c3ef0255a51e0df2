"""The SBOM lists the image's Python distributions, deterministically, in SPDX 2.3 or CycloneDX 1.5."""

from __future__ import annotations

import json

import pytest

from ferry.errors import BuildError
from ferry.images.deps import Distribution
from ferry.images.sbom import cyclonedx, document, purl, spdx, spdx_license

DISTS = (
    Distribution("Flask", "3.0.3", "BSD-3-Clause", "A simple framework", "https://flask.palletsprojects.com/",
                 "Armin"),
    Distribution("gunicorn", "22.0.0", "MIT"),
    Distribution("prometheus_client", "0.20.0", "Apache Software License 2.0"),
    Distribution("odd", "1.0", "Some Custom License v7"),
)
IMAGE = "127.0.0.1:5000/hello"


def test_spdx_document_names_every_distribution_with_purl_and_license():
    doc = spdx(IMAGE, DISTS, 1, "ferry-0.1.0")
    assert doc["spdxVersion"] == "SPDX-2.3" and doc["dataLicense"] == "CC0-1.0"
    assert doc["SPDXID"] == "SPDXRef-DOCUMENT" and doc["documentDescribes"] == ["SPDXRef-Image"]
    assert doc["creationInfo"] == {"created": "1970-01-01T00:00:01Z", "creators": ["Tool: ferry-0.1.0"]}
    pkgs = {p["name"]: p for p in doc["packages"]}
    assert set(pkgs) == {IMAGE, "Flask", "gunicorn", "prometheus_client", "odd"}
    flask = pkgs["Flask"]
    assert flask == {
        "SPDXID": "SPDXRef-Package-python-Flask-3.0.3", "name": "Flask", "versionInfo": "3.0.3",
        "downloadLocation": "NOASSERTION", "filesAnalyzed": False, "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "BSD-3-Clause", "copyrightText": "NOASSERTION", "primaryPackagePurpose": "LIBRARY",
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                          "referenceLocator": "pkg:pypi/flask@3.0.3"}],
        "summary": "A simple framework", "homepage": "https://flask.palletsprojects.com/", "supplier": "Person: Armin"}
    assert pkgs["prometheus_client"]["licenseDeclared"] == "NOASSERTION"
    assert pkgs["prometheus_client"]["externalRefs"][0]["referenceLocator"] == "pkg:pypi/prometheus-client@0.20.0"
    assert "checksums" not in pkgs[IMAGE] and "versionInfo" not in pkgs[IMAGE]  # the OCI subject names the digest
    contains = {r["relatedSpdxElement"] for r in doc["relationships"] if r["relationshipType"] == "CONTAINS"}
    assert contains == {p["SPDXID"] for p in doc["packages"] if p["SPDXID"] != "SPDXRef-Image"}
    ids = [p["SPDXID"] for p in doc["packages"]]
    assert len(ids) == len(set(ids))


def test_sbom_is_deterministic_and_changes_with_the_distributions_only():
    """A rebuild with the same dependencies (a one-line source change) has byte-identical SBOM,
    so its blob is already in the registry; another dependency set is another document."""
    a = json.dumps(spdx(IMAGE, DISTS, 1, "ferry-0.1.0"), sort_keys=True)
    assert a == json.dumps(spdx(IMAGE, tuple(reversed(DISTS)), 1, "ferry-0.1.0"), sort_keys=True)
    other = spdx(IMAGE, DISTS + (Distribution("six", "1.16.0", "MIT"),), 1, "ferry-0.1.0")
    assert other["documentNamespace"] != json.loads(a)["documentNamespace"]
    upgraded = spdx(IMAGE, (Distribution("gunicorn", "23.0.0", "MIT"),) + DISTS[2:], 1, "ferry-0.1.0")
    assert upgraded["documentNamespace"] != json.loads(a)["documentNamespace"]
    c = cyclonedx(IMAGE, DISTS, 1, "ferry-0.1.0")
    assert c == cyclonedx(IMAGE, tuple(reversed(DISTS)), 1, "ferry-0.1.0")
    assert c["serialNumber"] != cyclonedx(IMAGE, DISTS[:2], 1, "ferry-0.1.0")["serialNumber"]


def test_cyclonedx_document():
    doc = cyclonedx(IMAGE, DISTS, 1, "ferry-0.1.0")
    assert (doc["bomFormat"], doc["specVersion"], doc["version"]) == ("CycloneDX", "1.5", 1)
    assert doc["serialNumber"].startswith("urn:uuid:")
    assert doc["metadata"]["component"] == {"type": "container", "bom-ref": IMAGE, "name": IMAGE}
    comps = {c["name"]: c for c in doc["components"]}
    assert comps["gunicorn"] == {"type": "library", "bom-ref": "pkg:pypi/gunicorn@22.0.0", "name": "gunicorn",
                                 "version": "22.0.0", "purl": "pkg:pypi/gunicorn@22.0.0",
                                 "licenses": [{"expression": "MIT"}]}
    assert comps["odd"]["licenses"] == [{"license": {"name": "Some Custom License v7"}}]
    assert doc["dependencies"][0]["dependsOn"] == [purl(d) for d in sorted(DISTS, key=lambda d: d.name.lower())]


@pytest.mark.parametrize("declared, expected", [
    ("MIT", "MIT"), ("Apache 2.0", "Apache-2.0"), ("BSD", "BSD-3-Clause"), ("Apache-2.0 OR MIT", "Apache-2.0 OR MIT"),
    ("", "NOASSERTION"), ("Copyright (c) 2010 ... all rights", "NOASSERTION"), ("GPLv2+", "NOASSERTION"),
])
def test_declared_licenses_become_spdx_expressions_or_noassertion(declared, expected):
    assert spdx_license(declared) == expected


def test_unknown_format_is_refused():
    with pytest.raises(BuildError, match="SBOM format 'xml' is not known"):
        document("xml", IMAGE, DISTS, 1, "ferry-0.1.0")

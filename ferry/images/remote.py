"""Read an image from a registry without downloading its layers.

A base image becomes an ``Image`` whose config is downloaded (the builder extends it) and
whose layers are known only by descriptor: ``Blob(data=None, source="registry/repo")``. The
publisher then HEADs, mounts or streams them; the build machine never holds them. Docker v2
and OCI manifests and indexes are accepted, so any base works: ferry's own, or an official
python slim image mirrored to ECR.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import BuildError, RegistryError
from .oci import (DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, INDEX_TYPES,
                  MANIFEST_TYPES, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Blob, Image, ImageIndex, Platform,
                  Reference)
from .registry import RegistryClient

SCHEMA1_TYPES = ("application/vnd.docker.distribution.manifest.v1+json",
                 "application/vnd.docker.distribution.manifest.v1+prettyjws")
# Docker media types and the OCI ones with the same bytes (for as_oci)
_TO_OCI = {
    DOCKER_MANIFEST: OCI_MANIFEST,
    DOCKER_CONFIG: OCI_CONFIG,
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
}


@dataclass(frozen=True)
class RemoteImage:
    """An image as the registry has it: the model, plus the digests the registry knows it by
    (the model's own ``digest`` is of ferry's canonical re-serialisation, which may differ)."""

    image: Image
    reference: Reference
    digest: str  # the platform manifest's digest in the registry
    media_type: str
    index_digest: str | None = None  # the index it was picked from, if any


def _ref(ref: str | Reference, client: RegistryClient) -> Reference:
    r = Reference.parse(ref) if isinstance(ref, str) else ref
    if r.registry != client.registry:
        raise BuildError(f"image {r} is on {r.registry}, but the client talks to {client.registry}",
                         "use a RegistryClient for the image's own registry")
    return r


def _platform_matches(have: dict, want: Platform) -> bool:
    if have.get("os") != want.os or have.get("architecture") != want.architecture:
        return False
    if want.variant and have.get("variant") and have.get("variant") != want.variant:
        # arm64 images are "v8" or unset: treat those as the same
        return want.architecture == "arm64" and {have.get("variant"), want.variant} <= {"v8", None}
    return True


def pick_manifest(index: dict, platform: Platform, where: str) -> dict:
    """The descriptor for ``platform`` in an index document (pure)."""
    manifests = [m for m in index.get("manifests") or []
                 if m.get("mediaType", OCI_MANIFEST) in MANIFEST_TYPES or "mediaType" not in m]
    for m in manifests:
        if _platform_matches(m.get("platform") or {}, platform):
            return m
    have = sorted({f"{(m.get('platform') or {}).get('os')}/{(m.get('platform') or {}).get('architecture')}"
                   for m in manifests if (m.get("platform") or {}).get("os") not in (None, "unknown")})
    raise BuildError(f"{where} has no image for {platform} (it has: {', '.join(have) or 'none'})",
                     "pick a base image built for that platform, or change image.platforms")


def image_from_manifest(manifest: dict, media_type: str, config: bytes, source: str,
                        platform: Platform | None = None) -> Image:
    """The model of one platform's image (pure): config with its bytes, layers by descriptor."""
    if media_type in SCHEMA1_TYPES or manifest.get("schemaVersion") == 1:
        raise BuildError(f"{source} uses the old Docker schema 1 manifest",
                         "push it again with a current docker or skopeo (schema 2 / OCI)")
    cfg_desc = manifest.get("config") or {}
    # the config keeps its source too: pushed unchanged (a mirror), it is mounted like the layers
    cfg = Blob.from_bytes(config, cfg_desc.get("mediaType", OCI_CONFIG), annotations=cfg_desc.get("annotations") or {},
                          source=source)
    if cfg.digest != cfg_desc.get("digest"):
        raise RegistryError(f"config of {source} has digest {cfg.digest}, manifest says {cfg_desc.get('digest')}",
                            "the registry altered it; do not use this image")
    layers = tuple(
        Blob(digest=d["digest"], size=int(d["size"]), media_type=d.get("mediaType", OCI_LAYER_GZIP),
             data=None, annotations=d.get("annotations") or {}, source=source)
        for d in manifest.get("layers") or []
    )
    if platform is None:
        doc = json.loads(config)
        platform = Platform(doc.get("os", "linux"), doc.get("architecture", "amd64"), doc.get("variant"))
    return Image(config=cfg, layers=layers, platform=platform,
                 annotations=manifest.get("annotations") or {}, media_type=media_type)


def resolve_image(client: RegistryClient, ref: str | Reference, platform: str | Platform = "linux/amd64") -> RemoteImage:
    """Fetch one platform's image (manifest + config, never the layers)."""
    r = _ref(ref, client)
    want = Platform.parse(platform) if isinstance(platform, str) else platform
    data, media_type, digest = client.get_manifest(r.repository, r.digest or r.tag or "latest")
    doc = json.loads(data)
    media_type = media_type or doc.get("mediaType", "")
    index_digest = None
    if media_type in INDEX_TYPES or "manifests" in doc:
        index_digest = digest
        desc = pick_manifest(doc, want, str(r))
        data, media_type, digest = client.get_manifest(r.repository, desc["digest"], accept=MANIFEST_TYPES)
        doc = json.loads(data)
        media_type = media_type or doc.get("mediaType", DOCKER_MANIFEST)
    elif media_type not in MANIFEST_TYPES and media_type not in SCHEMA1_TYPES:
        raise BuildError(f"{r} is a {media_type or 'document of unknown type'}, not an image",
                         "point image.base at an image (manifest or index)")
    source = f"{r.registry}/{r.repository}"
    cfg_digest = (doc.get("config") or {}).get("digest")
    config = client.get_blob(r.repository, cfg_digest) if cfg_digest else b"{}"
    image = image_from_manifest(doc, media_type, config, source)
    if index_digest is None and (image.platform.os, image.platform.architecture) != (want.os, want.architecture):
        raise BuildError(f"{r} is a single {image.platform} image, not {want}",
                         "pick a base image built for that platform (or an index), or change image.platforms")
    return RemoteImage(image=image, reference=r.with_digest(digest), digest=digest, media_type=media_type,
                       index_digest=index_digest)


def fetch_image(client: RegistryClient, ref: str | Reference, platform: str | Platform = "linux/amd64") -> Image:
    return resolve_image(client, ref, platform).image


def fetch_index(client: RegistryClient, ref: str | Reference,
                platforms: list[str | Platform] | None = None) -> ImageIndex:
    """Every platform's image (or those asked for). A single-manifest image becomes an index
    of one."""
    r = _ref(ref, client)
    data, media_type, digest = client.get_manifest(r.repository, r.digest or r.tag or "latest")
    doc = json.loads(data)
    source = f"{r.registry}/{r.repository}"
    if not (media_type in INDEX_TYPES or "manifests" in doc):
        config = client.get_blob(r.repository, doc["config"]["digest"])
        return ImageIndex(manifests=(image_from_manifest(doc, media_type, config, source),))
    images = []
    wanted = [Platform.parse(p) if isinstance(p, str) else p for p in platforms] if platforms else None
    for desc in doc.get("manifests") or []:
        plat = desc.get("platform") or {}
        if plat.get("os") in (None, "unknown") or desc.get("mediaType", OCI_MANIFEST) not in MANIFEST_TYPES:
            continue  # buildx attestations, nested indexes, artifacts
        p = Platform(plat["os"], plat.get("architecture", ""), plat.get("variant"))
        if wanted is not None and not any(_platform_matches(plat, w) for w in wanted):
            continue
        mdata, mtype, _ = client.get_manifest(r.repository, desc["digest"], accept=MANIFEST_TYPES)
        mdoc = json.loads(mdata)
        config = client.get_blob(r.repository, mdoc["config"]["digest"])
        images.append(image_from_manifest(mdoc, mtype or mdoc.get("mediaType", DOCKER_MANIFEST), config, source, p))
    if wanted is not None:
        for w in wanted:
            if not any(i.platform.os == w.os and i.platform.architecture == w.architecture for i in images):
                pick_manifest(doc, w, str(r))  # raises the error that lists what there is
    return ImageIndex(manifests=tuple(images), annotations=doc.get("annotations") or {})


def as_oci(image: Image) -> Image:
    """The same image with OCI media types (identical bytes, so the same blob digests): lets a
    builder extend a Docker-format base with OCI layers without mixing the two in one manifest."""
    from dataclasses import replace

    def conv(b: Blob) -> Blob:
        mt = _TO_OCI.get(b.media_type, b.media_type)
        return b if mt == b.media_type else replace(b, media_type=mt)

    return replace(image, config=conv(image.config), layers=tuple(conv(b) for b in image.layers),
                   media_type=_TO_OCI.get(image.media_type, image.media_type))

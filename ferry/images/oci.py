"""The in-memory image: content-addressed blobs, config, manifest, index.

This is the one interface between the builder (which makes images) and the publishers (which
send them to a registry, a Docker daemon or a tar / OCI layout). Like go-containerregistry's
``v1.Image``: an image is its layers, its config and its manifest, all addressed by digest.
Everything here is pure: no network, no disk writes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    """Stable bytes for a JSON document: the same object always has the same digest."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Blob:
    """Content addressed by digest. Small blobs keep their bytes; large ones point at a file
    in the local cache. ``data`` may be None for a blob known only by digest (a base layer that
    lives in a registry and is never downloaded)."""

    digest: str
    size: int
    media_type: str
    data: bytes | None = None
    path: Path | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False)
    # the registry repository this blob is known to exist in (for cross-repo mount)
    source: str | None = field(default=None, compare=False)

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str, **kw) -> "Blob":
        return cls(digest=sha256(data), size=len(data), media_type=media_type, data=data, **kw)

    def descriptor(self) -> dict:
        d = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            d["annotations"] = dict(sorted(self.annotations.items()))
        return d

    @property
    def local(self) -> bool:
        return self.data is not None or (self.path is not None and self.path.exists())

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.path is not None:
            return self.path.read_bytes()
        raise LookupError(f"blob {self.digest} has no local content")

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        if self.data is not None:
            for i in range(0, len(self.data), size):
                yield self.data[i:i + size]
            return
        if self.path is None:
            raise LookupError(f"blob {self.digest} has no local content")
        with open(self.path, "rb") as f:
            while chunk := f.read(size):
                yield chunk


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    @classmethod
    def parse(cls, s: str) -> "Platform":
        parts = s.split("/")
        return cls(parts[0], parts[1], parts[2] if len(parts) > 2 else None)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def to_json(self) -> dict:
        d = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        return d


@dataclass(frozen=True)
class Image:
    """One platform's image: config blob + ordered layers + the manifest that names them."""

    config: Blob
    layers: tuple[Blob, ...]
    platform: Platform = Platform()
    annotations: dict[str, str] = field(default_factory=dict, compare=False)
    media_type: str = OCI_MANIFEST

    @property
    def manifest_bytes(self) -> bytes:
        m: dict = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.descriptor(),
            "layers": [layer.descriptor() for layer in self.layers],
        }
        if self.annotations:
            m["annotations"] = dict(sorted(self.annotations.items()))
        return canonical_json(m)

    @property
    def digest(self) -> str:
        return sha256(self.manifest_bytes)

    @property
    def size(self) -> int:
        return len(self.manifest_bytes)

    def descriptor(self) -> dict:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
            "platform": self.platform.to_json(),
        }

    def config_json(self) -> dict:
        return json.loads(self.config.read())

    def blobs(self) -> list[Blob]:
        return [*self.layers, self.config]


@dataclass(frozen=True)
class ImageIndex:
    """Several platforms' images under one digest (an OCI image index)."""

    manifests: tuple[Image, ...]
    annotations: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def manifest_bytes(self) -> bytes:
        m: dict = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [img.descriptor() for img in self.manifests],
        }
        if self.annotations:
            m["annotations"] = dict(sorted(self.annotations.items()))
        return canonical_json(m)

    @property
    def digest(self) -> str:
        return sha256(self.manifest_bytes)

    @property
    def media_type(self) -> str:
        return OCI_INDEX

    def for_platform(self, platform: str | Platform) -> Image:
        want = Platform.parse(platform) if isinstance(platform, str) else platform
        for img in self.manifests:
            if img.platform.os == want.os and img.platform.architecture == want.architecture:
                return img
        raise LookupError(f"no image for {want} in index {self.digest}")


@dataclass(frozen=True)
class Reference:
    """registry/repository[:tag][@digest]; 'localhost' and IPs keep their port."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, ref: str) -> "Reference":
        digest = None
        if "@" in ref:
            ref, digest = ref.split("@", 1)
        tag = None
        last = ref.rsplit("/", 1)[-1]
        if ":" in last:
            ref, tag = ref.rsplit(":", 1)
        first, _, rest = ref.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, repository = first, rest
        else:
            registry, repository = "registry-1.docker.io", ref if "/" in ref else f"library/{ref}"
        return cls(registry, repository, tag, digest)

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def with_digest(self, digest: str) -> "Reference":
        return Reference(self.registry, self.repository, None, digest)

    def with_tag(self, tag: str) -> "Reference":
        return Reference(self.registry, self.repository, tag, None)

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    @property
    def insecure(self) -> bool:
        host = self.registry.split(":")[0]
        return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")

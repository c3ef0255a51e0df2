"""Publishers that need no registry: a docker-archive tar, an OCI layout directory, and a
Docker daemon (``docker load`` through the SDK).

The tar is both formats at once, as ``docker save`` writes them since Docker 25: an OCI layout
(``oci-layout``, ``index.json``, ``blobs/sha256/...``) plus the ``manifest.json`` that
``docker load`` (any version) reads, naming the same blob files. Compressed layers are
stored as they are: ``docker load`` and skopeo decompress them, so nothing is recompressed.

Base layers the build machine never downloaded (``Blob.data is None``) are streamed from
their registry into the tar or directory, digest-checked on the way.
"""

from __future__ import annotations

import io
import json
import os
import platform as host_platform
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import BuildError, ConfigError, FerryError
from ..progress import NULL, Progress, human_bytes
from .oci import OCI_INDEX, Blob, Image, ImageIndex, Platform, canonical_json
from .publish import (BlobOutcome, PublishResult, SourceClients, check_tags, images_of, layer_report, open_blob,
                      report_blob, unique_blobs)
from .registry import RegistryClient

REF_NAME = "org.opencontainers.image.ref.name"
OCI_LAYOUT = canonical_json({"imageLayoutVersion": "1.0.0"})


def blob_path(digest: str) -> str:
    algo, hexd = digest.split(":", 1)
    return f"blobs/{algo}/{hexd}"


def docker_manifest_json(image: Image, repo_tags: Iterable[str]) -> bytes:
    """``manifest.json`` of a docker-archive (pure): config and layer files by blob path."""
    return json.dumps([{
        "Config": blob_path(image.config.digest),
        "RepoTags": list(repo_tags),
        "Layers": [blob_path(b.digest) for b in image.layers],
    }], separators=(",", ":")).encode()


def layout_index(entries: list[dict]) -> bytes:
    return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})


def layout_entries(target: Image | ImageIndex, tags: Iterable[str], existing: list[dict] | None = None) -> list[dict]:
    """index.json's ``manifests`` after adding ``target`` under ``tags`` (pure): an entry with
    a tag replaces the old entry with that tag; untagged, the target is added once."""
    desc = {"mediaType": target.media_type, "digest": target.digest, "size": len(target.manifest_bytes)}
    if isinstance(target, Image) and target.platform:
        desc["platform"] = target.platform.to_json()
    entries = [dict(e) for e in existing or []]
    tags = list(tags)
    if not tags:
        if not any(e.get("digest") == target.digest and REF_NAME not in (e.get("annotations") or {}) for e in entries):
            entries.append(desc)
        return entries
    for t in tags:
        entries = [e for e in entries if (e.get("annotations") or {}).get(REF_NAME) != t]
        entries.append({**desc, "annotations": {REF_NAME: t}})
    return entries


def choose_image(target: Image | ImageIndex, platform: str | Platform | None) -> Image:
    """One platform's image: Docker holds one per name."""
    if isinstance(target, Image):
        return target
    if platform is None:
        platform = host_default_platform()
    try:
        return target.for_platform(platform)
    except LookupError:
        have = ", ".join(str(i.platform) for i in target.manifests)
        raise ConfigError(f"the image has no {platform} variant (it has: {have})",
                          "pick one of those platforms") from None


def host_default_platform() -> Platform:
    m = host_platform.machine().lower()
    return Platform("linux", {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(m, m))


# --- tar plumbing ---------------------------------------------------------------------------

def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.type = kind
    ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    ti.mtime = 0  # reproducible: the same image gives the same tar
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


class _ChunkReader(io.RawIOBase):
    """A file over an iterator of chunks, for tarfile.addfile."""

    def __init__(self, chunks: Iterable[bytes]):
        self._it: Iterator[bytes] = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def drain(self) -> None:
        """Read to the end, so a verifying stream checks its digest."""
        for _ in self._it:
            pass


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def _add_blob(tar: tarfile.TarFile, blob: Blob, fetch: Callable[[Blob], object]) -> int:
    with fetch(blob) as chunks:
        reader = _ChunkReader(chunks)
        tar.addfile(_info(blob_path(blob.digest), blob.size), io.BufferedReader(reader, 1 << 20))
        reader.drain()
    return blob.size


def write_docker_archive(out, target: Image | ImageIndex, repo_tags: list[str], fetch: Callable[[Blob], object],
                         platform: str | Platform | None = None, progress: Progress = NULL) -> tuple[Image, dict[str, BlobOutcome]]:
    """Stream a docker-archive (+ OCI layout) tar of one platform's image to ``out``."""
    image = choose_image(target, platform)
    outcomes: dict[str, BlobOutcome] = {}
    tags = [t.rsplit(":", 1)[-1] for t in repo_tags]
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", OCI_LAYOUT)
        for d in ("blobs/", "blobs/sha256/"):
            tar.addfile(_info(d, kind=tarfile.DIRTYPE))
        for b in unique_blobs(image):
            outcomes[b.digest] = BlobOutcome("written", _add_blob(tar, b, fetch), source=None if b.local else b.source)
            report_blob(progress, b, outcomes[b.digest])
        _add_bytes(tar, blob_path(image.digest), image.manifest_bytes)
        _add_bytes(tar, "index.json", layout_index(layout_entries(image, tags)))
        _add_bytes(tar, "manifest.json", docker_manifest_json(image, repo_tags))
    return image, outcomes


class _Fetcher:
    def __init__(self, source_clients: Callable[[str], RegistryClient] | None, progress: Progress):
        self.source_clients = source_clients or SourceClients(progress=progress)

    def __call__(self, blob: Blob):
        return open_blob(blob, self.source_clients)


# --- publishers -----------------------------------------------------------------------------

class TarPublisher:
    """A docker-archive tar (``docker load -i``, ``skopeo inspect docker-archive:PATH``) that
    is also an OCI layout (``oci-archive:``). One platform (the host's, unless named)."""

    def __init__(self, path: str | os.PathLike, repository: str | None = None, *, platform: str | None = None,
                 source_clients: Callable[[str], RegistryClient] | None = None, progress: Progress | None = None):
        self.path = Path(path)
        self.repository = repository
        self.platform = platform
        self.progress = progress or NULL
        self.fetch = _Fetcher(source_clients, self.progress)

    def publish(self, image: Image | ImageIndex, tags: list[str] | tuple[str, ...] = ()) -> PublishResult:
        tags = check_tags(tags)
        if tags and not self.repository:
            raise ConfigError("tags need a repository name for the tar's RepoTags", "pass repository=...")
        repo_tags = [f"{self.repository}:{t}" for t in tags]
        if not self.path.parent.is_dir():
            raise ConfigError(f"{self.path.parent} does not exist", "create the directory or pick another path")
        self.progress.step(f"write {self.path}")
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                img, outcomes = write_docker_archive(f, image, repo_tags, self.fetch, self.platform, self.progress)
            os.replace(tmp, self.path)  # a reader never sees half a tar
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        layers, config = layer_report(img, outcomes)
        size = self.path.stat().st_size
        self.progress.step(f"wrote {self.path} ({human_bytes(size)})")
        return PublishResult(reference=str(self.path), digest=img.digest, layers=layers,
                             bytes_uploaded=sum(o.sent for o in outcomes.values()), tags=tags,
                             media_type=img.media_type, target="tar", config=config)


class OCILayoutPublisher:
    """An OCI image layout directory (``skopeo inspect oci:DIR:TAG``, ``umoci``). Several
    images and tags share one directory; blobs are written once, index.json last."""

    def __init__(self, directory: str | os.PathLike, *, source_clients: Callable[[str], RegistryClient] | None = None,
                 progress: Progress | None = None):
        self.dir = Path(directory)
        self.progress = progress or NULL
        self.fetch = _Fetcher(source_clients, self.progress)

    def _existing_index(self) -> list[dict]:
        index = self.dir / "index.json"
        if not self.dir.exists():
            return []
        if not (self.dir / "oci-layout").exists():
            if any(self.dir.iterdir()):
                raise ConfigError(f"{self.dir} exists and is not an OCI layout", "pick an empty or new directory")
            return []
        if not index.exists():
            return []
        try:
            return json.loads(index.read_text()).get("manifests") or []
        except ValueError:
            raise FerryError(f"{index} is not valid JSON", "remove the directory and publish again") from None

    def _write_blob(self, blob: Blob) -> BlobOutcome:
        dest = self.dir / blob_path(blob.digest)
        if dest.exists() and dest.stat().st_size == blob.size:
            return BlobOutcome("exists")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            import hashlib

            h = hashlib.sha256()
            n = 0
            with os.fdopen(fd, "wb") as f, self.fetch(blob) as chunks:
                for c in chunks:
                    h.update(c)
                    n += len(c)
                    f.write(c)
            if "sha256:" + h.hexdigest() != blob.digest or n != blob.size:
                raise BuildError(f"blob {blob.digest} read back as sha256:{h.hexdigest()} ({n} bytes)",
                                 "the local cache is corrupt: clear .ferry/cache and rebuild")
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return BlobOutcome("written", n, source=None if blob.local else blob.source)

    def _write_bytes(self, data: bytes, digest: str) -> None:
        self._write_blob(Blob(digest=digest, size=len(data), media_type="", data=data))

    def publish(self, image: Image | ImageIndex, tags: list[str] | tuple[str, ...] = ()) -> PublishResult:
        tags = check_tags(tags)
        existing = self._existing_index()
        self.progress.step(f"write OCI layout {self.dir}")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "oci-layout").write_bytes(OCI_LAYOUT)
        outcomes = {}
        for b in unique_blobs(image):
            outcomes[b.digest] = self._write_blob(b)
            report_blob(self.progress, b, outcomes[b.digest])
        for img in images_of(image) if isinstance(image, ImageIndex) else ():
            self._write_bytes(img.manifest_bytes, img.digest)
        self._write_bytes(image.manifest_bytes, image.digest)
        index = self.dir / "index.json"
        tmp = self.dir / ".index.json.tmp"
        tmp.write_bytes(layout_index(layout_entries(image, tags, existing)))
        os.replace(tmp, index)  # last: until now the layout still names only what it had
        layers, config = layer_report(image, outcomes)
        ref = f"oci:{self.dir}:{tags[0]}" if tags else f"oci:{self.dir}@{image.digest}"
        return PublishResult(reference=ref, digest=image.digest, layers=layers,
                             bytes_uploaded=sum(o.sent for o in outcomes.values()), tags=tags,
                             media_type=image.media_type, target="oci-layout", config=config)


class DockerPublisher:
    """``docker load`` into a daemon through the docker SDK, one platform (the daemon's, unless
    named). The result's digest is the image ID (the config digest), which is what
    ``docker image inspect`` shows: a loaded image has no registry manifest digest."""

    def __init__(self, docker_client, repository: str | None = None, *, platform: str | None = None,
                 source_clients: Callable[[str], RegistryClient] | None = None, progress: Progress | None = None):
        self.docker = docker_client
        self.repository = repository
        self.platform = platform
        self.progress = progress or NULL
        self.fetch = _Fetcher(source_clients, self.progress)

    def _daemon_platform(self) -> Platform:
        try:
            v = self.docker.version()
            return Platform(v.get("Os", "linux"), v.get("Arch", "amd64"))
        except Exception as e:  # the SDK raises requests' and its own errors alike
            raise FerryError(f"cannot reach the Docker daemon: {e}",
                             "is dockerd running, and DOCKER_HOST right? (locally: ferry local up)") from None

    def _existing(self, image_id: str):
        import docker.errors

        try:
            return self.docker.images.get(image_id)
        except docker.errors.ImageNotFound:
            return None
        except Exception as e:
            raise FerryError(f"cannot reach the Docker daemon: {e}",
                             "is dockerd running, and DOCKER_HOST right? (locally: ferry local up)") from None

    def publish(self, image: Image | ImageIndex, tags: list[str] | tuple[str, ...] = ()) -> PublishResult:
        import docker.errors

        tags = check_tags(tags)
        if tags and not self.repository:
            raise ConfigError("tags need a repository name to tag the loaded image", "pass repository=...")
        plat = self.platform or self._daemon_platform()
        repo_tags = [f"{self.repository}:{t}" for t in tags]
        chosen = choose_image(image, plat)
        existing = self._existing(chosen.config.digest)
        if existing is not None:
            # the daemon has this exact image (same config digest): tag it, send nothing
            for t in tags:
                existing.tag(self.repository, t)
            outcomes = {b.digest: BlobOutcome("exists") for b in unique_blobs(chosen)}
            layers, config = layer_report(chosen, outcomes)
            ref = repo_tags[0] if repo_tags else chosen.config.digest
            self.progress.step(f"{ref}: Docker already has {chosen.config.digest[:19]}; nothing loaded")
            return PublishResult(reference=ref, digest=chosen.config.digest, layers=layers, bytes_uploaded=0,
                                 tags=tags, media_type=chosen.media_type, target="docker", config=config)
        self.progress.step(f"load into Docker{(' as ' + ', '.join(repo_tags)) if repo_tags else ''}")
        with tempfile.SpooledTemporaryFile(max_size=64 << 20) as f:
            img, outcomes = write_docker_archive(f, image, repo_tags, self.fetch, plat, self.progress)
            size = f.tell()
            f.seek(0)
            try:
                loaded = self.docker.images.load(f)
            except docker.errors.APIError as e:
                raise FerryError(f"docker load refused the image: {e.explanation or e}",
                                 "check the daemon's log; the image's config must match its layers") from None
            except Exception as e:
                raise FerryError(f"cannot reach the Docker daemon: {e}",
                                 "is dockerd running, and DOCKER_HOST right? (locally: ferry local up)") from None
        image_id = img.config.digest
        if not any(getattr(x, "id", None) == image_id for x in loaded):
            got = ", ".join(getattr(x, "id", "?") for x in loaded) or "nothing"
            raise FerryError(f"docker load reported {got}, expected image {image_id}",
                             "the daemon rewrote the image; check its storage driver")
        layers, config = layer_report(img, outcomes)
        ref = repo_tags[0] if repo_tags else image_id
        self.progress.step(f"loaded {ref} ({image_id[:19]}, {human_bytes(size)})")
        return PublishResult(reference=ref, digest=image_id, layers=layers, bytes_uploaded=size, tags=tags,
                             media_type=img.media_type, target="docker", config=config)

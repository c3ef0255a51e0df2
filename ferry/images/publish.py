"""Publishers: where a built image goes. One method each: ``publish(image, tags)``.

* ``RegistryPublisher``: the OCI distribution API (this module). Per blob: HEAD (skip what
  is there), cross-repository mount from the base's repository on the same registry, else
  upload local bytes or stream them from the base's registry; blobs in parallel, then
  manifests, then the index, then tags. Manifests go last so an interrupted push leaves only
  blobs, which the next run skips: nothing is ever half-published under a name.
  ``attach`` adds an artifact (the SBOM) that refers to an image.
* ``DockerPublisher``, ``TarPublisher``, ``OCILayoutPublisher``: ``publish_local.py``
  (importable from here too).

The builder never knows which one it is given (ko's build/publish split).
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterable, Protocol

from ..errors import BuildError, ConfigError, RegistryError
from ..progress import NULL, Progress, human_bytes
from .auth import auth_for
from .oci import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, Blob, Image, ImageIndex, canonical_json, sha256
from .registry import RegistryClient

TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
EMPTY_CONFIG = Blob.from_bytes(b"{}", OCI_EMPTY)
SBOM_TYPES = ("application/spdx+json", "application/vnd.cyclonedx+json", "text/spdx")
BIG_BLOB = 4 << 20

LOCAL_PUBLISHERS = ("DockerPublisher", "TarPublisher", "OCILayoutPublisher")


def __getattr__(name: str):
    # the local targets live in their own module; importable from here like the rest
    if name in LOCAL_PUBLISHERS:
        from . import publish_local

        return getattr(publish_local, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class PublishResult:
    """What a publish did. ``layers``: one dict per distinct layer: digest, size, uploaded
    (bytes were sent), mounted (cross-repository mount), and platforms for an index.
    ``bytes_uploaded`` counts blob bytes sent (layers and config), not manifests."""

    reference: str  # REPO@sha256:... (registry), or where the image was written
    digest: str
    layers: tuple[dict, ...]
    bytes_uploaded: int
    tags: tuple[str, ...] = ()
    media_type: str = OCI_MANIFEST
    target: str = "registry"
    config: dict | None = None  # the config blob's outcome, in the same shape as a layer
    manifest_size: int = 0  # bytes of the pushed manifest (with media_type: its descriptor)
    created: bool = False  # the manifest was not in the repository before this push

    def to_json(self) -> dict:
        return {
            "image": self.reference,
            "reference": self.reference,
            "digest": self.digest,
            "media_type": self.media_type,
            "target": self.target,
            "tags": list(self.tags),
            "layers": [dict(layer) for layer in self.layers],
            "config": dict(self.config) if self.config else None,
            "bytes_uploaded": self.bytes_uploaded,
        }


@dataclass(frozen=True)
class AttachResult:
    """An artifact pushed next to an image. ``referrers_api``: the registry indexes it by
    ``subject`` itself; otherwise the OCI 1.1 tag scheme (``sha256-<hex>``, an index of
    referrers) and a plain tag (``sha256-<hex>.sbom``) make it findable."""

    reference: str
    digest: str
    subject: str
    artifact_type: str
    tags: tuple[str, ...]
    referrers_api: bool
    bytes_uploaded: int

    def to_json(self) -> dict:
        return {"reference": self.reference, "digest": self.digest, "subject": self.subject,
                "artifact_type": self.artifact_type, "tags": list(self.tags),
                "referrers_api": self.referrers_api, "bytes_uploaded": self.bytes_uploaded}


class Publisher(Protocol):
    def publish(self, image: Image | ImageIndex, tags: list[str]) -> PublishResult: ...


# --- pure helpers ----------------------------------------------------------------------------

def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    out = []
    for t in tags:
        if not TAG_RE.match(t):
            raise ConfigError(f"tag {t!r} is not a valid image tag",
                              "use letters, digits, '_', '.', '-' (not first), at most 128 characters")
        if t not in out:
            out.append(t)
    return tuple(out)


def check_repository(repo: str) -> str:
    if not REPO_RE.match(repo) or len(repo) > 255:
        raise ConfigError(f"repository {repo!r} is not a valid repository name",
                          "lower-case letters, digits and separators (. _ - /), e.g. team/hello")
    return repo


def split_source(source: str | None) -> tuple[str, str] | None:
    """'127.0.0.1:5000/ferry/python' -> ('127.0.0.1:5000', 'ferry/python')."""
    if not source or "/" not in source:
        return None
    registry, repo = source.split("/", 1)
    return registry, repo


def images_of(target: Image | ImageIndex) -> tuple[Image, ...]:
    return target.manifests if isinstance(target, ImageIndex) else (target,)


def unique_blobs(target: Image | ImageIndex) -> list[Blob]:
    """Every blob the target needs, once, layers before configs (the order of a push)."""
    seen: dict[str, Blob] = {}
    for img in images_of(target):
        for b in img.layers:
            seen.setdefault(b.digest, b)
    for img in images_of(target):
        seen.setdefault(img.config.digest, img.config)
    return list(seen.values())


def layer_report(target: Image | ImageIndex, outcomes: dict[str, "BlobOutcome"]) -> tuple[tuple[dict, ...], dict]:
    """(layers, config) in PublishResult's shape (pure)."""
    multi = isinstance(target, ImageIndex)
    rows: dict[str, dict] = {}
    for img in images_of(target):
        for b in img.layers:
            o = outcomes[b.digest]
            row = rows.setdefault(b.digest, {"digest": b.digest, "size": b.size, "uploaded": o.uploaded,
                                             "mounted": o.mounted, **({"platforms": []} if multi else {})})
            if multi and str(img.platform) not in row["platforms"]:
                row["platforms"].append(str(img.platform))
    cfgs = [img.config for img in images_of(target)]
    c = outcomes[cfgs[0].digest]
    config = {"digest": cfgs[0].digest, "size": cfgs[0].size, "uploaded": c.uploaded, "mounted": c.mounted}
    return tuple(rows.values()), config


def referrers_tag(subject_digest: str) -> str:
    """OCI 1.1's fallback tag for a subject's referrers index: sha256:abc -> sha256-abc."""
    return subject_digest.replace(":", "-")


def artifact_tag(subject_digest: str, artifact_type: str) -> str:
    """A plain tag for the artifact itself (cosign's convention): sha256-<hex>.sbom."""
    t = artifact_type.lower()
    if any(s in t for s in ("spdx", "cyclonedx", "sbom")):
        suffix = "sbom"
    elif "sig" in t:
        suffix = "sig"
    else:
        suffix = "att"
    return f"{referrers_tag(subject_digest)}.{suffix}"


def artifact_manifest(subject: dict, artifact_type: str, blob: Blob, annotations: dict | None = None) -> bytes:
    """An OCI 1.1 artifact manifest: empty config, the blob as its one layer, and ``subject``
    naming the image it describes (pure)."""
    m: dict = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": EMPTY_CONFIG.descriptor() | {"data": "e30="},
        "layers": [blob.descriptor()],
        "subject": {"mediaType": subject["mediaType"], "digest": subject["digest"], "size": subject["size"]},
    }
    if annotations:
        m["annotations"] = dict(sorted(annotations.items()))
    return canonical_json(m)


def add_referrer(index: dict | None, descriptor: dict) -> dict | None:
    """The referrers-tag index with ``descriptor`` in it; None if it is there already (pure)."""
    doc = index if index and isinstance(index.get("manifests"), list) else {
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    if any(m.get("digest") == descriptor["digest"] for m in doc["manifests"]):
        return None
    return {**doc, "manifests": [*doc["manifests"], descriptor]}


# --- where blob bytes come from -------------------------------------------------------------

class SourceClients:
    """Registry clients for the registries base layers live in, made on first use with the
    credentials ``image.auth`` names. Callable: ``source_clients("127.0.0.1:5000")``."""

    def __init__(self, mode: str = "auto", progress: Progress | None = None, **client_kw):
        self.mode = mode
        self.progress = progress or NULL
        self.client_kw = client_kw
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def __call__(self, registry: str) -> RegistryClient:
        with self._lock:
            if registry not in self._clients:
                self._clients[registry] = RegistryClient(registry, auth=auth_for(registry, self.mode),
                                                         progress=self.progress, **self.client_kw)
            return self._clients[registry]

    def close(self) -> None:
        for c in self._clients.values():
            c.close()


@contextmanager
def _local_chunks(blob: Blob):
    yield blob.chunks()


def open_blob(blob: Blob, source_clients: Callable[[str], RegistryClient],
              near: RegistryClient | None = None) -> ContextManager[Iterable[bytes]]:
    """The bytes of a blob: local content if any, else streamed from ``blob.source``."""
    if blob.local:
        return _local_chunks(blob)
    src = split_source(blob.source)
    if src is None:
        raise BuildError(f"blob {blob.digest} has no local content and no source registry",
                         "the builder must keep the base image's registry in each base layer's source")
    registry, repo = src
    client = near if near is not None and near.registry == registry else source_clients(registry)
    return client.open_blob(repo, blob.digest)


@dataclass(frozen=True)
class BlobOutcome:
    status: str  # "exists" | "mounted" | "uploaded" | "written"
    sent: int = 0
    source: str | None = None

    @property
    def uploaded(self) -> bool:
        return self.status in ("uploaded", "written")

    @property
    def mounted(self) -> bool:
        return self.status == "mounted"


def report_blob(progress: Progress, blob: Blob, outcome: BlobOutcome) -> None:
    what = {"exists": "already there", "mounted": f"mounted from {outcome.source}",
            "uploaded": f"uploaded ({human_bytes(outcome.sent)} sent)",
            "written": f"written ({human_bytes(outcome.sent)})"}[outcome.status]
    progress.info(f"{blob.digest[7:19]}  {human_bytes(blob.size):>9}  {what}")


# --- the registry publisher -----------------------------------------------------------------

class RegistryPublisher:
    """Publish to ``client``'s registry under ``repository``.

    ``source_clients(registry) -> RegistryClient`` gives clients for other registries that
    base layers are streamed from (default: made on demand with ``image.auth``'s credentials).
    ``chunk_size``: upload blobs larger than this in chunks (None: one PUT per blob). ECR,
    like S3 under it, wants every chunk but the last to be at least 5 MiB.
    """

    def __init__(self, client: RegistryClient, repository: str, *,
                 source_clients: Callable[[str], RegistryClient] | None = None,
                 progress: Progress | None = None, jobs: int = 4, chunk_size: int | None = None):
        self.client = client
        self.repository = check_repository(repository)
        self.progress = progress or client.progress
        self.source_clients = source_clients or SourceClients(progress=self.progress)
        self.jobs = max(1, jobs)
        self.chunk_size = chunk_size

    @property
    def name(self) -> str:
        return f"{self.client.registry}/{self.repository}"

    def push_blob(self, blob: Blob) -> BlobOutcome:
        c, repo = self.client, self.repository
        if c.blob_exists(repo, blob.digest):
            return BlobOutcome("exists")
        src = split_source(blob.source)
        if src and src[0] == c.registry and src[1] != repo:
            if c.mount_blob(repo, blob.digest, src[1]):
                return BlobOutcome("mounted", source=src[1])
        if blob.size >= BIG_BLOB:  # say what is in flight, not only what finished
            self.progress.info(f"{blob.digest[7:19]}  {human_bytes(blob.size):>9}  uploading"
                               + ("" if blob.local else f" from {blob.source}"))
        if blob.local:
            return BlobOutcome("uploaded", c.upload_blob(repo, blob, self.chunk_size))
        sent = c.upload_stream(repo, blob.digest, blob.size,
                               lambda: open_blob(blob, self.source_clients, near=c), self.chunk_size)
        return BlobOutcome("uploaded", sent, source=blob.source)

    def push_blobs(self, blobs: list[Blob]) -> dict[str, BlobOutcome]:
        """All blobs, in parallel; the first failure stops the rest and is raised."""
        outcomes: dict[str, BlobOutcome] = {}

        def one(b: Blob) -> None:
            o = self.push_blob(b)
            outcomes[b.digest] = o
            report_blob(self.progress, b, o)

        if self.jobs == 1 or len(blobs) <= 1:
            for b in blobs:
                one(b)
            return outcomes
        with ThreadPoolExecutor(max_workers=min(self.jobs, len(blobs)), thread_name_prefix="ferry-push") as pool:
            futures = [pool.submit(one, b) for b in blobs]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for f in pending:
                f.cancel()
            for f in futures:
                if f.done() and not f.cancelled() and f.exception() is not None:
                    raise f.exception()
        return outcomes

    def _put_manifest_once(self, ref: str, data: bytes, media_type: str, new: bool = False) -> bool:
        """PUT unless the registry already has exactly this under ``ref``; True if PUT.
        ``new``: the caller knows it cannot be there yet (no need to ask first)."""
        if not new:
            info = self.client.manifest_info(self.repository, ref)
            if info is not None and info.digest == sha256(data):
                return False
        self.client.put_manifest(self.repository, ref, data, media_type)
        return True

    def publish(self, image: Image | ImageIndex, tags: list[str] | tuple[str, ...] = (),
                extra_blobs: list[Blob] | tuple[Blob, ...] = ()) -> PublishResult:
        """Push ``image`` and tag it. ``extra_blobs`` (e.g. an SBOM about to be attached) go up
        in the same parallel batch as the image's blobs."""
        tags = check_tags(tags)
        blobs = unique_blobs(image)
        total = sum(b.size for b in blobs)
        self.progress.step(f"push {self.name}: {len(blobs)} blobs, {human_bytes(total)}")
        seen = {b.digest for b in blobs}
        outcomes = self.push_blobs(blobs + [b for b in extra_blobs if b.digest not in seen])
        extra = {b.digest for b in extra_blobs} - seen
        outcomes_image = {d: o for d, o in outcomes.items() if d not in extra}
        # a manifest cannot be in this repository if one of the config blobs it names was not:
        # then there is nothing to ask before each PUT (one request less per manifest and tag)
        new = any(outcomes[img.config.digest].status != "exists" for img in images_of(image))
        # manifests only once every blob they name is there: a registry may refuse otherwise,
        # and an interrupted push must never leave a tag pointing at something incomplete
        for img in images_of(image) if isinstance(image, ImageIndex) else ():
            self._put_manifest_once(img.digest, img.manifest_bytes, img.media_type, new)
        if not tags:  # a PUT by tag stores the manifest under its digest too: one PUT, not two
            self._put_manifest_once(image.digest, image.manifest_bytes, image.media_type, new)
        for t in tags:
            if self._put_manifest_once(t, image.manifest_bytes, image.media_type, new):
                self.progress.info(f"tagged {self.name}:{t}")
            else:
                self.progress.info(f"{self.name}:{t} already points at {image.digest[:19]}")
        layers, config = layer_report(image, outcomes_image)
        sent = sum(o.sent for o in outcomes_image.values())
        ref = f"{self.name}@{image.digest}"
        self.progress.step(f"pushed {ref} ({human_bytes(sent)} uploaded)")
        return PublishResult(reference=ref, digest=image.digest, layers=layers, bytes_uploaded=sent,
                             tags=tags, media_type=image.media_type, target="registry", config=config,
                             manifest_size=len(image.manifest_bytes), created=new)

    def attach(self, subject_digest: str, artifact_type: str, blob: Blob, *,
               annotations: dict[str, str] | None = None, published: PublishResult | None = None,
               ) -> AttachResult:
        """Push ``blob`` as an artifact about the image ``subject_digest`` (already pushed to
        this repository): an OCI 1.1 manifest with ``subject`` and ``artifactType``. Where
        the registry has no referrers API (distribution 2.8), also keep the OCI tag-scheme
        index ``sha256-<hex>`` and tag the artifact ``sha256-<hex>.sbom``.

        ``published``: this publisher's own push of the subject, made with ``blob`` (and the
        empty config) among its ``extra_blobs``: the subject's descriptor is known and the
        blobs are there, so only manifests remain to be sent."""
        c, repo = self.client, self.repository
        fresh = False
        if published is not None and published.digest == subject_digest and published.manifest_size:
            subject = {"mediaType": published.media_type, "digest": subject_digest, "size": published.manifest_size}
            outcomes: dict[str, BlobOutcome] = {}
            fresh = published.created  # a new image has no artifacts or tags about it yet
        else:
            info = c.manifest_info(repo, subject_digest)
            if info is None:
                raise RegistryError(f"cannot attach {artifact_type} to {self.name}@{subject_digest}: no such image there",
                                    "publish the image to this repository first")
            subject = {"mediaType": info.media_type, "digest": info.digest, "size": info.size}
            outcomes = self.push_blobs([blob, EMPTY_CONFIG])
        data = artifact_manifest(subject, artifact_type, blob, annotations)
        digest = sha256(data)
        # one PUT, by cosign's tag: the registry stores it under its digest as well, and a
        # distribution-spec 1.1 registry with the referrers API MUST answer a manifest with a
        # subject with OCI-Subject, so that header alone says whether the index below is needed
        tag = artifact_tag(subject_digest, artifact_type)
        resp = c.put_manifest_response(repo, tag, data, OCI_MANIFEST)
        echoed = resp.headers.get("docker-content-digest")
        if echoed and echoed != digest:
            raise RegistryError(f"registry stored artifact manifest {echoed} for {digest} in {repo}",
                                "the registry rewrote the manifest; it may not support OCI artifacts")
        api = resp.headers.get("oci-subject") == subject_digest
        tags: list[str] = [tag]
        if not api:
            rtag = referrers_tag(subject_digest)
            existing = None
            if not fresh and c.manifest_info(repo, rtag) is not None:  # a new subject has no index yet
                body, mtype, _ = c.get_manifest(repo, rtag)
                existing = json.loads(body) if mtype == OCI_INDEX else None
            desc = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(data), "artifactType": artifact_type}
            if annotations:
                desc["annotations"] = dict(sorted(annotations.items()))
            updated = add_referrer(existing, desc)
            if updated is not None:
                c.put_manifest(repo, rtag, canonical_json(updated), OCI_INDEX)
            tags.append(rtag)
        ref = f"{self.name}@{digest}"
        self.progress.info(f"attached {artifact_type} {digest[:19]} to {subject_digest[:19]}"
                           + ("" if api else f" (tags {', '.join(tags)})"))
        return AttachResult(reference=ref, digest=digest, subject=subject_digest, artifact_type=artifact_type,
                            tags=tuple(tags), referrers_api=api, bytes_uploaded=sum(o.sent for o in outcomes.values()))

    def referrers(self, subject_digest: str, artifact_type: str | None = None) -> list[dict]:
        """Descriptors of artifacts attached to ``subject_digest``, by the API or the tag scheme."""
        c, repo = self.client, self.repository
        found = c.referrers(repo, subject_digest, artifact_type)
        if found is not None:
            return found
        rtag = referrers_tag(subject_digest)
        if c.manifest_info(repo, rtag) is None:
            return []
        body, _, _ = c.get_manifest(repo, rtag)
        out = json.loads(body).get("manifests") or []
        return [m for m in out if artifact_type is None or m.get("artifactType") == artifact_type]

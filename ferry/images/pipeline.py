"""Build, then publish: what ``ferry build`` and ``ferry release`` run.

Wires the builder to the registry (the base image, and the previous image under the target
tag for "the registry as the cache") and hands the result to one publisher. The builder never
knows where the image goes; this module is the only place that does.

``build_and_publish(cfg, target="registry", ...)`` returns the JSON document ``ferry build
--json`` prints: ``image`` (REPO@sha256:...), ``digest``, ``layers`` (digest, size, uploaded,
role), ``bytes_uploaded``, and the SBOM, dependency keys and warnings.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

# httpx imports its own command line (rich, pygments) when they are installed: 0.1-0.2 s on every
# `ferry build`, for a CLI ferry never uses. Marking that module absent makes httpx skip it.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[assignment]

from ..errors import BuildError, ConfigError, RegistryError
from ..progress import NULL, Progress, human_bytes
from . import sbom as sbom_mod
from .basefacts import missing_local_base
from .builder import TOOL, BuildResult, BuildSpec, build
from .cache import Cache
from .oci import Blob, Image, Platform, Reference

TARGETS = ("none", "registry", "docker", "tar", "oci")


def target_reference(cfg) -> Reference:
    ref = Reference.parse(cfg.image.repository)
    if ref.tag or ref.digest:
        raise ConfigError(f"image.repository: {cfg.image.repository!r} must not carry a tag or digest",
                          "write the repository alone (e.g. 127.0.0.1:5000/hello) and pass --tag")
    return ref


def _previous_fetcher(client, ref: Reference, tags: list[str]):
    """The image under the first of ``tags`` that exists in the target repository (the tags
    being pushed, then ``latest``), or None when there is none yet."""
    from .remote import resolve_image

    def fetch(platform: Platform) -> Image | None:
        for tag in tags:
            try:
                return resolve_image(client, ref.with_tag(tag), platform).image
            except RegistryError as e:
                if e.status != 404:
                    raise
            except BuildError:
                return None  # the previous image lacks this platform: nothing to reuse
        return None
    return fetch


def _docker_client(cfg, environ):
    import docker

    host = environ.get("DOCKER_HOST") or cfg.deploy.docker_host
    try:
        client = docker.DockerClient(base_url=host) if host else docker.from_env()
        client.ping()
    except Exception as e:  # the SDK raises several unrelated types for "no daemon"
        raise BuildError(f"cannot reach the Docker daemon{f' at {host}' if host else ''}: {e}",
                         "start it, or point DOCKER_HOST (or deploy.docker_host) at its socket") from None
    return client


def sbom_bytes(doc: dict) -> bytes:
    # compact: the attached artifact is uploaded with every new image digest
    return (json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def build_and_publish(cfg, *, target: str = "none", path: str | os.PathLike | None = None,
                      tags: list[str] | tuple[str, ...] = (), platforms: list[str] | None = None,
                      sbom_path: str | os.PathLike | None = None, sbom_format: str = "spdx",
                      version: str | None = None, progress: Progress = NULL, cache: Cache | None = None,
                      environ: dict[str, str] | None = None, attach_sbom: bool = True) -> dict:
    from .publish import SourceClients

    if target not in TARGETS:
        raise BuildError(f"unknown build target {target!r}", f"use one of {', '.join(TARGETS)}")
    if sbom_format not in sbom_mod.FORMATS:
        raise BuildError(f"SBOM format {sbom_format!r} is not known", "use spdx or cyclonedx")
    env = dict(os.environ if environ is None else environ)
    tags = tuple(tags) or ("latest",)
    repo = target_reference(cfg)
    spec = BuildSpec.from_config(cfg, platforms, version, env)
    base_ref = Reference.parse(spec.base)
    if target in ("docker", "tar") and len(spec.platforms) > 1:
        raise BuildError(f"--to-{target} takes one platform, image.platforms has {len(spec.platforms)}",
                         "pass --platform linux/amd64 (or push the index with --push / --to-oci)")

    sources = SourceClients(mode=cfg.image.auth, progress=progress)
    base_client = target_client = None
    try:
        from .registry import RegistryClient
        from .auth import auth_for
        from .remote import resolve_image

        def client(registry: str, insecure: bool | None = None):
            plain = insecure if insecure is not None else Reference(registry, "_").insecure
            # plain HTTP has no TLS to verify: skipping the CA bundle saves ~45 ms per client
            return RegistryClient(registry, auth=auth_for(registry, cfg.image.auth), insecure=insecure,
                                  progress=progress, **({"verify": False} if plain else {}))

        target_insecure = True if cfg.image.insecure else None
        if target == "registry" and base_ref.registry == repo.registry:
            base_client = target_client = client(repo.registry, target_insecure)
        else:
            base_client = client(base_ref.registry)
            target_client = client(repo.registry, target_insecure) if target == "registry" else None

        def fetch_base(platform: Platform):
            try:
                return resolve_image(base_client, base_ref, platform)
            except RegistryError as e:
                missing = missing_local_base(spec.base) if e.status == 404 else None
                if missing:
                    raise BuildError(*missing) from None
                raise

        candidates = list(dict.fromkeys([tags[0], "latest"]))
        fetch_previous = _previous_fetcher(target_client, repo, candidates) if target_client else None
        cache = cache or Cache()
        extra_clients: dict[str, object] = {}

        def client_for(registry: str):
            for c in (base_client, target_client):
                if c is not None and c.registry == registry:
                    return c
            if registry not in extra_clients:
                extra_clients[registry] = client(registry)
            return extra_clients[registry]

        try:
            result = build(spec, fetch_base=fetch_base, fetch_previous=fetch_previous, cache=cache,
                           progress=progress, environ=env,
                           fetch_blob=lambda blob: download_blob(blob, cache, client_for))
        finally:
            for c in extra_clients.values():
                c.close()

        name = repo.name
        doc = sbom_mod.document(sbom_format, name, result.packages(), spec.epoch, TOOL)
        data = sbom_bytes(doc)
        media_type = sbom_mod.FORMATS[sbom_format]
        out: dict = {}
        attach = None
        if target == "registry":
            from .publish import EMPTY_CONFIG, RegistryPublisher

            publisher = RegistryPublisher(target_client, repo.repository, source_clients=sources, progress=progress)
            sbom_blob = Blob.from_bytes(data, media_type)
            # the SBOM's blobs travel with the image's, in one parallel batch
            published = publisher.publish(result.image, list(tags),
                                          extra_blobs=[sbom_blob, EMPTY_CONFIG] if attach_sbom else [])
            out = published.to_json()
            roles = result.roles()
            cache.note_pushed([d for d, role in roles.items() if role != "base"], repo.name)
            if attach_sbom:
                # a new image cannot have an SBOM yet: only an unchanged one is worth asking about
                attach = _attach_sbom(publisher, published, sbom_blob, progress, check_first=not published.created)
        elif target == "tar":
            from .publish_local import TarPublisher

            plat = str(spec.platforms[0])
            out = TarPublisher(_need(path, "--to-tar"), name, platform=plat, source_clients=sources,
                               progress=progress).publish(result.image, list(tags)).to_json()
        elif target == "oci":
            from .publish_local import OCILayoutPublisher

            out = OCILayoutPublisher(_need(path, "--to-oci"), source_clients=sources,
                                     progress=progress).publish(result.image, list(tags)).to_json()
        elif target == "docker":
            from .publish_local import DockerPublisher

            out = DockerPublisher(_docker_client(cfg, env), name, platform=str(spec.platforms[0]),
                                  source_clients=sources, progress=progress).publish(result.image, list(tags)).to_json()
        else:
            out = _unpublished(result, name)
    finally:
        sources.close()
        for c in {id(c): c for c in (base_client, target_client) if c is not None}.values():
            c.close()

    if sbom_path:
        p = Path(sbom_path)
        if not p.parent.is_dir():
            raise BuildError(f"cannot write the SBOM to {p}: {p.parent} does not exist", "create the folder or pick another path")
        p.write_bytes(data)
        progress.info(f"SBOM ({sbom_format}, {len(result.packages())} distributions) written to {p}")
    return _report(out, result, spec, data, media_type, sbom_path, attach)


def download_blob(blob: Blob, cache: Cache, client_for) -> Path:
    """A layer known by descriptor (``blob.source`` names its repository), downloaded once into
    the local cache: the build step and a foreign base's dpkg status need the base's files."""
    if not blob.source or "/" not in blob.source:
        raise BuildError(f"layer {blob.digest[:19]} is neither cached here nor known in a registry",
                         "rebuild with an empty cache (FERRY_CACHE_DIR) so every layer is made again")
    registry, repository = blob.source.split("/", 1)
    dest = cache.blob_path(blob.digest)
    if dest.is_file() and dest.stat().st_size == blob.size:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with client_for(registry).open_blob(repository, blob.digest) as chunks, open(tmp, "wb") as f:
            for chunk in chunks:  # the digest is checked when the stream ends
                f.write(chunk)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _attach_sbom(publisher, published, blob: Blob, progress: Progress, check_first: bool = True) -> dict:
    """Attach the SBOM unless this image already has one: it is a pure function of the image,
    so a rebuild of an unchanged image sends nothing (and attaching twice is harmless)."""
    digest, media_type = published.digest, blob.media_type
    for desc in (publisher.referrers(digest, media_type) if check_first else ()):
        progress.info(f"SBOM already attached to {digest[:19]} ({desc.get('digest', '')[:19]})")
        return {"reference": f"{publisher.name}@{desc.get('digest')}", "digest": desc.get("digest"),
                "subject": digest, "artifact_type": media_type, "bytes_uploaded": 0, "already": True}
    return publisher.attach(digest, media_type, blob, published=published).to_json()


def _need(path, flag: str):
    if not path:
        raise BuildError(f"{flag} needs a path", f"e.g. {flag} ./out")
    return path


def _unpublished(result: BuildResult, name: str) -> dict:
    seen: dict[str, dict] = {}
    for b in result.builds:
        for layer in b.image.layers:
            seen.setdefault(layer.digest, {"digest": layer.digest, "size": layer.size, "uploaded": False})
    return {"image": f"{name}@{result.digest}", "reference": f"{name}@{result.digest}", "digest": result.digest,
            "media_type": result.image.media_type, "target": "none", "tags": [], "layers": list(seen.values()),
            "config": None, "bytes_uploaded": 0}


def _report(out: dict, result: BuildResult, spec: BuildSpec, sbom_data: bytes, media_type: str,
            sbom_path, attach: dict | None) -> dict:
    roles = result.roles()
    for layer in out.get("layers", []):
        layer["role"] = roles.get(layer["digest"], "base")
    out.setdefault("image", out.get("reference"))
    out["digest"] = out.get("digest") or result.digest
    out["platforms"] = [str(b.platform) for b in result.builds]
    out["deps"] = [{"platform": str(b.platform), "key": b.deps.key if b.deps else None, "origin": b.deps_origin,
                    "layer": b.deps.digest if b.deps else None} for b in result.builds]
    out["source"] = {"layer": result.builds[0].source_digest, "origin": result.builds[0].source_origin}
    out["steps"] = [{"platform": str(b.platform), "kind": layer.kind, "key": layer.key, "origin": layer.origin,
                     "layer": layer.digest} for b in result.builds for layer in b.layers]
    out["debian_packages"] = sorted({f"{p['name']}={p['version']}" for b in result.builds for layer in b.layers
                                     if layer.kind == "packages" for p in layer.meta.get("packages", [])})
    out["revision"] = spec.revision
    out["version"] = spec.version
    out["sbom"] = {"format": media_type, "digest": Blob.from_bytes(sbom_data, media_type).digest,
                   "path": str(sbom_path) if sbom_path else None,
                   "packages": len(result.packages()), "attached": attach}
    out["warnings"] = list(result.warnings)
    return out


def summary(doc: dict) -> str:
    """The human text of a build: the image and each layer's fate."""
    lines = [doc["image"]]
    for layer in doc.get("layers", []):
        if layer.get("role") == "base" and doc.get("target") == "none":
            fate = "from the base image"
        elif layer.get("uploaded"):
            fate = "uploaded"
        elif layer.get("mounted"):
            fate = "mounted"
        elif doc.get("target") == "none":
            fate = "built"
        else:
            fate = "already there"
        lines.append(f"  {layer.get('role', ''):6} {layer['digest'][:19]}  {human_bytes(layer['size']):>9}  {fate}")
    lines.append(f"  {human_bytes(doc.get('bytes_uploaded', 0))} uploaded")
    return "\n".join(lines)

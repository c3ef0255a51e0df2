"""Source to image, Jib-style: base layers + a dependency layer + a source layer + config.

Layers are ordered by how often they change, so a source edit rebuilds (and uploads) only the
last, small layer and a requirements change only the dependency layer:

    base image layers   never downloaded: publishers mount or HEAD-check them in the target
    /app/deps           wheels for the image's platform (deps.py), keyed by their inputs
    /app                the service's files (source.py), keyed by their content

The builder makes an in-memory ``Image`` (or an ``ImageIndex`` for several platforms) and
never knows where it goes; ``pipeline.py`` hands it to a publisher. What it needs from a
registry comes in as two functions: ``fetch_base(platform)`` and, for "the registry as the
cache", ``fetch_previous(platform)`` (the image currently under the target tag, or None).

Pure parts (``image_config``, ``annotations``, ``check_entrypoint``) are unit-tested exactly.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .. import __version__
from ..errors import BuildError
from ..progress import NULL, Progress, human_bytes
from . import deps as deps_mod
from .cache import Cache, CachedLayer
from .deps import DEFAULT_MANYLINUX, DEFAULT_SHEBANG, DEPS_DIR, DepsSpec, Distribution, Requirements
from .layers import GZIP_LEVEL, content_key, epoch as default_epoch, write_layer
from .project import ProjectInstall, entries_for_all
from .oci import (DOCKER_LAYER_GZIP, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Blob, Image, ImageIndex,
                  Platform, canonical_json, sha256)
from .source import SourceLayer, collect

TOOL = f"ferry-{__version__}"
SOURCE_RECIPE = "1"

LABEL_DEPS_KEY = "dev.ferry.deps.key"
LABEL_DEPS_LAYER = "dev.ferry.deps.layer"
LABEL_DEPS_INVENTORY = "dev.ferry.deps.inventory"
LABEL_HEALTH_PATH = "dev.ferry.health.path"
LABEL_PORT = "dev.ferry.port"
OCI_REVISION = "org.opencontainers.image.revision"
OCI_VERSION = "org.opencontainers.image.version"
OCI_TITLE = "org.opencontainers.image.title"
OCI_CREATED = "org.opencontainers.image.created"
OCI_BASE_NAME = "org.opencontainers.image.base.name"
OCI_BASE_DIGEST = "org.opencontainers.image.base.digest"

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PYTHONS = ("python", "python3")


@dataclass(frozen=True)
class BuildSpec:
    """Everything that decides the image, read from ferry.toml (and git) once."""

    app: str
    repository: str
    base: str
    source: Path
    entrypoint: tuple[str, ...]
    requirements: Path | None = None
    port: int = 8000
    python: str = "3.11"
    workdir: str = "/app"
    user: str = "65532:65532"
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    platforms: tuple[Platform, ...] = (Platform(),)
    health_path: str | None = "/healthz"
    version: str | None = None
    revision: str | None = None
    epoch: int = 1
    manylinux: str = DEFAULT_MANYLINUX
    shebang: str = ""  # the image's Python for console scripts; empty: from the base (see interpreter())
    package: str | None = None  # image.package: the uv workspace member that is the app

    @classmethod
    def from_config(cls, cfg, platforms: list[str] | None = None, version: str | None = None,
                    environ: dict[str, str] | None = None) -> "BuildSpec":
        i = cfg.image
        source = cfg.resolve(i.source)
        plats = tuple(Platform.parse(p) for p in (platforms or i.platforms))
        for p in plats:
            if p.os != "linux" or p.architecture not in ("amd64", "arm64"):
                raise BuildError(f"platform {p} is not supported", 'use linux/amd64 and/or linux/arm64')
        rev = git_revision(source)
        return cls(
            app=cfg.app.name,
            repository=i.repository,
            base=i.base,
            source=source,
            entrypoint=tuple(i.entrypoint),
            requirements=cfg.resolve(i.requirements) if i.requirements else None,
            port=i.port,
            python=i.python,
            workdir="/" + i.workdir.strip("/"),
            user=i.user,
            env=dict(i.env),
            labels=dict(i.labels),
            exclude=tuple(i.exclude),
            platforms=plats,
            health_path=cfg.deploy.health.path,
            version=version or git_version(source),
            revision=rev,
            epoch=default_epoch(environ),
            manylinux=_manylinux(i.manylinux),
            shebang=i.interpreter.strip().removeprefix("#!").strip(),
            package=i.package,
        )


def _manylinux(tag: str) -> str:
    import re

    if not re.match(r"^(manylinux_2_\d+|manylinux2014)$", tag):
        from ..errors import ConfigError

        raise ConfigError(f"image.manylinux: {tag!r} is not a manylinux tag",
                          'use manylinux_2_N with N at most the base image\'s glibc minor version, e.g. "manylinux_2_28"')
    return "manylinux_2_17" if tag == "manylinux2014" else tag


LABEL_PYTHON = "dev.ferry.python"
FERRY_BASE_LABEL = "dev.ferry.base.recipe"


def interpreter(spec_shebang: str, base_config: dict) -> str:
    """The interpreter console scripts start with. ferry.toml wins; then the base image's
    ``dev.ferry.python`` label; ferry's own Debian base has no /usr/bin/env but has
    /usr/bin/python3; any other base (e.g. python:3.11-slim) has /usr/bin/env."""
    if spec_shebang:
        return spec_shebang
    labels = (base_config.get("config") or {}).get("Labels") or {}
    if labels.get(LABEL_PYTHON):
        return labels[LABEL_PYTHON]
    if FERRY_BASE_LABEL in labels:
        return "/usr/bin/python3"
    return DEFAULT_SHEBANG


def _git(source: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def git_revision(source: Path) -> str | None:
    """HEAD's commit, with ``-dirty`` when the source folder has uncommitted changes (the
    label must not claim a commit the image's files do not match)."""
    rev = _git(source, "rev-parse", "HEAD")
    if rev and _git(source, "status", "--porcelain", "--untracked-files=no", "--", "."):
        rev += "-dirty"
    return rev


def git_version(source: Path) -> str | None:
    return _git(source, "describe", "--tags", "--always", "--dirty")


# --- pure: config, annotations, entrypoint check -------------------------------------------------

def timestamp(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _env_dict(env_list) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env_list or []:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def annotations(spec: BuildSpec, base_digest: str | None = None) -> dict[str, str]:
    """OCI annotations for the manifest (and the config's labels)."""
    a = {OCI_TITLE: spec.app, OCI_CREATED: timestamp(spec.epoch), OCI_BASE_NAME: spec.base}
    if base_digest:
        a[OCI_BASE_DIGEST] = base_digest
    if spec.revision:
        a[OCI_REVISION] = spec.revision
    if spec.version:
        a[OCI_VERSION] = spec.version
    return a


@dataclass(frozen=True)
class DepsInfo:
    """What the image records about its dependency layer (and reads back on a fresh machine)."""

    key: str
    digest: str
    diff_id: str
    size: int
    packages: tuple[Distribution, ...] = ()
    scripts: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()

    def inventory_json(self) -> str:
        # the whole metadata, so an SBOM made on a fresh machine from this label is byte-identical
        # to one made where the dependency layer was built
        return json.dumps({"packages": [d.to_json() for d in self.packages],
                           "scripts": list(self.scripts), "modules": list(self.modules)},
                          separators=(",", ":"), sort_keys=True)

    @staticmethod
    def parse_inventory(text: str) -> tuple[tuple[Distribution, ...], tuple[str, ...], tuple[str, ...]]:
        doc = json.loads(text)
        pk = tuple(Distribution.from_json(d) for d in doc.get("packages", []))
        return pk, tuple(doc.get("scripts", [])), tuple(doc.get("modules", []))


def image_config(base_config: dict, spec: BuildSpec, platform: Platform, diff_ids: list[str],
                 deps: DepsInfo | None, base_digest: str | None = None,
                 project: ProjectInstall | None = None) -> dict:
    """The image config: the base's, with ferry's layers, environment, entrypoint and labels.

    Nothing about the build machine goes in: the time is the fixed epoch, no hostname, no
    container id, no builder version (upgrading ferry must not change an image's digest
    unless its bytes change)."""
    bc = base_config.get("config") or {}
    env = _env_dict(bc.get("Env"))
    path = env.get("PATH", DEFAULT_PATH)
    pythonpath = [spec.workdir, *(project.pythonpath if project else ())]
    if deps is not None or project is not None:  # the app's own dist-info and scripts live there too
        dep_dir = "/" + DEPS_DIR
        if not path.startswith(dep_dir + "/bin:"):
            path = f"{dep_dir}/bin:{path}"
        pythonpath.append(dep_dir)
    env["PATH"] = path
    env["PYTHONPATH"] = ":".join(pythonpath + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"  # logs reach `docker logs` as they happen
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the app runs as a user who cannot write /app
    env["PORT"] = str(spec.port)
    env.update(spec.env)

    # the base's org.opencontainers.image.* labels describe the base (its title, its version):
    # carried over they would misdescribe the app
    labels = {k: v for k, v in (bc.get("Labels") or {}).items() if not k.startswith("org.opencontainers.image.")}
    labels.update(annotations(spec, base_digest))
    labels[LABEL_PORT] = str(spec.port)
    if spec.health_path:
        labels[LABEL_HEALTH_PATH] = spec.health_path
    labels.update(spec.labels)
    if deps is not None:  # ferry's own bookkeeping wins over a user label of the same name
        labels[LABEL_DEPS_KEY] = deps.key
        labels[LABEL_DEPS_LAYER] = deps.digest
        labels[LABEL_DEPS_INVENTORY] = deps.inventory_json()

    config: dict = {k: v for k, v in bc.items() if k not in ("Cmd", "Entrypoint", "Env", "Labels", "User",
                                                             "WorkingDir", "ExposedPorts", "Healthcheck",
                                                             "Hostname", "Domainname", "Image")}
    ports = dict(bc.get("ExposedPorts") or {})
    ports[f"{spec.port}/tcp"] = {}
    config.update({
        "Entrypoint": list(spec.entrypoint),
        "Env": [f"{k}={v}" for k, v in env.items()],
        "ExposedPorts": ports,
        "Labels": labels,
        "User": spec.user,
        "WorkingDir": spec.workdir,
    })

    created = timestamp(spec.epoch)
    base_diff_ids = list((base_config.get("rootfs") or {}).get("diff_ids") or [])
    history = list(base_config.get("history") or [])
    if sum(1 for h in history if not h.get("empty_layer")) != len(base_diff_ids):
        # a base without (consistent) history: describe its layers so counts line up
        history = [{"created": created, "created_by": "base image layer"} for _ in base_diff_ids]
    if deps is not None:
        history.append({"created": created, "created_by": f"ferry: dependencies ({DEPS_DIR}, key {deps.key[:12]})",
                        "comment": "ferry"})
    history.append({"created": created, "created_by": f"ferry: source ({spec.workdir})", "comment": "ferry"})

    out = {
        "architecture": platform.architecture,
        "os": platform.os,
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": history,
    }
    if platform.variant:
        out["variant"] = platform.variant
    return out


def _module_in(files: set[str], module: str) -> str | None:
    """'found', 'package-without-main' or None for a dotted module among relative paths."""
    rel = module.replace(".", "/")
    if f"{rel}.py" in files or any(f.startswith(f"{rel}.") and f.endswith(".so") for f in files):
        return "module"
    if any(f.startswith(rel + "/") for f in files):
        return "package"
    return None


def check_entrypoint(entrypoint: tuple[str, ...], source_files: set[str], workdir: str,
                     deps_scripts: tuple[str, ...] | None, deps_modules: tuple[str, ...] | None,
                     source: Path | str = "the source folder") -> None:
    """Fail before anything is pushed when the entrypoint names a module, script or file the
    image will not have. ``source_files`` are paths relative to the source folder; ``None``
    for deps means "unknown" (then only the source side is checked)."""
    if not entrypoint:
        raise BuildError("image.entrypoint is empty", 'set e.g. entrypoint = ["python3", "-m", "myservice"]')
    argv = list(entrypoint)
    prog = argv[0].rsplit("/", 1)[-1]
    stdlib = set(getattr(sys, "stdlib_module_names", ()))
    dep_mods = set(deps_modules or ())

    def module_ok(module: str, run_as_main: bool) -> None:
        top = module.split(".")[0]
        kind = _module_in(source_files, module)
        if kind == "package" and run_as_main and f"{module.replace('.', '/')}/__main__.py" not in source_files:
            raise BuildError(f"image.entrypoint runs `python -m {module}`, but {module} is a package without __main__.py in {source}",
                             f"add {module.replace('.', '/')}/__main__.py, or name the module to run")
        if kind or top in stdlib:
            return
        if top in dep_mods or deps_modules is None:
            return
        raise BuildError(f"image.entrypoint needs the module {module!r}, but neither {source} "
                         f"(no {module.replace('.', '/')}.py or {module.replace('.', '/')}/) nor the dependencies provide it",
                         "create the module, fix image.entrypoint in ferry.toml, or add the package that provides it to the requirements")

    def app_specs(args: list[str]) -> None:
        # WSGI/ASGI servers take "module:attr"; check the module exists (the attr is the app's business)
        skip_next = False
        for a in args:
            if skip_next:
                skip_next = False
                continue
            if a.startswith("-"):
                if "=" not in a and a in ("-b", "--bind", "-c", "--config", "-w", "--workers", "-k", "--worker-class",
                                          "--host", "--port", "--chdir", "--log-level", "--threads", "-t", "--timeout"):
                    skip_next = True
                continue
            if ":" in a and a.split(":", 1)[0].replace(".", "").replace("_", "").isalnum() \
                    and not a.split(":", 1)[0][:1].isdigit():
                module_ok(a.split(":", 1)[0], run_as_main=False)

    if prog in _PYTHONS or (prog.startswith("python3.") and prog[8:].isdigit()):
        rest = argv[1:]
        while rest and rest[0].startswith("-") and rest[0] not in ("-m", "-c"):
            rest = rest[1:]  # interpreter flags like -u, -X dev
        if not rest or rest[0] == "-c":
            return
        if rest[0] == "-m":
            if len(rest) < 2:
                raise BuildError("image.entrypoint has `-m` without a module", 'e.g. entrypoint = ["python3", "-m", "myservice"]')
            module_ok(rest[1], run_as_main=True)
            if rest[1] in ("gunicorn", "uvicorn", "hypercorn", "waitress"):
                app_specs(rest[2:])
            return
        script = rest[0]
        rel = script[len(workdir) + 1:] if script.startswith(workdir + "/") else script
        if not rel.startswith("/") and rel not in source_files:
            raise BuildError(f"image.entrypoint runs {script}, which is not in {source}",
                             "fix the path (relative to the source folder) in image.entrypoint")
        return
    if prog in ("gunicorn", "uvicorn", "hypercorn", "waitress-serve"):
        if deps_scripts is not None and prog not in deps_scripts and not argv[0].startswith("/"):
            raise BuildError(f"image.entrypoint runs {prog}, but no dependency installs it",
                             f"add {prog} to the requirements")
        app_specs(argv[1:])
        return
    if argv[0].startswith(workdir + "/"):
        rel = argv[0][len(workdir) + 1:]
        if rel not in source_files:
            raise BuildError(f"image.entrypoint runs {argv[0]}, which is not in {source}",
                             "fix the path in image.entrypoint")


# --- the runner ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlatformBuild:
    platform: Platform
    image: Image
    base_layers: int
    deps: DepsInfo | None
    deps_origin: str | None  # "cache" | "registry" | "built"
    source_digest: str
    source_origin: str  # "cache" | "built"


@dataclass(frozen=True)
class BuildResult:
    image: Image | ImageIndex
    builds: tuple[PlatformBuild, ...]
    warnings: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        return self.image.digest

    def packages(self) -> tuple[Distribution, ...]:
        seen: dict[tuple[str, str], Distribution] = {}
        for b in self.builds:
            for d in (b.deps.packages if b.deps else ()):
                seen.setdefault((d.name, d.version), d)
        return tuple(sorted(seen.values(), key=lambda d: d.name.lower()))

    def roles(self) -> dict[str, str]:
        """layer digest -> "base" | "deps" | "source"."""
        out: dict[str, str] = {}
        for b in self.builds:
            for i, layer in enumerate(b.image.layers):
                out.setdefault(layer.digest, "base" if i < b.base_layers else
                               ("deps" if b.deps and layer.digest == b.deps.digest else "source"))
        return out


def _as_oci_layer(blob: Blob) -> Blob:
    # Docker's gzip layer type is the same bytes; an OCI manifest should name OCI types.
    if blob.media_type == DOCKER_LAYER_GZIP:
        return dataclasses.replace(blob, media_type=OCI_LAYER_GZIP)
    return blob


def _dependency_files(spec: BuildSpec, req: Requirements | None) -> tuple[str, ...]:
    """The requirements (and uv.lock) inside the source folder are the dependency layer's
    input, not the app's: left out of the source layer, a dependency change touches only the
    dependency layer (as Jib leaves pom.xml out)."""
    if req is None:
        return ()
    files = req.inputs
    out = []
    for f in files:
        try:
            rel = f.resolve().relative_to(spec.source.resolve()).as_posix()
        except ValueError:
            continue
        out.append("/" + rel)  # anchored: only that file, not every file with its name
    return tuple(out)


def _mountable(blob: Blob, cache: Cache, repository: str) -> Blob:
    """A cached layer that was pushed to another repository of the target registry names it
    as its source, so the publisher mounts it there instead of uploading it again."""
    if blob.source:
        return blob
    where = cache.pushed_to(blob.digest, repository.split("/", 1)[0])
    return dataclasses.replace(blob, source=where) if where and where != repository else blob


def _source_key(src: SourceLayer, spec: BuildSpec) -> str:
    return sha256(canonical_json({"recipe": SOURCE_RECIPE, "content": src.key, "mtime": spec.epoch,
                                  "gzip": GZIP_LEVEL}))[7:]


def _source_layer(src: SourceLayer, spec: BuildSpec, cache: Cache, progress: Progress) -> tuple[CachedLayer, str]:
    key = _source_key(src, spec)
    hit = cache.get("source", key)
    if hit:
        progress.info(f"source layer: unchanged, from the local cache ({hit.digest[7:19]}, {human_bytes(hit.size)})")
        return hit, "cache"
    work = cache.tmpdir("source-")
    try:
        lf = write_layer(src.entries, work / "layer.tar.gz", spec.epoch)
        stored = cache.put("source", key, lf.path, lf.digest, lf.diff_id, lf.size)
    except OSError as e:
        raise BuildError(f"could not archive the source folder {spec.source}: {e}",
                         "a file changed or vanished while ferry read it; rerun the build") from None
    finally:
        cache.discard(work)
    progress.info(f"source layer: built {stored.digest[7:19]} ({human_bytes(stored.size)}, {len(src.files)} files)")
    return stored, "built"


def _deps_from_cache(hit: CachedLayer, key: str) -> DepsInfo:
    e = hit.extra
    return DepsInfo(key, hit.digest, hit.diff_id, hit.size,
                    tuple(Distribution.from_json(d) for d in e.get("packages", [])),
                    tuple(e.get("scripts", [])), tuple(e.get("modules", [])))


def deps_from_previous(previous: Image | None, key: str) -> tuple[DepsInfo, Blob] | None:
    """The registry as the cache: reuse the previous image's dependency layer when its
    recorded key matches, knowing it only by digest (nothing is resolved or downloaded)."""
    if previous is None:
        return None
    try:
        cfg = previous.config_json()
    except (LookupError, ValueError):
        return None
    labels = (cfg.get("config") or {}).get("Labels") or {}
    if labels.get(LABEL_DEPS_KEY) != key:
        return None
    digest = labels.get(LABEL_DEPS_LAYER)
    digests = [layer.digest for layer in previous.layers]
    diff_ids = (cfg.get("rootfs") or {}).get("diff_ids") or []
    if digest not in digests or len(diff_ids) != len(digests):
        return None
    i = digests.index(digest)
    try:
        packages, scripts, modules = DepsInfo.parse_inventory(labels.get(LABEL_DEPS_INVENTORY, "{}"))
    except (ValueError, TypeError):
        return None
    prev = previous.layers[i]
    # known by digest only: the publisher finds it in the target repository (HEAD) or mounts it
    layer = Blob(digest, prev.size, OCI_LAYER_GZIP, source=prev.source)
    info = DepsInfo(key, digest, diff_ids[i], prev.size, packages, scripts, modules)
    return info, layer


def _build_deps(dspec: DepsSpec, key: str, cache: Cache, progress: Progress, environ) -> CachedLayer:
    work = cache.tmpdir("deps-")
    try:
        target = work / "site"
        installer = deps_mod.install(dspec, target, work, cache.uv_dir, environ)
        if not target.is_dir():
            target.mkdir()
        scripts = deps_mod.finalise(target, dspec.shebang)
        packages = deps_mod.inventory(target)
        modules = deps_mod.top_level_modules(target)
        lf = write_layer(deps_mod.entries(target, dspec.dest), work / "layer.tar.gz", dspec.mtime)
        stored = cache.put("deps", key, lf.path, lf.digest, lf.diff_id, lf.size, extra={
            "packages": [d.to_json() for d in packages], "scripts": list(scripts), "modules": list(modules),
            "installer": installer})
    finally:
        cache.discard(work)
    progress.info(f"dependency layer {dspec.platform}: built {stored.digest[7:19]} with {installer} "
                  f"({human_bytes(stored.size)}, {len(packages)} distributions)")
    return stored


def build(spec: BuildSpec, *, fetch_base: Callable[[Platform], Image],
          fetch_previous: Callable[[Platform], Image | None] | None = None,
          cache: Cache | None = None, progress: Progress = NULL,
          environ: dict[str, str] | None = None) -> BuildResult:
    cache = cache or Cache()
    warnings: list[str] = []
    req: Requirements | None = None
    if spec.requirements is not None:
        req = deps_mod.read_requirements(spec.requirements, spec.package)
        if req.unpinned:
            msg = (f"{spec.requirements.name}: not pinned to exact versions: {', '.join(req.unpinned)}; "
                   "the dependency layer is not reproducible (pin with ==, or use uv.lock)")
            warnings.append(msg)
            progress.warn(msg)

    progress.step(f"source layer from {spec.source}")
    src = collect(spec.source, spec.workdir, spec.exclude + _dependency_files(spec, req))
    source_files = {p[len(spec.workdir.strip("/")) + 1:] for p in src.files}
    app_projects = deps_mod.app_projects(req, spec.source)
    source_lock = threading.Lock()

    def source_for(shebang: str) -> tuple[CachedLayer, str, ProjectInstall | None]:
        # the app's own package (dist-info, console scripts) goes in with its code; its scripts
        # start with the image's Python, known once the base is
        project = entries_for_all(app_projects, spec.source, spec.workdir, DEPS_DIR, shebang) if app_projects else None
        layer_src = src if project is None else SourceLayer(src.entries + project.entries,
                                                            content_key(src.entries + project.entries))
        with source_lock:  # platforms with one interpreter share one source layer
            return (*_source_layer(layer_src, spec, cache, progress), project)

    def one(platform: Platform) -> PlatformBuild:
        progress.step(f"base image {spec.base} ({platform})")
        fetched = fetch_base(platform)
        # a RemoteImage also knows the digest the registry has for the base (the model's own
        # digest is of a re-serialisation); a plain Image is taken as it is
        base: Image = getattr(fetched, "image", fetched)
        base_digest = getattr(fetched, "digest", None) or base.digest
        base_cfg = base.config_json()
        arch = base_cfg.get("architecture", base.platform.architecture)
        if arch != platform.architecture:
            raise BuildError(f"base image {spec.base} is {base_cfg.get('os')}/{arch}, not {platform}",
                             "use a base with an image for every platform in image.platforms (an image index)")
        base_diff_ids = list((base_cfg.get("rootfs") or {}).get("diff_ids") or [])
        if len(base_diff_ids) != len(base.layers):
            raise BuildError(f"base image {spec.base} ({platform}) lists {len(base.layers)} layers but "
                             f"{len(base_diff_ids)} diff_ids", "rebuild or re-push the base image")
        progress.info(f"base {platform}: {len(base.layers)} layers, {human_bytes(sum(b.size for b in base.layers))} "
                      "(never downloaded)")

        source_layer, source_origin, project = source_for(interpreter(spec.shebang, base_cfg))
        deps_info: DepsInfo | None = None
        deps_blob: Blob | None = None
        origin = None
        if req is not None:
            dspec = DepsSpec(req, platform, spec.python, spec.manylinux, DEPS_DIR,
                             interpreter(spec.shebang, base_cfg), spec.epoch)
            key = dspec.key()
            hit = cache.get("deps", key)
            if hit:
                deps_info, deps_blob, origin = _deps_from_cache(hit, key), hit.blob(), "cache"
                progress.info(f"dependency layer {platform}: unchanged, from the local cache "
                              f"({hit.digest[7:19]}, {human_bytes(hit.size)})")
            else:
                reused = deps_from_previous(fetch_previous(platform) if fetch_previous else None, key)
                if reused:
                    deps_info, deps_blob = reused
                    deps_blob = dataclasses.replace(deps_blob, source=deps_blob.source or spec.repository)
                    origin = "registry"
                    progress.info(f"dependency layer {platform}: unchanged, reused from the registry's previous "
                                  f"image ({deps_info.digest[7:19]}, {human_bytes(deps_info.size)}; nothing resolved)")
                else:
                    progress.step(f"dependencies for {platform} (Python {spec.python})")
                    built = _build_deps(dspec, key, cache, progress, environ)
                    deps_info, deps_blob, origin = _deps_from_cache(built, key), built.blob(), "built"

        if deps_info is None:
            scripts, modules = (), ()
        elif deps_info.scripts or deps_info.modules:
            scripts, modules = deps_info.scripts, deps_info.modules
        else:
            scripts = modules = None  # reused without an inventory: the dependency side is unknown
        if project is not None and scripts is not None and modules is not None:
            scripts, modules = scripts + project.scripts, modules + project.modules
        check_entrypoint(spec.entrypoint, source_files, spec.workdir, scripts, modules, spec.source)

        layers = tuple(_as_oci_layer(b) for b in base.layers)
        diff_ids = list(base_diff_ids)
        if deps_blob is not None and deps_info is not None:
            layers += (_mountable(deps_blob, cache, spec.repository),)
            diff_ids.append(deps_info.diff_id)
        layers += (_mountable(source_layer.blob(), cache, spec.repository),)
        diff_ids.append(source_layer.diff_id)
        img_platform = Platform(platform.os, platform.architecture, base_cfg.get("variant") or base.platform.variant)
        config = image_config(base_cfg, spec, img_platform, diff_ids, deps_info, base_digest, project)
        image = Image(config=Blob.from_bytes(canonical_json(config), OCI_CONFIG), layers=layers,
                      platform=img_platform, annotations=annotations(spec, base_digest), media_type=OCI_MANIFEST)
        progress.info(f"image {platform}: {image.digest}")
        return PlatformBuild(img_platform, image, len(base.layers), deps_info, origin,
                             source_layer.digest, source_origin)

    # platforms are independent (their own base manifest, wheels, layer): one installer per
    # platform runs at the same time
    if len(spec.platforms) == 1:
        builds = [one(spec.platforms[0])]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(spec.platforms), thread_name_prefix="ferry-build") as pool:
            builds = list(pool.map(one, spec.platforms))

    if len(builds) == 1:
        result_image: Image | ImageIndex = builds[0].image
    else:
        result_image = ImageIndex(tuple(b.image for b in builds), annotations=annotations(spec))
    return BuildResult(result_image, tuple(builds), tuple(warnings))

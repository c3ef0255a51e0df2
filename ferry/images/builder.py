"""Source to image, Jib-style: the base's layers, then one layer per step, then the config.

Layers are ordered by how often they change, so a source edit rebuilds (and uploads) only the
last, small layer and a requirements change only the dependency layer:

    base image layers   never downloaded: publishers mount or HEAD-check them in the target
    /app/deps           wheels for the image's platform (steps.DepsStep over deps.py)
    /app                the service's files (steps.SourceStep over source.py)

Each layer is a step (``steps.py``) with one key and one cache rule (local cache -> the
previous image's labels -> make it); ``plan`` lists a platform's steps, ``build`` runs them
bottom to top, checks the entrypoint against what they provide, and ``assemble`` stacks what
they returned on the base. The builder makes an in-memory ``Image`` (or an ``ImageIndex``
for several platforms) and never knows where it goes; ``pipeline.py`` hands it to a
publisher. What it needs from a registry comes in as functions: ``fetch_base(platform)``,
``fetch_previous(platform)`` (the image under the target tag, or None) and ``fetch_blob``.

Pure parts (``image_config``, ``annotations``, ``check_entrypoint``, ``plan``, ``assemble``)
are unit-tested exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from .. import __version__
from ..errors import BuildError
from ..progress import NULL, Progress, human_bytes
from . import deps as deps_mod
from .cache import Cache
from .deps import DEFAULT_MANYLINUX, DEFAULT_SHEBANG, DEPS_DIR, DepsSpec, Distribution, Requirements
from .layers import epoch as default_epoch
from .oci import (DOCKER_LAYER_GZIP, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Blob, Image, ImageIndex,
                  Platform, canonical_json)
from . import basefacts
from .basefacts import BaseFacts, PythonRequest, read_python_version_file
from .source import SourceLayer, collect
from .trees import chain_id
from .project import entries_for_all
from .steps import (Contribution, DepsInfo, DepsStep, Layer, LayerStep, SourceStep,
                    StepContext, label_key, label_layer, run_step)

TOOL = f"ferry-{__version__}"

LABEL_DEPS_KEY = label_key("deps")
LABEL_DEPS_LAYER = label_layer("deps")
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
    packages: tuple[str, ...] = ()  # Debian packages (packages.py)
    build: tuple[tuple[str, ...], ...] = ()  # build steps (buildstep.py)
    build_env: dict[str, str] = field(default_factory=dict)
    build_network: bool = False
    build_inputs: tuple[str, ...] = ()  # source patterns the build layer's key reads; () = all
    # where the app says which Python it needs beside image.python (pyproject, .python-version)
    python_requests: tuple[PythonRequest, ...] = ()
    package: str | None = None  # image.package: the uv workspace member that is the app

    def python_checks(self) -> tuple[PythonRequest, ...]:
        return (PythonRequest("image.python", self.python), *self.python_requests)

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
            packages=tuple(i.packages),
            build=tuple(tuple(step) for step in i.build),
            build_env=dict(i.build_env),
            build_network=i.build_network,
            build_inputs=tuple(i.build_inputs),
            python_requests=python_requests(cfg, source),
            package=i.package,
        )


def python_requests(cfg, source: Path) -> tuple[PythonRequest, ...]:
    """pyproject.toml's requires-python and .python-version, where the app keeps them: beside
    image.requirements, in the source folder, or beside ferry.toml (first found of each)."""
    import tomllib

    from ..errors import ConfigError

    here = [source]
    if cfg.image.requirements:
        here.insert(0, cfg.resolve(cfg.image.requirements).parent)
    root = getattr(cfg, "path", None)
    if root is not None:
        here.append(Path(root).parent)
    out = []
    for folder in dict.fromkeys(here):
        f = folder / "pyproject.toml"
        if f.is_file():
            try:
                rp = (tomllib.loads(f.read_text()).get("project") or {}).get("requires-python")
            except (tomllib.TOMLDecodeError, OSError) as e:
                raise ConfigError(f"{f}: cannot read it: {e}", "fix the file") from None
            if isinstance(rp, str) and rp.strip():
                out.append(PythonRequest(f"{f.name} requires-python", rp.strip()))
            break
    for folder in dict.fromkeys(here):
        f = folder / ".python-version"
        if f.is_file():
            version = read_python_version_file(f.read_text(errors="replace"))
            if version:
                out.append(PythonRequest(".python-version", version))
            break
    return tuple(out)


def _manylinux(tag: str) -> str:
    import re

    if not re.match(r"^(manylinux_2_\d+|manylinux2014)$", tag):
        from ..errors import ConfigError

        raise ConfigError(f"image.manylinux: {tag!r} is not a manylinux tag",
                          'use manylinux_2_N with N at most the base image\'s glibc minor version, e.g. "manylinux_2_28"')
    return "manylinux_2_17" if tag == "manylinux2014" else tag


def interpreter(spec_shebang: str, base_config: dict, facts: BaseFacts | None = None) -> str:
    """The interpreter console scripts start with. ferry.toml wins; then what the base says
    (basefacts: ferry's bases' ``dev.ferry.base.interpreter`` label, /usr/bin/python3, since
    they have no /usr/bin/env; an older ``dev.ferry.python`` label naming a path; a base that runs its Python directly, as
    distroless does; a Debian base without coreutils); any other base (e.g. python:3.11-slim)
    has /usr/bin/env."""
    if spec_shebang:
        return spec_shebang
    facts = facts or basefacts.from_config(base_config)
    return facts.interpreter or DEFAULT_SHEBANG


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


def image_env(base_config: dict, spec: BuildSpec, layers: Sequence[Layer]) -> dict[str, str]:
    """The image's environment: the base's, each layer's PATH and PYTHONPATH entries, ferry's
    Python settings and the port, then image.env. Build steps run with it too."""
    bc = base_config.get("config") or {}
    env = _env_dict(bc.get("Env"))
    path = env.get("PATH", DEFAULT_PATH)
    pythonpath = [spec.workdir]
    # the app's own import roots (the source layer's, from its pyproject) come right after the
    # workdir, before the dependencies: the app's code wins over a same-named distribution
    ordered = sorted(layers, key=lambda layer: layer.kind != "source")
    for layer in ordered:
        if layer.path and not path.startswith(layer.path + ":"):
            path = f"{layer.path}:{path}"
        for entry in (layer.pythonpath or "").split(":"):
            if entry and entry not in pythonpath:
                pythonpath.append(entry)
    env["PATH"] = path
    env["PYTHONPATH"] = ":".join(pythonpath + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"  # logs reach `docker logs` as they happen
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the app runs as a user who cannot write /app
    env["PORT"] = str(spec.port)
    env.update(spec.env)
    return env


def build_env(base_config: dict, spec: BuildSpec, layers: Sequence[Layer]) -> dict[str, str]:
    """What build steps run with: the image's environment, HOME in the sandbox's /tmp (so
    caches a tool writes there never reach the layer), then image.build_env."""
    env = image_env(base_config, spec, layers)
    env.setdefault("HOME", "/tmp")
    env.update(spec.build_env)
    return env


def image_config(base_config: dict, spec: BuildSpec, platform: Platform, layers: Sequence[Layer],
                 base_digest: str | None = None) -> dict:
    """The image config: the base's, with ferry's layers (in order), environment, entrypoint
    and labels.

    Nothing about the build machine goes in: the time is the fixed epoch, no hostname, no
    container id, no builder version (upgrading ferry must not change an image's digest
    unless its bytes change)."""
    bc = base_config.get("config") or {}
    env = image_env(base_config, spec, layers)

    # the base's org.opencontainers.image.* labels describe the base (its title, its version):
    # carried over they would misdescribe the app
    labels = {k: v for k, v in (bc.get("Labels") or {}).items() if not k.startswith("org.opencontainers.image.")}
    labels.update(annotations(spec, base_digest))
    labels[LABEL_PORT] = str(spec.port)
    if spec.health_path:
        labels[LABEL_HEALTH_PATH] = spec.health_path
    labels.update(spec.labels)
    for layer in layers:  # ferry's own bookkeeping wins over a user label of the same name
        labels.update(layer.labels)

    config: dict = {k: v for k, v in bc.items() if k not in ("Cmd", "Entrypoint", "Env", "Labels", "User",
                                                             "WorkingDir", "ExposedPorts", "Healthcheck",
                                                             "Hostname", "Domainname", "Image")}
    ports = dict(bc.get("ExposedPorts") or {})
    ports[f"{spec.port}/tcp"] = {}
    config.update({
        # `{port}` becomes image.port, so `docker run IMAGE` serves where EXPOSE says; the
        # deployer starts each colour with its own port in that place (deploy/docker.py)
        "Entrypoint": [a.replace("{port}", str(spec.port)) for a in spec.entrypoint],
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
    for layer in layers:
        history.append({"created": created, "created_by": layer.created_by, "comment": "ferry"})

    out = {
        "architecture": platform.architecture,
        "os": platform.os,
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": base_diff_ids + [layer.diff_id for layer in layers]},
        "history": history,
    }
    if platform.variant:
        out["variant"] = platform.variant
    return out


# "module:attr" or "module:factory()" as gunicorn/uvicorn take it; not "host:8000", not
# "0.0.0.0:{port}" (the deployer's placeholder), not "unix:/run/app.sock"
_APP_SPEC = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):[A-Za-z_][\w.]*(\(.*\))?$")


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
                     source: Path | str = "the source folder", files_known: bool = True) -> None:
    """Fail before anything is pushed when the entrypoint names a module, script or file the
    image will not have. ``source_files`` are paths relative to the workdir; ``None`` for deps
    means "unknown" (then only the source side is checked); ``files_known=False`` (a build
    layer reused by digest: its files are not known) checks only the command's shape.

    ``{port}`` in an argument is the deployer's (replaced at container start), never a module."""
    if not entrypoint:
        raise BuildError("image.entrypoint is empty", 'set e.g. entrypoint = ["python3", "-m", "myservice"]')
    argv = list(entrypoint)
    prog = argv[0].rsplit("/", 1)[-1]
    stdlib = set(getattr(sys, "stdlib_module_names", ()))
    dep_mods = set(deps_modules or ())

    def module_ok(module: str, run_as_main: bool) -> None:
        top = module.split(".")[0]
        kind = _module_in(source_files, module)
        if kind == "package" and run_as_main and files_known and f"{module.replace('.', '/')}/__main__.py" not in source_files:
            raise BuildError(f"image.entrypoint runs `python -m {module}`, but {module} is a package without __main__.py in {source}",
                             f"add {module.replace('.', '/')}/__main__.py, or name the module to run")
        if kind or top in stdlib:
            return
        if top in dep_mods or deps_modules is None or not files_known:
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
            m = _APP_SPEC.match(a)
            if m:
                module_ok(m.group(1), run_as_main=False)

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
        if not rel.startswith("/") and rel not in source_files and files_known:
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
        if rel not in source_files and files_known:
            raise BuildError(f"image.entrypoint runs {argv[0]}, which is not in {source}",
                             "fix the path in image.entrypoint")


# --- the runner ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BaseImage:
    """The base as the steps see it: its model (layers by descriptor), the digest the registry
    has for it, its config document and its layers' diff_ids."""

    image: Image
    digest: str
    config: dict
    diff_ids: tuple[str, ...]
    reference: str = ""

    @property
    def layers(self) -> tuple[Blob, ...]:
        return self.image.layers


@dataclass(frozen=True)
class PlatformBuild:
    platform: Platform
    image: Image
    base_layers: int
    layers: tuple[Layer, ...] = ()  # ferry's, in order, as the steps returned them

    def layer(self, kind: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.kind == kind), None)

    @property
    def deps(self) -> DepsInfo | None:
        layer = self.layer("deps")
        return DepsInfo.of(layer) if layer else None

    @property
    def deps_origin(self) -> str | None:  # "cache" | "registry" | "built"
        layer = self.layer("deps")
        return layer.origin if layer else None

    @property
    def source_digest(self) -> str:
        return self.layer("source").digest

    @property
    def source_origin(self) -> str:  # "cache" | "built"
        return self.layer("source").origin


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
        """layer digest -> "base" | "packages" | "deps" | "source" | "build"."""
        out: dict[str, str] = {}
        for b in self.builds:
            kinds = {layer.digest: layer.kind for layer in b.layers}
            for i, blob in enumerate(b.image.layers):
                out.setdefault(blob.digest, "base" if i < b.base_layers else kinds.get(blob.digest, "source"))
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


def load_base(spec: BuildSpec, fetched, platform: Platform) -> BaseImage:
    """The base for one platform, checked: its architecture and its layer count."""
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
    return BaseImage(base, base_digest, base_cfg, tuple(base_diff_ids), spec.base)


def assemble(spec: BuildSpec, base: BaseImage, layers: Sequence[Layer], platform: Platform) -> Image:
    """Stack ferry's layers on the base (pure): the manifest, the config, the annotations."""
    blobs = tuple(_as_oci_layer(b) for b in base.layers) + tuple(layer.blob for layer in layers)
    img_platform = Platform(platform.os, platform.architecture, base.config.get("variant") or base.image.platform.variant)
    config = image_config(base.config, spec, img_platform, layers, base.digest)
    return Image(config=Blob.from_bytes(canonical_json(config), OCI_CONFIG), layers=blobs,
                 platform=img_platform, annotations=annotations(spec, base.digest), media_type=OCI_MANIFEST)


@dataclass(frozen=True)
class Inputs:
    """What every platform's steps share, read once: the requirements and the source."""

    requirements: Requirements | None
    source: SourceLayer
    # files other parts of ferry add to the source layer; a function of the platform's
    # StepContext when they depend on the base (a console script's interpreter)
    contributions: tuple[Contribution, ...] | Callable[[StepContext], Sequence[Contribution]] = ()


def deps_bytecode(facts: BaseFacts, base: BaseImage, platform: Platform, ctx: StepContext,
                  others: Callable[[], dict[str, BaseImage]] | None = None):
    """deps.bytecode_plan over what this machine is (its architecture, binfmt, bubblewrap),
    whether the base's files can be had (its blobs here, or a registry to fetch them), and,
    for a platform it cannot run, the other platforms' bases (loaded only then).
    -> (the plan, the tree whose interpreter compiles: None for this platform's base)."""
    import shutil

    from . import sandbox

    def have_files(b: BaseImage) -> bool:
        return ctx.fetch_blob is not None or all(
            (x.path is not None and x.path.is_file()) or ctx.cache.blob_path(x.digest).is_file() for x in b.layers)

    machine, binfmt = sandbox.machine_architecture(), sandbox.read_binfmt()
    bwrap = shutil.which("bwrap") or ("/usr/bin/bwrap" if os.path.exists("/usr/bin/bwrap") else None)
    bases: dict[str, BaseImage] = {}
    if others is not None and not sandbox.can_run(platform.architecture, machine, binfmt):
        bases = {arch: b for arch, b in others().items() if have_files(b)}
    versions = {arch: basefacts.from_config(b.config, b.image.annotations).python for arch, b in bases.items()}
    plan_ = deps_mod.bytecode_plan(facts.python, chain_id(base.diff_ids), platform.architecture, machine, binfmt,
                                   bwrap, have_files(base), versions)
    if plan_.via is None:
        return plan_, None
    other = bases[plan_.via]
    return plan_, (lambda: ctx.trees().base(other.layers, other.diff_ids))


def plan(spec: BuildSpec, inputs: Inputs, base: BaseImage, platform: Platform, ctx: StepContext,
         facts: BaseFacts | None = None, others: Callable[[], dict[str, BaseImage]] | None = None) -> list[LayerStep]:
    """The layer steps for one platform, bottom to top: what the base lacks (Debian packages),
    the dependencies, the source, what the build steps write. ``others``: the build's other
    platforms' bases by architecture (one may compile this platform's bytecode)."""
    facts = facts or ctx.base_facts()
    steps: list[LayerStep] = []
    if spec.packages:
        from .packages import PackagesStep

        steps.append(PackagesStep(spec.packages, platform.architecture, facts.suite, chain_id(base.diff_ids),
                                  spec.epoch, lambda: ctx.base_facts(files=not facts.ferry), spec.base))
    if inputs.requirements is not None:
        bytecode, compiler_tree = deps_bytecode(facts, base, platform, ctx, others)
        steps.append(DepsStep(DepsSpec(inputs.requirements, platform, spec.python, spec.manylinux, DEPS_DIR,
                                       interpreter(spec.shebang, base.config, facts), spec.epoch, bytecode.compiler),
                              bytecode.reason, compiler_tree, bytecode.via))
    contributions = inputs.contributions(ctx) if callable(inputs.contributions) else inputs.contributions
    steps.append(SourceStep(inputs.source, spec.source, spec.workdir, spec.epoch, tuple(contributions)))
    if spec.build:
        from .buildstep import BuildStep

        steps.append(BuildStep(spec.build, lambda below: build_env(base.config, spec, below), spec.user,
                               spec.workdir, spec.build_network, spec.epoch, platform.architecture, base.diff_ids,
                               inputs.source.inputs_key))
    return steps


def entrypoint_facts(layers: Sequence[Layer], workdir: str) -> tuple[set[str], tuple[str, ...] | None, tuple[str, ...] | None]:
    """What the steps' layers provide to the entrypoint check: files relative to the workdir,
    console scripts and modules (None when a layer's side is unknown)."""
    prefix = workdir.strip("/") + "/"
    files = {f[len(prefix):] for layer in layers for f in (layer.files or ()) if f.startswith(prefix)}
    scripts: tuple[str, ...] | None = ()
    modules: tuple[str, ...] | None = ()
    for layer in layers:
        scripts = None if scripts is None or layer.scripts is None else scripts + layer.scripts
        modules = None if modules is None or layer.modules is None else modules + layer.modules
    return files, scripts, modules


def _with_project(spec: BuildSpec, pyprojects: tuple[Path, ...], others: tuple[Contribution, ...]):
    """The app's own package (dist-info, console scripts, import roots: project.py) joins the
    source layer; its scripts start with the image's Python, known once the base is."""

    def for_platform(ctx: StepContext) -> list[Contribution]:
        base = ctx.base
        shebang = interpreter(spec.shebang, base.config if base is not None else {}, ctx.base_facts())
        pi = entries_for_all(pyprojects, spec.source, spec.workdir, DEPS_DIR, shebang)
        if pi is None:
            return list(others)
        return [*others, Contribution(f"project {pi.name}", tuple(pi.entries), tuple(pi.scripts), tuple(pi.modules),
                                      pythonpath=tuple(pi.pythonpath) + ("/" + DEPS_DIR,),
                                      bindir="/" + DEPS_DIR + "/bin")]

    return for_platform


def build(spec: BuildSpec, *, fetch_base: Callable[[Platform], Image],
          fetch_previous: Callable[[Platform], Image | None] | None = None,
          cache: Cache | None = None, progress: Progress = NULL,
          environ: dict[str, str] | None = None,
          fetch_blob: Callable[[Blob], Path] | None = None,
          contributions: Sequence[Contribution] | Callable[[StepContext], Sequence[Contribution]] = ()) -> BuildResult:
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
    app_projects = deps_mod.app_projects(req, spec.source)
    if app_projects and not callable(contributions):
        contributions = _with_project(spec, app_projects, tuple(contributions))
    stat_cache = cache.root / "stat" / (hashlib.sha256(str(spec.source.resolve()).encode()).hexdigest()[:32] + ".json")
    inputs = Inputs(req, collect(spec.source, spec.workdir, spec.exclude + _dependency_files(spec, req), stat_cache,
                                 spec.build_inputs),
                    contributions if callable(contributions) else tuple(contributions))

    def one(platform: Platform) -> PlatformBuild:
        progress.step(f"base image {spec.base} ({platform})")
        base = load_base(spec, fetch_base(platform), platform)
        progress.info(f"base {platform}: {len(base.layers)} layers, {human_bytes(sum(b.size for b in base.layers))}")
        ctx = StepContext(platform, cache, spec.repository, progress,
                          (lambda: fetch_previous(platform)) if fetch_previous else None,
                          fetch_blob, environ, base)
        # before anything is resolved: the Python the app asks for is the base's
        facts = ctx.base_facts()
        if facts.python is None and not facts.ferry and fetch_blob is not None:
            # the config does not tell (a Debian base with python3 from apt, no PYTHON_VERSION):
            # its files do (dpkg status: the Python, and /usr/bin/python3 when it has no coreutils)
            facts = ctx.base_facts(files=True)
        for w in basefacts.check_python(spec.python_checks(), facts, spec.base):
            if w not in warnings:
                warnings.append(w)
                progress.warn(w)
        layers: list[Layer] = []
        def others() -> dict[str, BaseImage]:
            return {p.architecture: load_base(spec, fetch_base(p), p) for p in spec.platforms if p != platform}

        for step in plan(spec, inputs, base, platform, ctx, facts, others):
            layers.append(run_step(step, ctx, tuple(layers)))
        files, scripts, modules = entrypoint_facts(layers, spec.workdir)
        check_entrypoint(spec.entrypoint, files, spec.workdir, scripts, modules, spec.source,
                         files_known=all(layer.files is not None for layer in layers))
        layers = [dataclasses.replace(layer, blob=_mountable(layer.blob, cache, spec.repository)) for layer in layers]
        image = assemble(spec, base, layers, platform)
        progress.info(f"image {platform}: {image.digest}")
        return PlatformBuild(image.platform, image, len(base.layers), tuple(layers))

    # platforms are independent (their own base manifest, wheels, layer): one installer per
    # platform runs at the same time
    if len(spec.platforms) == 1:
        builds = [one(spec.platforms[0])]
    else:
        import sysconfig
        from concurrent.futures import ThreadPoolExecutor

        # sysconfig fills its cache on first use without a lock: two threads asking at once (uv's
        # find_uv_bin does) can get None, and that platform silently fell back to pip
        sysconfig.get_config_vars()
        with ThreadPoolExecutor(max_workers=len(spec.platforms), thread_name_prefix="ferry-build") as pool:
            builds = list(pool.map(one, spec.platforms))

    if len(builds) == 1:
        result_image: Image | ImageIndex = builds[0].image
    else:
        result_image = ImageIndex(tuple(b.image for b in builds), annotations=annotations(spec))
    return BuildResult(result_image, tuple(builds), tuple(warnings))

"""The dependency layer: wheels for the image's platform, unpacked on the build machine.

No container runs: ``uv pip install --target DIR --python-platform ... --python-version ...
--only-binary :all:`` (or pip's ``--target --platform --implementation cp --only-binary``)
downloads the wheels made for the *image's* platform and unpacks them into a folder that
becomes one layer at ``DEPS_DIR``.

What decides the set, by ``image.requirements``:

- ``requirements.txt`` (``-r``/``-c`` followed, ``--hash`` honoured);
- ``pyproject.toml`` with a ``uv.lock`` beside it or at the root of its uv workspace
  (``image.package`` picks the member; ``workspace.py``): exported with ``uv export --format
  pylock.toml`` for that member, then installed as a lock;
- ``pylock.toml`` (PEP 751): the lock's own wheels and hashes;
- ``pyproject.toml`` alone: its ``[project] dependencies``, resolved (with a warning).

A lock is read by ferry (``pylock.py``): each package's wheel for the image's platform is
chosen there, a lock made for another platform is named, and a package published only as an
sdist is built into a pure-Python wheel (``sdist.py``); one that would compile code is refused
by name, since it would be compiled for the build machine, not the image. A requirements file
is installed wheels-only first; only when a requirement has no wheel is it resolved to a lock
(``uv pip compile --format pylock.toml``, hashes kept) and installed the same way.

The layer's *input key* (the requirements' content hash, platform, Python version, wheel
platform tag, this recipe's version and the layer format) names it in the local cache and in
the image's labels, so an unchanged dependency set is never resolved, downloaded or
compressed again: not on this machine, and not on a fresh one that can read the previous
image from the registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError
from . import pylock
from .layers import GZIP_LEVEL, Entry, tree_entries
from .oci import Platform

# Bump when the same inputs would give different layer bytes (layout, post-processing).
# 2: locks are installed through ferry's own wheel choice (pylock.py)
# 3: bytecode compiled by the base's own interpreter (checked-hash .pyc beside every module)
RECIPE_VERSION = "3"
DEPS_DIR = "app/deps"  # site-packages of the image (on PYTHONPATH); console scripts in bin/
DEFAULT_SHEBANG = "/usr/bin/env python3"
DEFAULT_MANYLINUX = "manylinux_2_28"  # glibc 2.28+: Debian 10+, RHEL 8+, Amazon Linux 2023
_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}

_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_PINNED_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?\s*===?\s*[^\s,*;]+\s*$")
_URL_HOST_RE = re.compile(r"(\w+://)([^/\s]+)")
_HASH_RE = re.compile(r"--hash[=\s]+sha256:([0-9a-fA-F]{64})")


# --- reading requirements ---------------------------------------------------------------------

@dataclass(frozen=True)
class Requirements:
    """What decides the installed set. ``digest`` covers every file that does (a requirements
    file and the files it includes; pyproject.toml + uv.lock, with the workspace's root and
    the members the app depends on; a pylock.toml), line endings normalised so a Windows
    checkout gives the same key."""

    path: Path
    kind: str  # "requirements" | "uv.lock" | "pylock" | "pyproject"
    digest: str
    unpinned: tuple[str, ...] = ()
    hashed: bool = False  # every requirement carries --hash: install with --require-hashes
    files: tuple[Path, ...] = ()  # every file read (requirements and what they include, locks)
    lock: Path | None = None  # the uv.lock or pylock.toml installed from
    package: str | None = None  # the uv project (workspace member) the lock is exported for
    project: Path | None = None  # the app's own pyproject.toml (the workspace member's)
    members: tuple[Path, ...] = ()  # pyproject.toml of every workspace member the app needs, itself first

    @property
    def reproducible(self) -> bool:
        return not self.unpinned

    @property
    def inputs(self) -> tuple[Path, ...]:
        """The files that are the dependency layer's input and not the app's: kept out of the
        source layer (pyproject.toml stays: it describes the app too)."""
        if self.kind == "requirements":
            return self.files or (self.path,)
        return (self.lock,) if self.lock is not None else ()


def _normalised(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def _logical_lines(text: str) -> list[str]:
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        out.append(buf)
        buf = ""
    if buf:
        out.append(buf)
    return out


def _strip_comment(line: str) -> str:
    # pip: a comment starts at '#' at the line start or after whitespace (URLs keep their '#')
    return re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()


def parse_requirements_txt(path: Path, seen: set[Path] | None = None) -> tuple[list[str], list[str], bool, list[Path]]:
    """-> (requirement lines, unpinned names, all hashed, files read). Follows -r/-c."""
    seen = set() if seen is None else seen
    path = path.resolve()
    if path in seen:
        return [], [], True, []
    seen.add(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise BuildError(f"cannot read requirements file {path}: {e.strerror}", "check image.requirements in ferry.toml") from None
    reqs: list[str] = []
    unpinned: list[str] = []
    hashed = True
    files = [path]
    for n, line in enumerate(_logical_lines(text), 1):
        line = _strip_comment(line)
        if not line:
            continue
        if line.startswith("-"):
            opt, _, arg = line.partition(" ")
            if "=" in opt and not arg:
                opt, _, arg = opt.partition("=")
            arg = arg.strip()
            if opt in ("-r", "--requirement", "-c", "--constraint"):
                sub = (path.parent / arg)
                r, u, h, f = parse_requirements_txt(sub, seen)
                files += f
                if opt in ("-r", "--requirement"):
                    reqs += r
                    unpinned += u
                    hashed = hashed and h
                continue
            if opt in ("-e", "--editable"):
                raise BuildError(f"{path.name}:{n}: editable requirement {arg!r} cannot go into an image",
                                 "your own code goes in the source layer (image.source); list only published packages here")
            continue  # index options and the like: passed to the installer as part of the file
        name_m = _NAME_RE.match(line)
        name = name_m.group(1) if name_m else line
        spec = line.split(";", 1)[0].split("--hash", 1)[0]
        if "--hash" not in line:
            hashed = False
        pinned = bool(_PINNED_RE.match(spec.strip())) or " @ " in spec
        if spec.strip().startswith((".", "/")) or spec.strip().startswith("file:"):
            raise BuildError(f"{path.name}:{n}: local path requirement {line!r} cannot be resolved reproducibly",
                             "publish the package to your index and pin it, or vendor it in the source folder")
        if not pinned:
            unpinned.append(name)
        reqs.append(line)
    return reqs, unpinned, hashed and bool(reqs), files


def _digest(files, root: Path | None = None, extra: bytes = b"") -> str:
    h = hashlib.sha256(extra)
    for f in files:
        if root is not None:
            try:
                rel = f.resolve().relative_to(root).as_posix()
            except ValueError:
                rel = f.name
        else:
            rel = f.name
        h.update(rel.encode() + b"\0" + _normalised(f.read_bytes()) + b"\0")
    return h.hexdigest()


def read_requirements(path: Path, package: str | None = None) -> Requirements:
    """Read ``image.requirements``; ``package`` is ``image.package`` (a uv workspace member)."""
    from . import workspace

    if not path.is_file():
        raise BuildError(f"requirements file {path} does not exist", "fix image.requirements in ferry.toml or remove it")
    if pylock.is_pylock(path):
        if package is not None:
            raise BuildError(f"image.package is {package!r}, but {path.name} is a pylock.toml, which locks one "
                             "set of packages", "remove image.package, or point image.requirements at the uv "
                             "workspace's pyproject.toml")
        workspace.load_toml(path)  # a syntax error is named now, not after an installer ran
        return Requirements(path, "pylock", _digest([path]), (), True, (path,), path)
    if path.name == "pyproject.toml":
        project = workspace.discover(path, package)
        member = project.package
        if project.workspace or project.lock.is_file():
            lock = workspace.require_lock(project)
            lock_doc = workspace.load_toml(lock)
            needed = workspace.members_needed(project, lock_doc)
            root_py = project.root / "pyproject.toml"
            files = [root_py, lock] + [m.pyproject for m in needed if m.pyproject != root_py]
            name = member.name if member else None
            # the member exported is part of the key: one lock, several apps
            digest = _digest(files, project.root, f"package\0{name or ''}\0".encode()) if project.workspace \
                else _digest([path, lock])
            app_py = member.pyproject if member else None
            return Requirements(path, "uv.lock", digest, (), True, tuple(files), lock, name, app_py,
                                tuple(sorted((m.pyproject for m in needed), key=lambda p: p != app_py)))
        doc = workspace.load_toml(path)
        deps = doc.get("project", {}).get("dependencies", [])
        unpinned = [(_NAME_RE.match(d).group(1) if _NAME_RE.match(d) else d) for d in deps
                    if "==" not in d.split(";")[0] and " @ " not in d]
        h = hashlib.sha256(b"pyproject.toml\0" + _normalised(path.read_bytes()))
        return Requirements(path, "pyproject", h.hexdigest(), tuple(unpinned), False, (path,), None,
                            member.name if member else None, path if member else None)
    if package is not None:
        raise BuildError(f"image.package is {package!r}, but image.requirements is {path.name}, not a uv "
                         "workspace's pyproject.toml", "remove image.package, or point image.requirements at the "
                         "workspace's pyproject.toml")
    reqs, unpinned, hashed, files = parse_requirements_txt(path)
    return Requirements(path, "requirements", _digest(files, path.resolve().parent), tuple(unpinned), hashed,
                        tuple(files))


def app_projects(req: Requirements | None, source: Path) -> tuple[Path, ...]:
    """The pyproject.toml files whose packages the image installs from the source layer
    (``project.entries_for_all``): the app's (the workspace member's, with the members it
    depends on), or the source folder's own pyproject.toml."""
    if req is not None and req.project is not None:
        return req.members or (req.project,)
    py = source / "pyproject.toml"
    return (py,) if py.is_file() else ()


def required_hashes(path: Path) -> dict[str, set[str]]:
    """name (canonical) -> the sha256 hashes a requirements file allows for it."""
    from .workspace import canonical

    reqs, _, _, _ = parse_requirements_txt(path)
    out: dict[str, set[str]] = {}
    for line in reqs:
        m = _NAME_RE.match(line)
        hashes = {h.lower() for h in _HASH_RE.findall(line)}
        if m and hashes:
            out.setdefault(canonical(m.group(1)), set()).update(hashes)
    return out


# --- the key -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DepsSpec:
    """Everything that decides the dependency layer's bytes."""

    requirements: Requirements
    platform: Platform
    python: str
    manylinux: str = DEFAULT_MANYLINUX
    dest: str = DEPS_DIR
    shebang: str = DEFAULT_SHEBANG
    mtime: int = 1
    # what compiles the layer's bytecode (``bytecode_plan``): "cpython-3.11.2", or the base's
    # chain id when its Python's version is not known; None: the layer has no bytecode
    bytecode: str | None = None

    def key(self) -> str:
        doc = {
            "recipe": RECIPE_VERSION,
            "requirements": self.requirements.digest,
            "platform": str(self.platform),
            "python": self.python,
            "manylinux": self.manylinux,
            "dest": self.dest,
            "shebang": self.shebang,
            "mtime": self.mtime,
            "gzip": GZIP_LEVEL,
            "bytecode": [self.bytecode, BYTECODE_MODE] if self.bytecode else None,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    @property
    def arch(self) -> str:
        try:
            return _ARCH[self.platform.architecture]
        except KeyError:
            raise BuildError(f"platform {self.platform} is not supported for dependencies",
                             'use "linux/amd64" or "linux/arm64"') from None


# --- the installer's command line (pure) ---------------------------------------------------------

def uv_command(uv: str, spec: DepsSpec, target: Path, req_file: Path) -> list[str]:
    cmd = [uv, "pip", "install", "--target", str(target),
           "--python-platform", f"{spec.arch}-{spec.manylinux}",
           "--python-version", spec.python,
           "--only-binary", ":all:",
           "--link-mode", "copy",  # never hard-link into uv's cache: ferry rewrites some files
           "--no-progress",
           "-r", str(req_file)]
    if spec.requirements.hashed:
        cmd.append("--require-hashes")
    return cmd


def uv_export_command(uv: str, project_dir: Path, out: Path, package: str | None = None) -> list[str]:
    """uv.lock -> pylock.toml for one project (a workspace member with ``package``), without
    dev dependencies and without the workspace's own packages (the app's code is the source
    layer's)."""
    cmd = [uv, "export", "--frozen", "--no-dev", "--no-emit-workspace", "--no-header",
           "--format", "pylock.toml", "--project", str(project_dir)]
    if package:
        cmd += ["--package", package]
    return cmd + ["-o", str(out)]


def uv_compile_command(uv: str, spec: "DepsSpec", req_file: Path, out: Path) -> list[str]:
    """A requirements file -> a pylock.toml for the image's platform, to see which packages
    have only an sdist. A hashed file is complete (pip's rule), so nothing more is resolved."""
    cmd = [uv, "pip", "compile", str(req_file), "--format", "pylock.toml", "-o", str(out),
           "--python-platform", f"{spec.arch}-{spec.manylinux}", "--python-version", spec.python,
           "--no-header", "--quiet"]
    if spec.requirements.hashed:
        cmd.append("--no-deps")
    return cmd


def pip_platforms(manylinux: str, arch: str) -> list[str]:
    """pip takes --platform tags literally (uv expands them): name every glibc from the chosen
    one down to 2.17, as an installer running on that glibc would accept."""
    newest = int(manylinux.rsplit("_", 1)[-1])
    tags = [f"manylinux_2_{m}_{arch}" for m in range(newest, 16, -1)]
    return tags + [f"manylinux2014_{arch}"]


def pip_command(python: str, spec: DepsSpec, target: Path, req_file: Path) -> list[str]:
    cp = "cp" + spec.python.replace(".", "")
    platforms = [a for tag in pip_platforms(spec.manylinux, spec.arch) for a in ("--platform", tag)]
    cmd = [python, "-m", "pip", "install", "--target", str(target), *platforms,
           "--python-version", spec.python,
           "--implementation", "cp", "--abi", cp, "--abi", "abi3", "--abi", "none",
           "--only-binary=:all:",
           "--no-compile",  # .pyc files would carry the build machine's times and Python
           "--no-warn-script-location", "--disable-pip-version-check", "--quiet",
           "-r", str(req_file)]
    if spec.requirements.hashed:
        cmd.append("--require-hashes")
    return cmd


def installer_env(environ: dict[str, str], uv_cache: Path | None) -> dict[str, str]:
    """The build machine's package-index settings, passed through (never written anywhere).

    pip reads PIP_*; uv reads UV_* and SSL_CERT_FILE, so pip's index and CA are translated
    for uv when uv has none of its own."""
    env = dict(environ)
    if env.get("PIP_INDEX_URL") and not (env.get("UV_DEFAULT_INDEX") or env.get("UV_INDEX_URL")):
        env["UV_DEFAULT_INDEX"] = env["PIP_INDEX_URL"]
    if env.get("PIP_EXTRA_INDEX_URL") and not (env.get("UV_INDEX") or env.get("UV_EXTRA_INDEX_URL")):
        env["UV_INDEX"] = env["PIP_EXTRA_INDEX_URL"]
    if env.get("PIP_CERT") and not env.get("SSL_CERT_FILE"):
        env["SSL_CERT_FILE"] = env["PIP_CERT"]
    if uv_cache is not None and not env.get("UV_CACHE_DIR"):
        env["UV_CACHE_DIR"] = str(uv_cache)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("VIRTUAL_ENV", None)  # uv must not install into the build machine's venv
    return env


_FIND_UV = threading.Lock()


def find_uv() -> str | None:
    if os.environ.get("FERRY_INSTALLER", "") == "pip":
        return None
    # one platform per thread: a first import of `uv` racing another sees a half-made module
    with _FIND_UV:
        try:
            from uv import find_uv_bin  # the PyPI package ships the binary beside ferry

            return find_uv_bin()
        except Exception:
            return shutil.which("uv")


# --- running it ----------------------------------------------------------------------------------

def redact(text: str) -> str:
    """Installer output may name the package index; ferry never repeats its host."""
    return _URL_HOST_RE.sub(lambda m: m.group(1) + "<index>", text)


def _install_error(spec: DepsSpec, output: str, name: str | None = None) -> BuildError:
    out = redact(output)
    lines = [ln.strip() for ln in out.splitlines() if ln.strip() and not ln.lstrip().startswith("WARNING:")]
    tail = " ".join(lines[-6:])[-900:]
    where = f"{spec.platform} (CPython {spec.python}, {spec.manylinux}_{spec.arch} wheels)"
    name = name or spec.requirements.path.name
    low = out.lower()
    if "hash" in low and ("mismatch" in low or "do not match" in low or "doesn't match" in low):
        return BuildError(f"{name}: no wheel for {where} matches its --hash (a lock made for another platform, "
                          f"e.g. on macOS, lists only that platform's wheels): {tail}",
                          f"lock for every platform the image runs on (uv pip compile --universal --generate-hashes, "
                          f"or --python-platform {spec.arch}-{spec.manylinux}), or check what the index serves")
    if any(s in low for s in ("failed to fetch", "could not connect", "connection refused", "dns error",
                              "failed to connect", "network", "timed out", "certificate")) and \
            "no solution" not in low and "no matching distribution" not in low:
        return BuildError(f"the package index could not be reached while installing {name}: {tail}",
                          "check the network; an index behind a proxy needs PIP_INDEX_URL/UV_DEFAULT_INDEX "
                          "and its CA in SSL_CERT_FILE or PIP_CERT")
    return BuildError(f"{name} cannot be installed for {where}: {tail}",
                      "pin versions that publish a wheel for this platform and Python, or remove the package "
                      "(ferry builds pure-Python sdists into wheels with uv; one that compiles code would be built "
                      "for the build machine, not the image)")


# uv's words for "this version has no wheel at all" (an sdist only); a package with wheels for
# other platforms but not this one ("no wheels with a matching platform tag") compiles code: that
# error stands as it is, with nothing built
_NO_WHEEL_RE = re.compile(r"has no usable wheels", re.I)


def _run(runner, cmd, env, cwd=None):
    return runner(cmd, capture_output=True, text=True, env=env, **({"cwd": str(cwd)} if cwd else {}))


def _tail(r) -> str:
    return redact(((r.stdout or "") + "\n" + (r.stderr or "")).strip())[-600:]


def install(spec: DepsSpec, target: Path, work: Path, uv_cache: Path | None, environ=None, runner=subprocess.run,
            wheel_cache: Path | None = None) -> str:
    """Install the requirements into ``target`` for the spec's platform. Returns the installer name.

    ``wheel_cache`` keeps wheels built from sdists by the sdist's sha256 (default: ``wheels/``
    beside ``uv_cache`` in ferry's cache)."""
    env = installer_env(dict(os.environ if environ is None else environ), uv_cache)
    uv = find_uv()
    req = spec.requirements
    target = target.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if wheel_cache is None:
        wheel_cache = (uv_cache.parent if uv_cache is not None else work) / "wheels"
    if req.kind in ("uv.lock", "pylock"):
        if not uv:
            raise BuildError(f"{req.path.name}: installing from a lock needs uv",
                             "pip install uv (it is one of ferry's dependencies), or unset FERRY_INSTALLER")
        if req.kind == "uv.lock":
            assert req.lock is not None
            out = work / "pylock.export.toml"
            r = _run(runner, uv_export_command(uv, req.lock.parent, out, req.package), env)
            if r.returncode != 0:
                raise BuildError(f"{req.lock} could not be exported: {_tail(r)}",
                                 f"run `uv lock` in {req.lock.parent} so uv.lock matches pyproject.toml, and commit it")
            doc, lock_dir, source = _read_lock(out), req.lock.parent, str(req.lock)
        else:
            doc, lock_dir, source = _read_lock(req.path), req.path.resolve().parent, req.path.name
        return _install_lock(spec, doc, lock_dir, source, uv, target, work, env, wheel_cache, runner)

    req_file = req.path.resolve()
    if uv:
        cmd, installer = uv_command(uv, spec, target, req_file), "uv"
    else:
        cmd, installer = pip_command(sys.executable, spec, target, req_file), "pip"
    r = _run(runner, cmd, env, req_file.parent)
    if r.returncode == 0:
        return installer
    output = (r.stdout or "") + "\n" + (r.stderr or "")
    if not (uv and _NO_WHEEL_RE.search(output)):
        raise _install_error(spec, output)
    # a requirement without a wheel for the image: resolve to a lock to see which have only an
    # sdist, build the pure-Python ones, install the rest as the wheels the lock names
    out = work / "pylock.compiled.toml"
    c = _run(runner, uv_compile_command(uv, spec, req_file, out), env, req_file.parent)
    if c.returncode != 0 or not out.is_file():
        raise _install_error(spec, output)
    doc = _read_lock(out)
    if req.hashed:
        doc = pylock.only_hashes(doc, required_hashes(req_file), req.path.name)
    shutil.rmtree(target, ignore_errors=True)
    return _install_lock(spec, doc, req_file.parent, req.path.name, uv, target, work, env, wheel_cache, runner)


def _read_lock(path: Path) -> dict:
    from .workspace import load_toml

    return load_toml(path)


def target_of(spec: DepsSpec) -> pylock.Target:
    return pylock.Target(spec.python, spec.arch, spec.manylinux)


def _install_lock(spec: DepsSpec, doc: dict, lock_dir: Path, source: str, uv: str, target: Path, work: Path,
                  env: dict[str, str], wheel_cache: Path, runner) -> str:
    from . import sdist

    t = target_of(spec)
    chosen = pylock.select(doc, t, source)
    where = f"{spec.platform} ({t.describe()})"
    picks = []
    for p in chosen.picks:
        if p.kind == "sdist":
            whl = sdist.wheel_for(p, uv=uv, cache_dir=wheel_cache, work=work / "sdists", env=env,
                                  mtime=max(spec.mtime, _ZIP_EPOCH), where=where, source=source, lock_dir=lock_dir,
                                  runner=runner)
            p = pylock.Pick(p.name, p.version, "wheel", whl.name, None, str(whl),
                            {"sha256": hashlib.sha256(whl.read_bytes()).hexdigest()})
        picks.append(p)
    lockfile = work / "pylock.ferry.toml"
    lockfile.write_text(pylock.render(picks, lock_dir))
    r = _run(runner, uv_command(uv, spec, target, lockfile), env, work)
    if r.returncode != 0:
        raise _install_error(spec, (r.stdout or "") + "\n" + (r.stderr or ""), source)
    return "uv"


_ZIP_EPOCH = 315532800  # 1980-01-01: a zip (a wheel) cannot hold an older time


# --- after install: make the folder image-ready -------------------------------------------------

def finalise(target: Path, shebang: str) -> tuple[str, ...]:
    """Drop bytecode (host Python, host times) and point console scripts at the image's Python
    instead of the build machine's. Returns the console scripts' names."""
    for cache_dir in sorted(target.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache_dir, ignore_errors=True)
    for pyc in target.rglob("*.pyc"):
        pyc.unlink()
    (target / ".lock").unlink(missing_ok=True)  # uv's lock file for the target folder
    for stamp in sorted(target.glob("*.dist-info/uv_cache.json")):
        _drop_from_record(stamp)  # uv's note of a local wheel's mtime: the build machine's clock
    scripts = []
    bindir = target / "bin"
    if bindir.is_dir():
        for f in sorted(bindir.iterdir()):
            if not f.is_file() or f.is_symlink():
                continue
            data = f.read_bytes()
            if data.startswith(b"#!"):
                first, nl, rest = data.partition(b"\n")
                if b"python" in first:
                    f.write_bytes(f"#!{shebang}".encode() + nl + rest)
            f.chmod(0o755)
            scripts.append(f.name)
    return tuple(scripts)


def _drop_from_record(path: Path) -> None:
    record = path.parent / "RECORD"
    if record.is_file():
        rel = f"{path.parent.name}/{path.name},"
        lines = record.read_text().splitlines(keepends=True)
        record.write_text("".join(ln for ln in lines if not ln.startswith(rel)))
    path.unlink()


def top_level_modules(target: Path) -> tuple[str, ...]:
    names = set()
    for p in target.iterdir():
        if p.name in ("bin",) or p.name.endswith((".dist-info", ".data", ".libs")):
            continue
        if p.is_dir():
            names.add(p.name)
        elif p.suffix == ".py":
            names.add(p.stem)
        elif p.suffix == ".so":
            names.add(p.name.split(".", 1)[0])
    return tuple(sorted(names))


@dataclass(frozen=True)
class Distribution:
    name: str
    version: str
    license: str = ""  # as declared (an SPDX expression when the metadata has one)
    summary: str = ""
    homepage: str = ""
    author: str = ""

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v}

    @classmethod
    def from_json(cls, d: dict) -> "Distribution":
        return cls(**{k: d.get(k, "") for k in ("name", "version", "license", "summary", "homepage", "author")})


_CLASSIFIER_LICENSES = {
    "MIT License": "MIT",
    "BSD License": "BSD-3-Clause",
    "Apache Software License": "Apache-2.0",
    "ISC License (ISCL)": "ISC",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "Python Software Foundation License": "PSF-2.0",
    "GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
}


def _license(msg) -> str:
    expr = (msg.get("License-Expression") or "").strip()
    if expr:
        return expr
    lic = (msg.get("License") or "").strip()
    if lic and "\n" not in lic and len(lic) <= 64 and lic.upper() != "UNKNOWN":
        return lic
    for c in msg.get_all("Classifier") or []:
        if c.startswith("License :: OSI Approved :: "):
            return _CLASSIFIER_LICENSES.get(c.rsplit(" :: ", 1)[-1], c.rsplit(" :: ", 1)[-1])
    return ""


def inventory(target: Path) -> tuple[Distribution, ...]:
    """The installed distributions, read from their .dist-info/METADATA."""
    import email.parser  # only when a dependency layer is built: keeps `ferry build` quick to start
    import email.policy

    # read as text, as importlib.metadata does: the bytes parser turns a header with non-ASCII
    # bytes (an author's name, a licence text) into an email.header.Header, not a str
    parser = email.parser.Parser(policy=email.policy.compat32)
    out = []
    for meta in sorted(target.glob("*.dist-info/METADATA")):
        msg = parser.parsestr(meta.read_bytes().decode("utf-8", errors="replace"), headersonly=True)
        home = (msg.get("Home-page") or "").strip()
        if not home:
            for url in msg.get_all("Project-URL") or []:
                label, _, link = url.partition(",")
                if label.strip().lower() in ("homepage", "home", "source", "source code", "repository"):
                    home = link.strip()
                    break
        out.append(Distribution(
            name=(msg.get("Name") or meta.parent.name.split("-")[0]).strip(),
            version=(msg.get("Version") or "").strip(),
            license=_license(msg),
            summary=(msg.get("Summary") or "").strip(),
            homepage=home,
            author=(msg.get("Author") or msg.get("Author-email") or "").strip(),
        ))
    return tuple(sorted(out, key=lambda d: d.name.lower()))


def entries(target: Path, dest: str = DEPS_DIR) -> list[Entry]:
    """The folder as layer entries. The installer's bytecode is gone (``finalise``): any
    ``__pycache__`` left is the base interpreter's (``compile_bytecode``)."""
    return tree_entries(target, dest)


# --- bytecode: compiled by the image's own Python ----------------------------------------------

# Checked: the image's Python reads a module's source and compares its hash with the .pyc's
# before using it. Unchecked would skip that read, but measured on examples/django that is
# 7 ms of CPU of a 222 ms start (3%), and it would trust the .pyc blindly: an image.build
# step (which may write /app/deps) or an image made FROM this one that edits a dependency's
# source would then run the old code. Checked, such a module is compiled again in memory, so
# a .pyc never stands for a source it was not made from. The base's stdlib is checked too.
BYTECODE_MODE = "CHECKED_HASH"
# compileall's processes: 0 is one per core. Each file is compiled on its own from its own
# source (a fixed hash seed; marshal's output does not depend on the order or the process),
# so the bytes are the same with any count
BYTECODE_WORKERS = 0


@dataclass(frozen=True)
class Bytecode:
    """Whether the dependency layer gets bytecode, decided from observed facts (pure)."""

    compiler: str | None  # DepsSpec.bytecode: part of the layer's key
    reason: str = ""  # why not, for the warning
    via: str | None = None  # another platform's architecture whose base (same Python) compiles it

    def to_json(self) -> dict:
        return {"compiler": self.compiler, "reason": self.reason}


def bytecode_plan(python_version: str | None, base_chain: str, architecture: str, machine: str,
                  binfmt: dict[str, str], bwrap: str | None, base_files: bool = True,
                  others: dict[str, str | None] | None = None) -> Bytecode:
    """The base's interpreter compiles the dependencies when this machine runs it (its own
    architecture, or qemu-user through binfmt) in bubblewrap, from the base's files
    (``base_files``: its layers are here, or a registry can give them). The compiler's
    identity is the base's full Python version (one bytecode per interpreter version,
    whatever else the base changes), or the base itself when its version is not known.

    A platform this machine cannot run borrows the interpreter of another platform of the
    build (``others``: architecture -> its base's Python version) that it can, when both
    bases name the same version: bytecode does not depend on the architecture (the base's
    arm64 standard library gets amd64's .pyc the same way)."""
    from .sandbox import can_run

    if not base_files:
        return Bytecode(None, "the base's layers are not on this machine and no registry can give them")
    if not can_run(architecture, machine, binfmt):
        via = next((arch for arch, version in sorted((others or {}).items())
                    if python_version and version == python_version and can_run(arch, machine, binfmt)), None)
        if via and bwrap:
            return Bytecode(f"cpython-{python_version}", via=via)
        return Bytecode(None, f"this {machine} machine cannot run the base's linux/{architecture} Python, and no "
                              "other platform of the build has a base with the same Python version "
                              "(register qemu-user with binfmt, or build this platform on its own architecture)")
    if not bwrap:
        return Bytecode(None, "bubblewrap (bwrap) is not installed (apt-get install bubblewrap)")
    return Bytecode(f"cpython-{python_version}" if python_version else f"base-{base_chain.removeprefix('sha256:')}")


def find_interpreter(base_tree: Path, python: str) -> str | None:
    """``pythonX.Y`` in the base's tree, where its PATH would find it first."""
    from .trees import Escape, resolve

    for d in ("usr/local/bin", "usr/bin", "bin"):
        try:
            if resolve(base_tree, f"{d}/python{python}", follow_last=True).is_file():
                return f"/{d}/python{python}"
        except (OSError, Escape):
            continue
    return None


def tree_top(base_tree: Path) -> list[tuple[str, str | None]]:
    """The top-level entries of a tree: (name, symlink target or None)."""
    out = []
    for p in sorted(base_tree.iterdir()):
        if p.is_symlink():
            out.append((p.name, os.readlink(p)))
        elif p.is_dir():
            out.append((p.name, None))
    return out


def drop_bytecode(target: Path) -> None:
    for cache_dir in sorted(target.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache_dir, ignore_errors=True)
    for pyc in target.rglob("*.pyc"):
        pyc.unlink()


def compile_bytecode(target: Path, base_tree: Path, python: str, dest: str = DEPS_DIR,
                     runner=subprocess.run, bwrap: str | None = None) -> tuple[int, str]:
    """Compile every module of ``target`` with the base's own ``pythonX.Y`` (compileall, in
    a sandbox). -> (the .pyc written, "") or (0, why not): then the folder has none, never
    a partial or foreign set."""
    from . import sandbox

    interp = find_interpreter(base_tree, python)
    if interp is None:
        return 0, f"the base has no python{python} in /usr/local/bin, /usr/bin or /bin"
    bwrap = bwrap or shutil.which("bwrap") or "/usr/bin/bwrap"
    argv = sandbox.deps_bytecode_argv(bwrap, base_tree, tree_top(base_tree), interp, target.resolve(), dest,
                                      BYTECODE_MODE, BYTECODE_WORKERS)
    try:
        r = runner(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                   env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        code, out = r.returncode, ((r.stderr or "") + (r.stdout or "")).strip()
    except OSError as e:
        code, out = -1, str(e)
    if code != 0:
        drop_bytecode(target)
        last = out.splitlines()[-1][-300:] if out else "no output"
        return 0, f"python{python} in the sandbox failed (exit {code}): {last}"
    return sum(1 for _ in target.rglob("__pycache__/*.pyc")), ""

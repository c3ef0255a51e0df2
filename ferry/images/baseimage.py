"""ferry's Python base image: a recipe of Debian packages made into an OCI image index.

The flow, for each platform (as apko does with apk packages):

    recipe (ferry/assets/base/python-3.X.toml, package data)
      -> resolve with apt's solver for the architecture      (ferry.images.debian.Apt)
      -> download the exact .debs, checked by SHA256          (cached, shared across arches)
      -> unpack them into one tree, usr-merged                 (ferry.images.rootfs)
      -> do what the maintainer scripts would have done: CA bundle, /etc/localtime,
         passwd/group, the package list scanners read
      -> trim docs, man pages, locales
    then, once for all platforms:
      -> the standard library's bytecode, compiled by the base's own interpreter run from
         the tree of a platform this machine can execute, in a sandbox (bubblewrap); the
         .pyc files are the same for every architecture, so arm64 gets amd64's
    and for each platform:
      -> /etc/ld.so.cache, made by the tree's own ldconfig in the sandbox (arm64's through
         qemu-user): ctypes.util.find_library reads it                 (ferry.images.ldcache)
      -> one reproducible layer + config + manifest            (ferry.images.oci)
    then one index for all platforms, annotated with the recipe hash.

``ensure_base_image`` is what ``ferry local up`` calls: it does nothing when the registry
already holds the tag built from the same recipe, pushes from the local cache when the
registry lost it, and otherwise builds, downloading only the packages not yet cached.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ferry.errors import BuildError, ConfigError
from ferry.images import debian, rootfs
from ferry.images.layers import gzip_bytes
from ferry.images.oci import (OCI_CONFIG, OCI_LAYER_GZIP, Blob, Image, ImageIndex, Platform,
                              canonical_json, sha256)
from ferry.progress import NULL, Progress

# Bump when the assembler's output changes for the same recipe: it is part of the recipe hash,
# so every machine rebuilds once instead of trusting an image made by older code.
# 3: labels naming the suite, the Python and the interpreter; bytecode compiled by the base's
# own interpreter (hash-checked .pyc), so a base for any Python builds on any machine
# 4: /etc/ld.so.cache made by the tree's own ldconfig (ctypes.util.find_library works)
ASSEMBLER_VERSION = "4"

# The Python `ferry local up` always makes; the others are made on request (--python).
DEFAULT_PYTHON = "3.11"

ANNOTATION_RECIPE = "dev.ferry.base.recipe"
ANNOTATION_PACKAGES = "dev.ferry.debian.packages"
ANNOTATION_SUITE = "dev.ferry.debian.suite"
# In every ferry base's config: what the builder checks an app against (basefacts.from_config)
LABEL_SUITE = "dev.ferry.base.suite"              # the Debian suite: "trixie"
LABEL_PYTHON = "dev.ferry.base.python"            # the interpreter's version: "3.13.5"
LABEL_INTERPRETER = "dev.ferry.base.interpreter"  # what console scripts start with
INTERPRETER = "/usr/bin/python3"                  # ferry's bases have no /usr/bin/env
# What manylinux wheels may assume the system has beside glibc (PEP 599 / PEP 600): a base
# without them builds numpy or grpcio images that crash at import.
MANYLINUX_LIBRARIES = ("libgcc-s1", "libstdc++6")

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Jib's convention: the image is "created" at the epoch, files are dated epoch+1 (some tools
# read 0 as "no time").
CREATED = "1970-01-01T00:00:00Z"
MTIME = 1


# --------------------------------------------------------------------------- the recipe

@dataclass(frozen=True)
class Recipe:
    repository: str
    tag: str
    platforms: tuple[str, ...]
    distribution: str
    python: str
    title: str
    install: tuple[str, ...]
    assume_installed: tuple[str, ...]
    only: tuple[tuple[str, tuple[str, ...]], ...]
    drop: tuple[str, ...]
    keep: tuple[str, ...]
    user: rootfs.User
    workdir: str
    cmd: tuple[str, ...]
    timezone: str
    env: tuple[tuple[str, str], ...]
    bytecode: bool = True
    source: str = field(default="", compare=False)

    def to_json(self) -> dict:
        return {
            "image": {"repository": self.repository, "tag": self.tag,
                      "platforms": list(self.platforms), "distribution": self.distribution,
                      "python": self.python, "title": self.title},
            "packages": {"install": list(self.install),
                         "assume_installed": list(self.assume_installed),
                         "only": {k: list(v) for k, v in self.only}},
            "trim": {"drop": list(self.drop), "keep": list(self.keep)},
            "user": {"name": self.user.name, "uid": self.user.uid, "gid": self.user.gid,
                     "home": self.user.home},
            "config": {"workdir": self.workdir, "cmd": list(self.cmd),
                       "timezone": self.timezone, "env": dict(self.env),
                       "bytecode": self.bytecode},
        }

    @property
    def hash(self) -> str:
        """What the image is made from: the recipe's meaning (not its comments or layout)
        and the assembler's version. Equal hashes mean the registry's image can be kept."""
        doc = {"assembler": ASSEMBLER_VERSION, "recipe": self.to_json()}
        return "sha256:" + hashlib.sha256(canonical_json(doc)).hexdigest()


_SCHEMA: dict[str, dict[str, type]] = {
    "image": {"repository": str, "tag": str, "platforms": list, "distribution": str,
              "python": str, "title": str},
    "packages": {"install": list, "assume_installed": list, "only": dict},
    "trim": {"drop": list, "keep": list},
    "user": {"name": str, "uid": int, "gid": int, "home": str},
    "config": {"workdir": str, "cmd": list, "timezone": str, "env": dict, "bytecode": bool},
}
_REQUIRED = {("image", "repository"), ("image", "tag"), ("image", "platforms"),
             ("image", "distribution"), ("image", "python"), ("packages", "install")}


def parse_recipe(text: str, source: str = "recipe") -> Recipe:
    """Read and validate a recipe; every error names the file, the key and the fix."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}", "fix the syntax") from None
    for section, value in doc.items():
        if section not in _SCHEMA:
            raise ConfigError(f"{source}: unknown section [{section}]",
                              f"use one of {', '.join(sorted(_SCHEMA))}")
        for key, v in value.items():
            if key not in _SCHEMA[section]:
                raise ConfigError(f"{source}: unknown key {section}.{key}",
                                  f"use one of {', '.join(sorted(_SCHEMA[section]))}")
            want = _SCHEMA[section][key]
            if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                raise ConfigError(f"{source}: {section}.{key} must be a {want.__name__}",
                                  f"got {v!r}")
    for section, key in sorted(_REQUIRED):
        if key not in doc.get(section, {}):
            raise ConfigError(f"{source}: {section}.{key} is missing", "add it to the recipe")

    img = doc["image"]
    pk = doc.get("packages", {})
    tr = doc.get("trim", {})
    us = doc.get("user", {})
    cf = doc.get("config", {})

    def strings(section: str, key: str, values) -> tuple[str, ...]:
        if not all(isinstance(v, str) and v for v in values):
            raise ConfigError(f"{source}: {section}.{key} must list non-empty strings",
                              f"got {values!r}")
        return tuple(values)

    platforms = strings("image", "platforms", img["platforms"])
    for p in platforms:
        plat = Platform.parse(p)
        if plat.os != "linux" or plat.architecture not in debian.DEB_ARCH:
            raise ConfigError(f"{source}: image.platforms: {p} is not a Debian architecture",
                              "use linux/amd64 or linux/arm64")
    if not platforms:
        raise ConfigError(f"{source}: image.platforms is empty", "list at least linux/amd64")
    install = strings("packages", "install", pk["install"])
    if not install:
        raise ConfigError(f"{source}: packages.install is empty", "list python3 at least")
    only = []
    for name, patterns in sorted(pk.get("only", {}).items()):
        if not isinstance(patterns, list):
            raise ConfigError(f"{source}: packages.only.{name} must be a list of paths",
                              f"got {patterns!r}")
        only.append((name, strings("packages.only", name, patterns)))
    user = rootfs.User(us.get("name", "app"), us.get("uid", 65532), us.get("gid", 65532),
                       us.get("home", "/home/app"))
    if user.uid == 0 or user.gid == 0:
        raise ConfigError(f"{source}: user.uid and user.gid must not be 0",
                          "the base image runs as a non-root user; use 65532")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user.name):
        raise ConfigError(f"{source}: user.name {user.name!r} is not a valid user name",
                          "use lower-case letters, digits, '-' or '_'")
    for key in ("home",):
        if not user.home.startswith("/"):
            raise ConfigError(f"{source}: user.{key} must be an absolute path",
                              f"got {user.home!r}")
    workdir = cf.get("workdir", "/app")
    if not workdir.startswith("/"):
        raise ConfigError(f"{source}: config.workdir must be an absolute path", f"got {workdir!r}")
    env = cf.get("env", {})
    for k, v in env.items():
        if not isinstance(v, str):
            raise ConfigError(f"{source}: config.env.{k} must be a string", f"got {v!r}")
        if k in ("PATH", "PYTHON_VERSION"):
            raise ConfigError(f"{source}: config.env.{k} is set by the assembler",
                              "remove it from the recipe")
    return Recipe(
        repository=img["repository"], tag=img["tag"], platforms=platforms,
        distribution=img["distribution"], python=img["python"],
        title=img.get("title", f"Python {img['python']}"),
        install=install,
        assume_installed=strings("packages", "assume_installed", pk.get("assume_installed", [])),
        only=tuple(only),
        drop=strings("trim", "drop", tr.get("drop", [])),
        keep=strings("trim", "keep", tr.get("keep", [])),
        user=user, workdir=workdir,
        cmd=strings("config", "cmd", cf.get("cmd", ["python3"])),
        timezone=cf.get("timezone", "Etc/UTC"),
        env=tuple(sorted(env.items())),
        bytecode=cf.get("bytecode", True),
        source=source,
    )


def _recipes():
    """The recipes shipped as package data (``ferry/assets/base``), so a wheel install has them."""
    from importlib.resources import files

    return files("ferry").joinpath("assets", "base")


def recipe_name(python: str) -> str:
    return f"python-{python}.toml"


def available_pythons() -> tuple[str, ...]:
    """The Pythons ferry has a base recipe for, oldest first: ("3.11", "3.13", "3.14")."""
    found = []
    for entry in _recipes().iterdir():
        m = re.fullmatch(r"python-(3\.\d+)\.toml", entry.name)
        if m:
            found.append(m.group(1))
    return tuple(sorted(found, key=lambda v: tuple(int(x) for x in v.split("."))))


def load_recipe(path: Path | None = None, python: str = DEFAULT_PYTHON) -> Recipe:
    """A recipe file given by path, or the shipped one for ``python``."""
    if path is None:
        if python not in available_pythons():
            raise ConfigError(f"ferry has no base image recipe for Python {python}",
                              f"use one of {', '.join(available_pythons())}")
        resource = _recipes().joinpath(recipe_name(python))
        try:
            text = resource.read_text()
        except OSError as e:
            raise ConfigError(f"ferry/assets/base/{recipe_name(python)}: cannot read the base image recipe "
                              f"({e.strerror})", "reinstall ferry (the recipes are package data)") from None
        recipe = parse_recipe(text, f"ferry/assets/base/{recipe_name(python)}")
    else:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the base image recipe ({e.strerror})",
                              "restore it from git, or use one of ferry/assets/base/python-3.X.toml") from None
        recipe = parse_recipe(text, str(path))
    return recipe


# --------------------------------------------------------------------------- assembly (pure)

@dataclass(frozen=True)
class Unpacked:
    """One package as the assembler needs it: its files and its control paragraph."""

    package: debian.Package
    entries: tuple[rootfs.Entry, ...]
    control: str


def python_version(packages: list[debian.Package], minor: str) -> str:
    """The real upstream version of the interpreter, e.g. 3.11.2 (from python3.11)."""
    for p in packages:
        if p.name == f"python{minor}":
            return debian.upstream_version(p.version)
    names = ", ".join(p.name for p in packages if p.name.startswith("python3"))
    raise BuildError(f"the resolved packages have no python{minor} (found: {names or 'none'})",
                     "image.python must match the distribution's python3 (bookworm: 3.11, trixie: 3.13, forky: 3.14)")


def check_manylinux(packages: list[debian.Package], where: str) -> None:
    names = {p.name for p in packages}
    missing = [n for n in MANYLINUX_LIBRARIES if n not in names]
    if missing:
        raise BuildError(f"the base for {where} lacks {', '.join(missing)}: manylinux wheels (numpy, grpcio) "
                         "need them", 'keep "libstdc++6" in the recipe\'s packages.install')


def assemble(recipe: Recipe, unpacked: list[Unpacked]) -> rootfs.Tree:
    """The image's root filesystem from the unpacked packages (in name order), without the
    bytecode: that is compiled by the tree's own interpreter (``compile_bytecode``), once
    for all platforms, and added with ``rootfs.add_bytecode``."""
    tree: rootfs.Tree = {}
    only = dict(recipe.only)
    for u in sorted(unpacked, key=lambda u: u.package.name):
        entries = list(u.entries)
        if u.package.name in only:
            entries = rootfs.only(entries, list(only[u.package.name]))
        tree, _ = rootfs.merge(tree, entries)
    tree = post_install(recipe, tree, unpacked)
    tree = rootfs.trim(tree, list(recipe.drop), list(recipe.keep))
    tree = rootfs.add_usrmerge_links(tree)
    return rootfs.ensure_dirs(tree)


def compile_bytecode(recipe: Recipe, trees: dict[str, rootfs.Tree], work: Path,
                     progress: Progress = NULL) -> dict[tuple[str, str], bytes]:
    """The .pyc for every module of every platform's tree, made by the base's own Python.

    The build machine's Python cannot do it (another minor version has another bytecode), so
    the target interpreter runs from the tree of a platform this machine executes (its own
    architecture, or one qemu-user runs through binfmt), in a bubblewrap sandbox with no
    network. Bytecode does not depend on the architecture: the arm64 tree gets the same .pyc
    (its few modules the amd64 tree lacks, like its _sysconfigdata, are compiled in the same
    run). Keyed by (path, sha256 of the source)."""
    from ferry.images import sandbox

    machine = sandbox.machine_architecture()
    binfmt = sandbox.read_binfmt()
    runnable = [p for p in trees if sandbox.can_run(Platform.parse(p).architecture, machine, binfmt)]
    if not runnable:
        raise BuildError(f"the base's bytecode is compiled by its own Python, and this {machine} machine runs none "
                         f"of {', '.join(trees)}",
                         f"add linux/{machine} to the recipe's image.platforms, register qemu-user with binfmt, "
                         "or set bytecode = false in the recipe's [config]")
    bwrap = sandbox.Tools.find_bwrap()
    sources = rootfs.python_sources(trees.values())
    # its own architecture rather than one through emulation
    runner = next((p for p in runnable if Platform.parse(p).architecture == machine), runnable[0])
    progress.info(f"bytecode: {len(sources)} modules compiled by python{recipe.python} from the {runner} tree "
                  "(in a bubblewrap sandbox)")
    root = work / "bytecode-root"
    try:
        rootfs.write_tree(trees[runner], root)
        io_dir = root / rootfs.BYTECODE_DIR
        io_dir.mkdir()
        (io_dir / "compile.py").write_text(rootfs.BYTECODE_SCRIPT)
        items = sorted(sources)
        (io_dir / "in").write_bytes(rootfs.marshal_sources([(path, sources[path, digest]) for path, digest in items]))
        argv = sandbox.bytecode_argv(bwrap, root, f"/usr/bin/python{recipe.python}", rootfs.BYTECODE_DIR)
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout).strip().splitlines()
            raise BuildError(f"compiling the base's bytecode with python{recipe.python} in the sandbox failed "
                             f"(exit {proc.returncode}): {err[-1] if err else 'no output'}",
                             "bubblewrap needs root or unprivileged user namespaces; "
                             "or set bytecode = false in the recipe's [config]")
        pycs = rootfs.unmarshal_pycs((io_dir / "out").read_bytes(), len(items))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {key: pyc for key, pyc in zip(items, pycs) if pyc is not None}


def add_ld_cache(prepared: PlatformTree, cache: Cache, progress: Progress = NULL) -> rootfs.Tree:
    """The tree with the /etc/ld.so.cache its own ldconfig makes (ldcache.py), so
    ``ctypes.util.find_library`` finds libraries by name; a recipe without ldconfig (libc-bin's
    /sbin/ldconfig in [packages.only]) gets none."""
    import tempfile

    from ferry.images import ldcache

    if not ldcache.has_ldconfig(prepared.tree):
        return prepared.tree
    arch = Platform.parse(prepared.platform).architecture
    cache.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ldconfig-", dir=cache.root) as work:
        data = ldcache.for_tree(prepared.tree, arch, Path(work))
    progress.info(f"{arch}: /etc/ld.so.cache made by the tree's own ldconfig ({len(data)} bytes)")
    return ldcache.with_cache(prepared.tree, data)


def post_install(recipe: Recipe, tree: rootfs.Tree, unpacked: list[Unpacked]) -> rootfs.Tree:
    """What the maintainer scripts of a real installation would have left behind."""
    E = rootfs.Entry
    out = dict(tree)
    user = recipe.user
    # ca-certificates' postinst + update-ca-certificates; openssl's /usr/lib/ssl links
    if any(p.startswith("usr/share/ca-certificates/") for p in out):
        out["etc/ssl/certs/ca-certificates.crt"] = E.file("etc/ssl/certs/ca-certificates.crt",
                                                          rootfs.ca_bundle(out))
        out["usr/lib/ssl/certs"] = E.symlink("usr/lib/ssl/certs", "../../../etc/ssl/certs")
        out["usr/lib/ssl/cert.pem"] = E.symlink("usr/lib/ssl/cert.pem",
                                                "../../../etc/ssl/certs/ca-certificates.crt")
    # tzdata's postinst
    if f"usr/share/zoneinfo/{recipe.timezone}" in out:
        out["etc/localtime"] = E.symlink("etc/localtime", f"/usr/share/zoneinfo/{recipe.timezone}")
        out["etc/timezone"] = E.file("etc/timezone", recipe.timezone + "\n")
    # base-passwd's job, with the non-root user the image runs as
    out["etc/passwd"] = E.file("etc/passwd", rootfs.passwd(user))
    out["etc/group"] = E.file("etc/group", rootfs.group(user))
    out["etc/nsswitch.conf"] = E.file("etc/nsswitch.conf", rootfs.NSSWITCH)
    # directories with the modes a running system expects
    for path, mode in (("tmp", 0o1777), ("var/tmp", 0o1777), ("root", 0o700)):
        out[path] = E.dir(path, mode)
    home = user.home.strip("/")
    out[home] = E.dir(home, 0o750, user.uid, user.gid)
    work = recipe.workdir.strip("/")
    out.setdefault(work, E.dir(work))
    # what scanners read to know the Debian packages in a dpkg-less image
    out["var/lib/dpkg/status.d"] = E.dir("var/lib/dpkg/status.d")
    for u in unpacked:
        name = u.package.name
        out[f"var/lib/dpkg/status.d/{name}"] = E.file(f"var/lib/dpkg/status.d/{name}",
                                                      rootfs.dpkg_status_entry(u.control))
    return out


def image_config(recipe: Recipe, platform: Platform, python: str, diff_ids: list[str],
                 packages: list[debian.Package]) -> dict:
    env = {"PATH": PATH, **dict(recipe.env), "PYTHON_VERSION": python}
    return {
        "architecture": platform.architecture,
        "os": platform.os,
        **({"variant": platform.variant} if platform.variant else {}),
        "created": CREATED,
        "config": {
            "User": f"{recipe.user.uid}:{recipe.user.gid}",
            "Env": [f"{k}={v}" for k, v in env.items()],
            "Cmd": list(recipe.cmd),
            "WorkingDir": recipe.workdir,
            "Labels": {
                "org.opencontainers.image.title": recipe.title,
                "org.opencontainers.image.version": python,
                ANNOTATION_RECIPE: recipe.hash,
                LABEL_SUITE: recipe.distribution,
                LABEL_PYTHON: python,
                LABEL_INTERPRETER: INTERPRETER,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{
            "created": CREATED,
            "created_by": f"ferry debian assembler {ASSEMBLER_VERSION}: "
                          f"{len(packages)} {recipe.distribution} packages",
        }],
    }


def package_list(packages: list[debian.Package]) -> str:
    """The SBOM annotation: ``name=version`` of every unpacked package, sorted."""
    return ",".join(f"{p.name}={p.version}" for p in sorted(packages, key=lambda p: p.name))


def oci_platform(platform: str) -> Platform:
    """linux/arm64 is published as linux/arm64/v8, as the official images do."""
    p = Platform.parse(platform)
    if p.architecture == "arm64" and not p.variant:
        return Platform(p.os, p.architecture, "v8")
    return p


# --------------------------------------------------------------------------- the cache

class Cache:
    """Everything a rebuild can reuse, under one directory:

    apt/<arch>/          private apt state (lists, status) for that architecture
    debs/                downloaded .debs (arch ``all`` ones shared by every platform)
    locks/<hash>-<arch>.json   the resolution made for a recipe hash
    blobs/sha256/<hex>   layers, configs, manifests of built images
    images/<hash>.json   the index built from a recipe hash: enough to push it again
    """

    def __init__(self, root: Path):
        self.root = root

    def apt(self, arch: str) -> Path:
        return self.root / "apt" / arch

    @property
    def debs(self) -> Path:
        return self.root / "debs"

    def lock(self, recipe_hash: str, arch: str) -> Path:
        return self.root / "locks" / f"{recipe_hash.split(':')[1][:32]}-{arch}.json"

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest.split(":", 1)[1]

    def put_blob(self, data: bytes) -> Path:
        path = self.blob_path(sha256(data))
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return path

    def image_record(self, recipe_hash: str) -> Path:
        return self.root / "images" / f"{recipe_hash.split(':')[1][:32]}.json"

    @contextlib.contextmanager
    def locked(self, progress: Progress = NULL):
        """One build at a time per cache: apt's private state and the .debs are shared, and
        a second ``ferry local up`` should wait and then find the image already pushed."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                progress.info(f"waiting for another build using {self.root}")
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ferry" / "debian"


def save_index(cache: Cache, recipe_hash: str, index: ImageIndex) -> None:
    """Record how to rebuild ``index`` from cached blobs alone (no apt, no unpacking)."""
    record = {
        "index_annotations": index.annotations,
        "images": [{
            "platform": str(img.platform),
            "annotations": img.annotations,
            "config": img.config.digest,
            "layers": [{"digest": b.digest, "size": b.size} for b in img.layers],
        } for img in index.manifests],
    }
    write_atomic(cache.image_record(recipe_hash), json.dumps(record, indent=1, sort_keys=True))


def load_index(cache: Cache, recipe_hash: str) -> ImageIndex | None:
    path = cache.image_record(recipe_hash)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        images = []
        for r in record["images"]:
            cfg = cache.blob_path(r["config"])
            layers = tuple(Blob(l["digest"], l["size"], OCI_LAYER_GZIP, path=cache.blob_path(l["digest"]))
                           for l in r["layers"])
            if not cfg.exists() or not all(l.path.exists() for l in layers):
                return None
            images.append(Image(Blob.from_bytes(cfg.read_bytes(), OCI_CONFIG), layers,
                                Platform.parse(r["platform"]), annotations=r["annotations"]))
        return ImageIndex(tuple(images), annotations=record["index_annotations"])
    except (KeyError, ValueError, OSError):
        return None


# --------------------------------------------------------------------------- the runner

@dataclass
class PlatformBuild:
    platform: str
    packages: list[debian.Package]
    image: Image
    rootfs_bytes: int
    downloaded: int


def resolve_platform(recipe: Recipe, cache: Cache, arch: str, refresh: bool,
                     progress: Progress) -> list[debian.Package]:
    """The locked package set for one architecture; apt runs only when there is no lock."""
    lock = cache.lock(recipe.hash, arch)
    if lock.exists() and not refresh:
        data = json.loads(lock.read_text())
        return [debian.Package.from_json(p) for p in data["packages"]]
    apt = debian.Apt(cache.apt(arch), debian.DEB_ARCH[arch], recipe.distribution)
    progress.info(f"{arch}: apt-get update ({recipe.distribution})")
    apt.update()
    packages = apt.locate(apt.resolve(list(recipe.install), list(recipe.assume_installed)))
    write_atomic(lock, debian.lock_json(arch, packages))
    return packages


@dataclass
class PlatformTree:
    """One platform's resolved packages and assembled tree, before its bytecode and layer."""

    platform: str
    packages: list[debian.Package]
    python: str
    tree: rootfs.Tree
    downloaded: int


def prepare_platform(recipe: Recipe, cache: Cache, platform: str, refresh: bool,
                     progress: Progress) -> PlatformTree:
    """Resolve, download and unpack one platform's packages into its tree."""
    arch = Platform.parse(platform).architecture
    packages = resolve_platform(recipe, cache, arch, refresh, progress)
    debs_dir = cache.debs
    before = {p.filename for p in packages if (debs_dir / p.filename).exists()}
    missing = [p for p in packages if p.filename not in before]
    if missing:
        progress.info(f"{arch}: downloading {len(missing)} of {len(packages)} packages "
                      f"({sum(p.size for p in missing) / 1e6:.1f} MB)")
        apt = debian.Apt(cache.apt(arch), debian.DEB_ARCH[arch], recipe.distribution)
        apt.prepare()
        if not any((cache.apt(arch) / "state" / "lists").glob("*Packages*")):
            apt.update()
        try:
            paths = apt.download(packages, debs_dir)
        except BuildError:
            # the lists may be older than the lock's versions: refresh once and retry
            apt.update()
            paths = apt.download(packages, debs_dir)
    else:
        paths = [debs_dir / p.filename for p in packages]
        for p, path in zip(packages, paths):
            if path.stat().st_size != p.size:
                raise BuildError(f"cached {p.filename} has the wrong size",
                                 f"delete {path}; it will be downloaded again")
    python = python_version(packages, recipe.python)
    check_manylinux(packages, f"{recipe.repository}:{recipe.tag} {platform}")
    unpacked = []
    for p, path in zip(packages, paths):
        deb = debian.Deb.open(path)
        unpacked.append(Unpacked(p, tuple(rootfs.entries_from_tar(deb.data, p.name)),
                                 deb.control_text))
    return PlatformTree(platform, packages, python, assemble(recipe, unpacked),
                        sum(p.size for p in missing))


def finish_platform(recipe: Recipe, cache: Cache, prepared: PlatformTree,
                    progress: Progress) -> PlatformBuild:
    """The platform's one layer, config and manifest from its tree (bytecode added)."""
    platform, packages, python, tree = prepared.platform, prepared.packages, prepared.python, prepared.tree
    arch = Platform.parse(platform).architecture
    tar = rootfs.tar_bytes(tree, MTIME)
    diff_id = sha256(tar)
    gz = gzip_bytes(tar)
    layer = Blob(sha256(gz), len(gz), OCI_LAYER_GZIP, path=cache.put_blob(gz))
    plat = oci_platform(platform)
    config = canonical_json(image_config(recipe, plat, python, [diff_id], packages))
    cache.put_blob(config)
    image = Image(Blob.from_bytes(config, OCI_CONFIG), (layer,), plat, annotations={
        ANNOTATION_RECIPE: recipe.hash,
        ANNOTATION_PACKAGES: package_list(packages),
        ANNOTATION_SUITE: recipe.distribution,
        "org.opencontainers.image.version": python,
    })
    progress.info(f"{arch}: {len(packages)} packages, rootfs {rootfs.size(tree) / 1e6:.1f} MB, "
                  f"layer {len(gz) / 1e6:.1f} MB")
    return PlatformBuild(platform, packages, image, rootfs.size(tree), prepared.downloaded)


def build_index(recipe: Recipe, cache: Cache, refresh: bool = False,
                progress: Progress = NULL) -> tuple[ImageIndex, list[PlatformBuild]]:
    """Build every platform (two at a time: compression and unpacking release the GIL); the
    bytecode is compiled once, between the trees and the layers."""
    import tempfile

    with ThreadPoolExecutor(max_workers=2) as pool:
        prepared = list(pool.map(lambda p: prepare_platform(recipe, cache, p, refresh, progress),
                                 recipe.platforms))
    if recipe.bytecode:
        cache.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bytecode-", dir=cache.root) as work:
            pycs = compile_bytecode(recipe, {p.platform: p.tree for p in prepared}, Path(work), progress)
        prepared = [_with(p, tree=rootfs.add_bytecode(p.tree, pycs, recipe.python)) for p in prepared]
    prepared = [_with(p, tree=add_ld_cache(p, cache, progress)) for p in prepared]
    with ThreadPoolExecutor(max_workers=2) as pool:
        builds = list(pool.map(lambda p: finish_platform(recipe, cache, p, progress), prepared))
    python = {b.image.annotations["org.opencontainers.image.version"] for b in builds}
    index = ImageIndex(tuple(b.image for b in builds), annotations={
        ANNOTATION_RECIPE: recipe.hash,
        "org.opencontainers.image.title": recipe.title,
        "org.opencontainers.image.version": ",".join(sorted(python)),
    })
    save_index(cache, recipe.hash, index)
    return index, builds


# --------------------------------------------------------------------------- the registry

def registry_state(client, repository: str, tag: str, recipe_hash: str) -> tuple[str, str | None]:
    """("current", digest) when the tag is an index built from this recipe whose manifests
    and blobs are all there; ("stale", digest) when it was built from another recipe or is
    incomplete; ("missing", None) when there is no such tag."""
    info = client.manifest_info(repository, tag)
    if info is None:
        return "missing", None
    data, media_type, digest = client.get_manifest(repository, tag)
    try:
        doc = json.loads(data)
    except ValueError:
        return "stale", digest
    if doc.get("annotations", {}).get(ANNOTATION_RECIPE) != recipe_hash:
        return "stale", digest
    for m in doc.get("manifests", []):
        if not client.manifest_exists(repository, m["digest"]):
            return "stale", digest
        child, _, _ = client.get_manifest(repository, m["digest"])
        cdoc = json.loads(child)
        for blob in [cdoc["config"], *cdoc.get("layers", [])]:
            if not client.blob_exists(repository, blob["digest"]):
                return "stale", digest
    return "current", digest


def push_index(client, repository: str, index: ImageIndex, tag: str,
               progress: Progress = NULL) -> int:
    """Push through the builder's publisher (HEAD checks, parallel uploads, retries; blobs,
    then manifests, then the tag, so an interrupted push never moves the tag). Returns the
    bytes uploaded."""
    from ferry.images.publish import RegistryPublisher

    return RegistryPublisher(client, repository, progress=progress).publish(index, tags=[tag]).bytes_uploaded


def ensure_base_image(registry: str = "127.0.0.1:5000", repository: str | None = None,
                      tag: str | None = None, platforms: tuple[str, ...] | None = None,
                      cache_dir: Path | str | None = None, progress: Progress = NULL,
                      recipe_path: Path | None = None, refresh: bool = False,
                      client=None, python: str = DEFAULT_PYTHON) -> dict:
    """Make sure ``registry/repository:tag`` is the base image the recipe describes (the
    shipped one for ``python`` unless ``recipe_path``; repository and tag default to the
    recipe's, ``ferry/python:3.X``).

    - the registry has it, from the same recipe hash: nothing to do (``action: "none"``);
    - the local cache has the built index: push it again (``"pushed"``), no apt, no unpacking;
    - otherwise build it, downloading only the packages the cache lacks (``"built"``).

    ``refresh=True`` resolves the packages again (to pick up Debian security updates) even
    when a resolution for this recipe is cached.
    """
    t0 = time.monotonic()
    recipe = load_recipe(Path(recipe_path) if recipe_path else None, python)
    repository = repository or recipe.repository
    tag = tag or recipe.tag
    if platforms is not None:
        recipe = _with(recipe, platforms=tuple(platforms))
    cache = Cache(Path(cache_dir) if cache_dir else default_cache_dir())
    ref = f"{registry}/{repository}:{tag}"
    own_client = client is None
    if own_client:
        from ferry.images.registry import RegistryClient

        client = RegistryClient(registry, progress=progress)
    try:
        result = {"image": ref, "recipe": recipe.hash,
                  "platforms": [str(oci_platform(p)) for p in recipe.platforms]}
        state, digest = ("missing", None) if refresh else \
            registry_state(client, repository, tag, recipe.hash)
        if state != "current":
            with cache.locked(progress):
                # another process may have pushed it while this one waited for the lock
                if not refresh:
                    state, digest = registry_state(client, repository, tag, recipe.hash)
                if state != "current":
                    return _make(recipe, cache, client, repository, tag, ref, state, refresh,
                                 result, t0, progress)
        progress.info(f"{ref} is up to date (recipe {recipe.hash[7:19]}): nothing to do")
        return {**result, "action": "none", "digest": digest, "bytes_uploaded": 0,
                "seconds": round(time.monotonic() - t0, 2),
                "message": f"{ref} already built from this recipe"}
    finally:
        if own_client:
            client.close()


def _make(recipe: Recipe, cache: Cache, client, repository: str, tag: str, ref: str, state: str,
          refresh: bool, result: dict, t0: float, progress: Progress) -> dict:
    """Push the cached build of this recipe, or build it; called with the cache locked."""
    index = None if refresh else load_index(cache, recipe.hash)
    builds: list[PlatformBuild] = []
    if index is not None:
        progress.info(f"{ref}: {'stale' if state == 'stale' else 'not'} in the registry; "
                      "pushing the cached build")
        action = "pushed"
    else:
        progress.step(f"assemble {ref} from {recipe.distribution} packages "
                      f"({', '.join(recipe.platforms)})")
        index, builds = build_index(recipe, cache, refresh, progress)
        action = "built"
    sent = push_index(client, repository, index, tag, progress)
    out = {**result, "action": action, "digest": index.digest, "bytes_uploaded": sent,
           "seconds": round(time.monotonic() - t0, 2),
           "images": [{"platform": str(img.platform), "digest": img.digest,
                       "layer_bytes": sum(b.size for b in img.layers),
                       "packages": len(img.annotations.get(ANNOTATION_PACKAGES, "").split(","))}
                      for img in index.manifests]}
    if builds:
        out["downloaded_bytes"] = sum(b.downloaded for b in builds)
    progress.info(f"{ref}@{index.digest} {action} ({sent / 1e6:.1f} MB uploaded)")
    return out


def _with(recipe: Recipe, **changes) -> Recipe:
    from dataclasses import replace

    return replace(recipe, **changes)

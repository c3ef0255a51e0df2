"""The system packages layer: ``image.packages`` (libpq5, sqlite3, ffmpeg) from Debian.

Resolved by apt's own solver in a private apt state (debian.Apt, as the base image is) for
the base's Debian suite and architecture, against what the base already has: ferry's base
lists its packages in a manifest annotation, any other Debian-based base in its
``/var/lib/dpkg/status`` (or distroless' ``status.d``). Those are written into the solver's
synthetic status, so apt unpacks only what is missing. The ``.deb`` files are checked
against the archive's SHA256 and unpacked in Python; no maintainer script runs (the base
assembler's way: rootfs.py), so the layer is the same bytes on any machine.

The step's key is (suite, package set, architecture, the base's layers): the base decides
what is already installed, so the same inputs resolve the same way. The resolution (exact
name=version list) is recorded with the layer and in the image's labels, so a fresh machine
reuses it from the registry without running apt; the layer's bytes are also filed under the
resolution and the base (the layer's /etc/ld.so.cache, made by the base's own ldconfig over
the base and the packages, lists the base's libraries too: ldcache.py).
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Sequence

from ..errors import BuildError
from . import debian, ldcache, rootfs
from .basefacts import BaseFacts
from .cache import Cache
from .layers import GZIP_LEVEL, LayerFile, gzip_bytes
from .oci import canonical_json, sha256
from .steps import Layer, LayerStep, StepContext

RECIPE = "2"  # 2: the layer carries /etc/ld.so.cache over the base and the packages (ldcache.py)
LABEL_INVENTORY = "dev.ferry.packages.inventory"
# what a package may depend on that an image never needs: they only run maintainer scripts
ASSUMED = ("dpkg", "debconf")
DROP = ["usr/share/doc/", "usr/share/man/", "usr/share/info/", "usr/share/lintian/", "usr/share/linda/",
        "usr/share/bug/", "usr/share/doc-base/", "usr/share/menu/"]
KEEP = ["usr/share/doc/*/copyright"]


def suggest(name: str, known: Sequence[str]) -> list[str]:
    """Close matches for an unknown package name (pure)."""
    return difflib.get_close_matches(name, known, n=3, cutoff=0.6)


def unknown_error(unknown: list[str], known: Sequence[str], suite: str, arch: str) -> BuildError:
    parts = []
    for n in unknown:
        close = suggest(n, known)
        parts.append(f"{n!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    what = f"is not a Debian {suite} package" if len(unknown) == 1 else f"are not Debian {suite} packages"
    return BuildError(f"image.packages: {', '.join(parts)} {what} for {arch}",
                      "fix the name in image.packages (apt-cache search WORD on a Debian machine finds it)")


def status_records(facts: BaseFacts, show: Callable[[list[str]], list[dict[str, str]]], arch: str,
                   requested: Sequence[str]) -> list[dict[str, str]]:
    """The synthetic dpkg status for the solver: what the base has, plus ASSUMED (unless asked
    for). Records from a dpkg status are complete; ferry's base names only name=version, so
    architecture, Multi-Arch and Provides come from the archive."""
    have = {r["Package"]: r for r in facts.installed}
    extra = [n for n in ASSUMED if n not in have and n not in requested]
    partial = [n for n, r in have.items() if "Architecture" not in r] + extra
    shown = {r["Package"]: r for r in show(sorted(partial))} if partial else {}
    out = []
    for name in sorted(set(have) | set(extra)):
        rec = dict(shown.get(name, {}))
        rec.update(have.get(name, {}))
        rec.setdefault("Package", name)
        rec.setdefault("Architecture", arch)
        if "Version" not in rec:
            continue  # an assumed package the archive does not have
        out.append(rec)
    return out


def resolution_key(suite: str, arch: str, packages: Sequence[debian.Package], mtime: int, base: str) -> str:
    """The shared layer's key: the resolution, and the base (its libraries are in the layer's
    /etc/ld.so.cache)."""
    return sha256(canonical_json({"recipe": RECIPE, "suite": suite, "architecture": arch, "mtime": mtime,
                                  "gzip": GZIP_LEVEL, "packages": sorted(p.spec for p in packages),
                                  "base": base}))[7:]


def tree_of(unpacked: list[tuple[debian.Package, list[rootfs.Entry], str]]) -> rootfs.Tree:
    """The layer's files (pure): each package's, in name order, trimmed, with the
    status.d record scanners read."""
    tree: rootfs.Tree = {}
    for pkg, entries, _ in sorted(unpacked, key=lambda u: u[0].name):
        tree, _ = rootfs.merge(tree, entries)
    tree = rootfs.trim(tree, DROP, KEEP)
    for pkg, _, control in unpacked:
        path = f"var/lib/dpkg/status.d/{pkg.name}"
        tree[path] = rootfs.Entry.file(path, rootfs.dpkg_status_entry(control))
    return rootfs.ensure_dirs(tree)


@contextlib.contextmanager
def _locked(path: Path):
    """One apt run at a time per private state (two builds may share a cache)."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class PackagesStep(LayerStep):
    kind = "packages"

    def __init__(self, names: Sequence[str], architecture: str, suite: str | None, base_chain: str, mtime: int,
                 facts: Callable[[], BaseFacts], base_ref: str = "the base image"):
        self.names = tuple(sorted(set(names)))
        self.architecture = architecture  # OCI's: amd64, arm64
        self.suite = suite  # known from the base's config; else read from its files when made
        self.base_chain = base_chain
        self.mtime = mtime
        self.facts = facts
        self.base_ref = base_ref

    @property
    def deb_arch(self) -> str:
        try:
            return debian.DEB_ARCH[self.architecture]
        except KeyError:
            raise BuildError(f"no Debian architecture for {self.architecture}", "use linux/amd64 or linux/arm64") from None

    def key(self, below: Sequence[Layer] = ()) -> str:
        return sha256(canonical_json({"recipe": RECIPE, "suite": self.suite, "architecture": self.deb_arch,
                                      "packages": list(self.names), "base": self.base_chain,
                                      "mtime": self.mtime, "gzip": GZIP_LEVEL}))[7:]

    def title(self, ctx: StepContext) -> str:
        return f"packages layer {ctx.platform}"

    def resolve(self, apt: debian.Apt, facts: BaseFacts, suite: str) -> tuple[list[debian.Package], list[str]]:
        """-> (packages to unpack, requested names the base already has)."""
        known = apt._run("apt-cache", "pkgnames").split()
        known_set = set(known)
        unknown = [n for n in self.names if n not in known_set]
        if unknown:
            raise unknown_error(unknown, known, suite, self.deb_arch)
        records = status_records(facts, apt.show, self.deb_arch, self.names)
        (apt.root / "status").write_text(debian.synthetic_status(records))
        packages = debian.parse_simulation(apt._run("apt-get", "--simulate", "--quiet", "install", *self.names))
        had = {r["Package"] for r in records}
        selected = {p.name for p in packages}
        present = [n for n in self.names if n in had and n not in selected]
        return packages, present

    def make(self, ctx, key, below, work):
        facts = self.facts()
        if facts.debian is False or (not facts.suite and facts.debian is not True):
            raise BuildError(f"image.packages: the base image {self.base_ref} is not Debian-based, so Debian "
                             "packages cannot be added to it",
                             "use a Debian-based base (ferry's own, or python:3.x-slim mirrored to your registry) "
                             "or remove image.packages")
        suite = self.suite or facts.suite
        if not suite:
            raise BuildError(f"image.packages: cannot tell which Debian release {self.base_ref} is "
                             "(no dev.ferry.debian.suite label, no VERSION_CODENAME in /etc/os-release)",
                             "use a base built from a Debian release (bookworm, trixie)")
        cache: Cache = ctx.cache
        root = cache.root / "apt" / f"{suite}-{self.deb_arch}"
        with _locked(root):
            apt = debian.Apt(root, self.deb_arch, suite)
            ctx.progress.step(f"Debian packages for {ctx.platform} ({suite}): {', '.join(self.names)}")
            apt.update()
            packages, present = self.resolve(apt, facts, suite)
            if present:
                ctx.progress.info(f"already in the base image: {', '.join(present)}")
            packages = apt.locate(packages) if packages else []
            rkey = resolution_key(suite, self.deb_arch, packages, self.mtime, self.base_chain)
            meta = {"suite": suite, "architecture": self.deb_arch, "packages": [p.to_json() for p in packages],
                    "present": present}
            shared = cache.get("packages-set", rkey)
            if shared:  # another base resolved to the very same set: the same bytes
                copy = work / "layer.tar.gz"
                os.link(shared.path, copy)
                return LayerFile(copy, shared.digest, shared.diff_id, shared.size), meta
            if packages:
                ctx.progress.info(f"downloading {len(packages)} packages "
                                  f"({sum(p.size for p in packages) / 1e6:.1f} MB, cached in {cache.root / 'debs'})")
            paths = apt.download(packages, cache.root / "debs")
        unpacked = []
        for p, path in zip(packages, paths):
            deb = debian.Deb.open(path)
            unpacked.append((p, rootfs.entries_from_tar(deb.data, p.name), deb.control_text))
        tree = tree_of(unpacked)
        if packages:
            tree = self.with_ld_cache(ctx, tree, work)
            meta["ld_cache"] = ldcache.CACHE in tree
        tar = rootfs.tar_bytes(tree, self.mtime)
        gz = gzip_bytes(tar)
        path = work / "layer.tar.gz"
        path.write_bytes(gz)
        lf = LayerFile(path, sha256(gz), sha256(tar), len(gz))
        os.link(path, work / "set.tar.gz")
        cache.put("packages-set", rkey, work / "set.tar.gz", lf.digest, lf.diff_id, lf.size)
        return lf, meta

    def with_ld_cache(self, ctx, tree: rootfs.Tree, work: Path) -> rootfs.Tree:
        """The layer's files plus the /etc/ld.so.cache the base's ldconfig makes over the base
        and these packages (stacked by overlayfs, as image.build is): the base's own cache
        does not know the new libraries, and ctypes.util.find_library reads only the cache."""
        from . import sandbox
        from .buildstep import scaffold

        base_tree = ctx.base_tree()
        if not (ldcache.has_ldconfig(tree) or any((base_tree / p).is_file() for p in ("usr/sbin/ldconfig", "sbin/ldconfig"))):
            ctx.progress.info(f"{self.base_ref} has no /sbin/ldconfig: ctypes.util.find_library will not find the "
                              "packages' libraries (rebuild ferry's base with `ferry local up`)")
            return tree
        argv = ldcache.command(self.architecture)
        tools = sandbox.Tools.find()
        pkgs, low, upper, ovl, root = (work / d for d in ("ld-packages", "ld-scaffold", "ld-upper", "ld-work", "ld-root"))
        rootfs.write_tree(ldcache.subset(tree), pkgs)
        scaffold(low)
        ldcache.place_emulator(argv, self.architecture, low)
        for d in (upper, ovl, root):
            d.mkdir()
        step = sandbox.Step(argv, 0, 0, {"LC_ALL": "C"}, "/", False)
        cmd, env = sandbox.command(tools, [pkgs, base_tree, low], upper, ovl, root, step, as_root=os.geteuid() == 0)
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", env=env)
        try:
            ldcache.check(proc, f"{self.base_ref} and image.packages")
            path = upper / ldcache.CACHE
            if not path.is_file():
                raise BuildError(f"ldconfig wrote no /{ldcache.CACHE} over {self.base_ref} and image.packages",
                                 "report the base image and the package set")
            data = path.read_bytes()
        finally:
            for d in (pkgs, low, upper, ovl, root):
                shutil.rmtree(d, ignore_errors=True)
        ctx.progress.info(f"/etc/ld.so.cache for the base and the packages ({len(data)} bytes)")
        return ldcache.with_cache(tree, data)

    def summary(self, meta: dict) -> str:
        return f", {len(meta.get('packages', []))} Debian packages from {meta.get('suite')}"

    def labels(self, key, digest, meta):
        inventory = ",".join(sorted(f"{p['name']}={p['version']}" for p in meta.get("packages", [])))
        return {**super().labels(key, digest, meta), LABEL_INVENTORY: inventory}

    def meta_from_labels(self, labels):
        text = labels.get(LABEL_INVENTORY)
        if text is None:
            return None
        packages = []
        for item in filter(None, text.split(",")):
            name, sep, version = item.partition("=")
            if not sep:
                return None
            packages.append({"name": name, "version": version, "architecture": self.deb_arch})
        return {"suite": self.suite, "architecture": self.deb_arch, "packages": packages}

    def layer(self, key, blob, diff_id, origin, meta):
        names = ", ".join(self.names)
        return Layer("packages", key, blob, diff_id, origin, f"ferry: Debian packages ({names})",
                     self.labels(key, blob.digest, meta), dict(meta))

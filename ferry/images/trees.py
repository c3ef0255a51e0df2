"""Image layers unpacked on the build machine, for the few steps that need their files.

Most builds never download a base layer. Two things do: a build step (``image.build``) runs
over the image's assembled filesystem, and a foreign base's ``/var/lib/dpkg/status`` tells the
packages step what it already has. For those, the base's layers are downloaded once per base
(into the local cache's blobs) and unpacked, top over bottom, into one tree:

    <cache>/trees/base-<chain id>/     the base's filesystem, OCI whiteouts applied
    <cache>/trees/layer-<diff_id>/     one of ferry's own layers (packages, deps, source)

Trees are made in a temporary directory and renamed into place, so a tree that exists is
complete; they are never written afterwards (the build step stacks them read-only under an
overlay). Unpacking never follows a symlink out of the tree: every path is resolved inside
the tree's root, as a chroot would.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import time
from pathlib import Path
from typing import Callable, Iterable

from ..errors import BuildError
from ..progress import NULL, Progress, human_bytes
from .cache import Cache
from .oci import Blob

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
KEEP_LAYER_TREES = 8  # ferry layer trees kept, most recently used first
KEEP_BASE_TREES = 3


def chain_id(diff_ids: Iterable[str]) -> str:
    """The OCI ChainID of a stack of layers: names the filesystem they make together."""
    chain = None
    for d in diff_ids:
        chain = d if chain is None else "sha256:" + hashlib.sha256(f"{chain} {d}".encode()).hexdigest()
    if chain is None:
        raise ValueError("no layers")
    return chain


class Escape(BuildError):
    pass


def _parts(rel: str, clamp: bool = False) -> list[str]:
    """Path components; ``..`` above the root is refused (a member's name), or with ``clamp``
    stays at the root (a symlink's target, as in a chroot)."""
    out = []
    for p in rel.replace("\\", "/").split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if not out and clamp:
                continue
            if not out:
                raise Escape(f"layer path {rel!r} leaves the root", "the layer is damaged or hostile; do not use it")
            out.pop()
            continue
        out.append(p)
    return out


def resolve(root: Path, rel: str, follow_last: bool = False, _depth: int = 0) -> Path:
    """``rel`` inside ``root`` as a chroot at ``root`` would find it: symlinks in the path (and
    the last component if ``follow_last``) are followed, absolute targets start at ``root``,
    and ``..`` never climbs above it."""
    if _depth > 40:
        raise Escape(f"too many levels of symbolic links at {rel!r}", "the layer's symlinks loop")
    done: list[str] = []
    parts = _parts(rel, clamp=_depth > 0)
    for i, name in enumerate(parts):
        candidate = root.joinpath(*done, name)
        last = i == len(parts) - 1
        if (not last or follow_last) and candidate.is_symlink():
            target = os.readlink(candidate)
            base = "" if target.startswith("/") else "/".join(done)
            rest = "/".join(parts[i + 1:])
            joined = "/".join(p for p in (base, target.lstrip("/"), rest) if p)
            return resolve(root, joined, follow_last, _depth + 1)
        done.append(name)
    return root.joinpath(*done) if done else root


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def unpack(tar: tarfile.TarFile, root: Path, owners: bool | None = None) -> int:
    """Apply one layer over ``root``: OCI whiteouts delete what lower layers put there, an
    opaque whiteout hides a directory's lower content. Returns the bytes written. Devices and
    fifos are skipped (an image's /dev comes from the runtime)."""
    owners = (os.geteuid() == 0) if owners is None else owners
    made: set[str] = set()  # paths this layer wrote: its own whiteouts never remove them
    written = 0
    for m in tar:
        parts = _parts(m.name)
        if not parts:
            continue
        rel = "/".join(parts)
        parent_rel, name = "/".join(parts[:-1]), parts[-1]
        parent = resolve(root, parent_rel, follow_last=True) if parent_rel else root
        if name == OPAQUE:
            if parent.is_dir():
                for child in list(parent.iterdir()):
                    if f"{parent_rel}/{child.name}".lstrip("/") not in made:
                        _remove(child)
            continue
        if name.startswith(WHITEOUT):
            hidden = name[len(WHITEOUT):]
            target = parent / hidden
            if f"{parent_rel}/{hidden}".lstrip("/") not in made and (target.exists() or target.is_symlink()):
                _remove(target)
            continue
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / name
        exists = path.exists() or path.is_symlink()
        if m.isdir():
            if exists and (path.is_symlink() or not path.is_dir()):
                _remove(path)
            path.mkdir(exist_ok=True)
        elif m.isreg() or m.islnk() or m.issym():
            if exists:
                _remove(path)
            if m.issym():
                os.symlink(m.linkname, path)
            elif m.islnk():
                target = resolve(root, m.linkname)
                if not target.is_file() or target.is_symlink():
                    raise BuildError(f"layer hard link {rel} points at {m.linkname}, which is not a file before it",
                                     "the layer is damaged; rebuild the image it comes from")
                os.link(target, path)
                made.add(rel)
                continue
            else:
                src = tar.extractfile(m)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                        written += len(chunk)
        else:
            continue  # char/block devices, fifos
        if owners:
            os.lchown(path, m.uid, m.gid)
        if not m.issym():
            os.chmod(path, stat.S_IMODE(m.mode))
        # the layer's times: bytecode is checked against its source's mtime (ferry's base
        # precompiles the standard library against mtime 1)
        os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
        made.add(rel)
    return written


class Trees:
    """Unpacked trees in the local cache (see the module's docstring)."""

    def __init__(self, cache: Cache, fetch_blob: Callable[[Blob], Path] | None, progress: Progress = NULL):
        self.cache = cache
        self.fetch_blob = fetch_blob
        self.progress = progress
        self.root = cache.root / "trees"

    def blob_file(self, blob: Blob) -> Path:
        """The layer's compressed bytes on this machine: the cache's copy, or downloaded once."""
        if blob.path is not None and blob.path.is_file():
            return blob.path
        local = self.cache.blob_path(blob.digest)
        if local.is_file() and local.stat().st_size == blob.size:
            return local
        if self.fetch_blob is None:
            raise BuildError(f"layer {blob.digest[:19]} is not on this machine and there is no registry to fetch it from",
                             "build with a registry target (or keep the local cache)")
        self.progress.info(f"downloading layer {blob.digest[7:19]} ({human_bytes(blob.size)}) from {blob.source}")
        return self.fetch_blob(blob)

    def _make(self, name: str, blobs: list[Blob], what: str) -> Path:
        final = self.root / name
        if final.is_dir():
            os.utime(final)  # most recently used
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        files = [self.blob_file(b) for b in blobs]
        work = self.cache.tmpdir("tree-")
        t0 = time.monotonic()
        try:
            tree = work / "root"
            tree.mkdir()
            written = 0
            for f in files:
                try:
                    with tarfile.open(f, mode="r|*") as tar:
                        written += unpack(tar, tree)
                except (tarfile.TarError, EOFError, OSError) as e:
                    raise BuildError(f"cannot unpack {what} layer {f.name[:12]}: {e}",
                                     f"delete {f} from the cache; it is downloaded again") from None
            try:
                os.rename(tree, final)
            except OSError:
                if not final.is_dir():  # another build made it meanwhile: use theirs
                    raise
        finally:
            self.cache.discard(work)
        self.progress.info(f"{what}: unpacked {len(files)} layers ({human_bytes(written)}) in "
                           f"{time.monotonic() - t0:.1f} s")
        return final

    def base(self, layers: tuple[Blob, ...], diff_ids: tuple[str, ...]) -> Path:
        """The base's filesystem: its layers unpacked bottom to top, whiteouts applied."""
        return self._make("base-" + chain_id(diff_ids)[7:], list(layers), "base image")

    def layer(self, blob: Blob, diff_id: str) -> Path:
        """One of ferry's own layers on its own (a lower directory of the build's overlay)."""
        return self._make("layer-" + diff_id[7:], [blob], f"layer {blob.digest[7:19]}")

    def prune(self, keep: int = KEEP_LAYER_TREES, keep_bases: int = KEEP_BASE_TREES) -> None:
        """Drop all but the most recently used trees: ``keep`` of ferry's layers (cheap to
        unpack again), ``keep_bases`` bases (their layers stay in the cache's blobs)."""
        if not self.root.is_dir():
            return
        for prefix, n in (("layer-", keep), ("base-", keep_bases)):
            trees = sorted((p for p in self.root.iterdir() if p.name.startswith(prefix)),
                           key=lambda p: p.stat().st_mtime, reverse=True)
            for p in trees[n:]:
                shutil.rmtree(p, ignore_errors=True)


def reader(root: Path) -> tuple[Callable[[str], bytes | None], Callable[[str], list[str]]]:
    """``read(path)`` and ``listdir(path)`` over a tree, resolving symlinks inside it."""

    def read(rel: str) -> bytes | None:
        try:
            p = resolve(root, rel, follow_last=True)
            return p.read_bytes() if p.is_file() else None
        except (OSError, Escape):
            return None

    def listdir(rel: str) -> list[str]:
        try:
            p = resolve(root, rel, follow_last=True)
            return sorted(os.listdir(p)) if p.is_dir() else []
        except (OSError, Escape):
            return []

    return read, listdir

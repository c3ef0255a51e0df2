"""Reproducible layer archives: the same files give the same bytes on any machine.

A layer is a tar of entries, gzip-compressed. Everything that could leak the build machine
into the bytes is fixed here:

- entries sorted by path, every parent directory present (so an extractor never invents one
  with its own mode or time);
- mtime = SOURCE_DATE_EPOCH or 1 (not 0: some tools treat 0 as "unknown"), uid/gid 0, no user
  or group names, modes reduced to 0755 (directories and anything executable) or 0644;
- PAX headers only for what USTAR cannot hold (long or non-ASCII paths), never times or ids;
- gzip with a fixed level, mtime 0 in its header, no file name, OS byte 255.

Caveat: the gzip bytes come from zlib. zlib's output is deterministic for the same zlib
version and level, and has been stable across 1.2.x releases for these settings, but a
future zlib (or a different implementation such as zlib-ng) may compress differently. The
*uncompressed* tar (the layer's diff_id) is stable regardless; the compressed digest is what
the registry sees. Compressed layers are cached locally by input hash, so one machine never
recompresses an unchanged layer.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

GZIP_LEVEL = 6
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE


def epoch(environ: dict[str, str] | None = None) -> int:
    """The fixed timestamp for every entry: SOURCE_DATE_EPOCH (reproducible-builds.org) or 1."""
    env = os.environ if environ is None else environ
    raw = env.get("SOURCE_DATE_EPOCH", "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            from ..errors import BuildError

            raise BuildError(f"SOURCE_DATE_EPOCH={raw!r} is not a number of seconds",
                             "set it to an integer such as $(git log -1 --format=%ct), or unset it") from None
        if value >= 0:
            return value
    return 1


def normalise_mode(st_mode: int) -> int:
    """0755 for directories and anything with an execute bit, else 0644: the host's umask and
    checkout tool must not change the digest."""
    if stat.S_ISDIR(st_mode) or st_mode & 0o111:
        return 0o755
    return 0o644


@dataclass(frozen=True)
class Entry:
    """One member of a layer. ``path`` is relative to / without a leading slash."""

    path: str
    kind: str = "file"  # "file" | "dir" | "symlink"
    mode: int = 0o644
    source: Path | None = None  # a file on disk, read when the tar is written
    data: bytes | None = None  # or the content itself
    target: str = ""  # symlink target

    @property
    def size(self) -> int:
        if self.kind != "file":
            return 0
        if self.data is not None:
            return len(self.data)
        assert self.source is not None
        return self.source.stat().st_size

    def open(self) -> BinaryIO:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.source is not None
        return open(self.source, "rb")


def directory(path: str) -> Entry:
    return Entry(path.strip("/"), "dir", 0o755)


def complete(entries: Iterable[Entry]) -> list[Entry]:
    """Add every missing parent directory and sort by path; a path given twice is an error
    (the later one would silently win inside the image)."""
    by_path: dict[str, Entry] = {}
    for e in entries:
        p = e.path.strip("/")
        if not p:
            continue
        if p in by_path and by_path[p] != e:
            raise ValueError(f"two layer entries for {p!r}")
        by_path[p] = e if p == e.path else Entry(p, e.kind, e.mode, e.source, e.data, e.target)
    for p in list(by_path):
        parts = p.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            by_path.setdefault(parent, directory(parent))
    # sort by path components so "a/b" comes right after "a" and before "a.txt"'s siblings
    return [by_path[p] for p in sorted(by_path, key=lambda s: s.split("/"))]


def _header(e: Entry, mtime: int) -> bytes:
    ti = tarfile.TarInfo(e.path + ("/" if e.kind == "dir" else ""))
    ti.mtime = int(mtime)
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.mode = e.mode
    if e.kind == "dir":
        ti.type = tarfile.DIRTYPE
    elif e.kind == "symlink":
        ti.type = tarfile.SYMTYPE
        ti.linkname = e.target
    else:
        ti.type = tarfile.REGTYPE
        ti.size = e.size
    return ti.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


class _Counting:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, sink: BinaryIO | None):
        self.sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, b) -> int:
        self.hash.update(b)
        self.size += len(b)
        if self.sink is not None:
            self.sink.write(b)
        return len(b)

    def flush(self) -> None:
        if self.sink is not None:
            self.sink.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def write_tar(entries: Iterable[Entry], out, mtime: int) -> None:
    """Write entries (already complete and sorted) as a tar stream to ``out``."""
    written = 0
    for e in entries:
        hdr = _header(e, mtime)
        out.write(hdr)
        written += len(hdr)
        if e.kind == "file":
            expected = e.size
            n = 0
            with e.open() as f:
                while chunk := f.read(1 << 20):
                    out.write(chunk)
                    n += len(chunk)
            if n != expected:
                raise OSError(f"{e.source or e.path} changed size while it was being archived")
            written += n
            if n % BLOCK:
                pad = BLOCK - n % BLOCK
                out.write(b"\0" * pad)
                written += pad
    out.write(b"\0" * (2 * BLOCK))
    written += 2 * BLOCK
    if written % RECORD:
        out.write(b"\0" * (RECORD - written % RECORD))


def tar_bytes(entries: Iterable[Entry], mtime: int = 1) -> bytes:
    buf = io.BytesIO()
    write_tar(complete(entries), buf, mtime)
    return buf.getvalue()


@dataclass(frozen=True)
class LayerFile:
    """A compressed layer written to disk: ``digest`` names the gzip bytes (what registries
    store), ``diff_id`` the uncompressed tar (what the image config lists)."""

    path: Path
    digest: str
    diff_id: str
    size: int


def write_layer(entries: Iterable[Entry], dest: Path, mtime: int, level: int = GZIP_LEVEL) -> LayerFile:
    """Write the gzip-compressed tar of ``entries`` to ``dest``, hashing both forms on the way."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as raw:
        compressed = _Counting(raw)
        # filename="" and mtime=0: the gzip header must not carry the host's file name or clock
        with gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=compressed, mtime=0) as gz:
            uncompressed = _Counting(gz)
            write_tar(complete(entries), uncompressed, mtime)
    return LayerFile(dest, compressed.digest, uncompressed.digest, compressed.size)


def gzip_bytes(data: bytes, level: int = GZIP_LEVEL) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=buf, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def tree_entries(root: Path, dest: str, skip=None) -> list[Entry]:
    """Entries for every file, directory and symlink under ``root``, placed under ``dest``.

    ``skip(rel_path, is_dir)`` returns True for paths to leave out (a skipped directory's
    content is not visited). Sockets, FIFOs and devices are never part of a layer."""
    dest = dest.strip("/")
    out: list[Entry] = [directory(dest)] if dest else []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        keep = []
        for d in sorted(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if skip and skip(rel, True):
                continue
            full = Path(dirpath) / d
            arc = f"{dest}/{rel}" if dest else rel
            if full.is_symlink():
                out.append(Entry(arc, "symlink", 0o777, target=os.readlink(full)))
                continue  # os.walk does not follow it either
            out.append(Entry(arc, "dir", 0o755))
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if skip and skip(rel, False):
                continue
            full = Path(dirpath) / name
            arc = f"{dest}/{rel}" if dest else rel
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                out.append(Entry(arc, "symlink", 0o777, target=os.readlink(full)))
            elif stat.S_ISREG(st.st_mode):
                out.append(Entry(arc, "file", normalise_mode(st.st_mode), source=full))
    return out


def file_digest(e: Entry) -> bytes:
    fh = hashlib.sha256()
    with e.open() as f:
        while chunk := f.read(1 << 20):
            fh.update(chunk)
    return fh.digest()


def content_key(entries: Iterable[Entry], digests: "StatCache | None" = None) -> str:
    """A hash of what a layer would contain (paths, kinds, modes, bytes): the cache key that
    lets an unchanged layer skip compression entirely. ``digests`` remembers files' digests
    by their stat, so an unchanged file is not read again."""
    h = hashlib.sha256()
    for e in complete(entries):
        h.update(f"{e.kind}\0{e.path}\0{e.mode:o}\0{e.target}\0".encode("utf-8", "surrogateescape"))
        if e.kind == "file":
            h.update(digests.digest(e) if digests is not None and e.source is not None else file_digest(e))
    return h.hexdigest()


class StatCache:
    """Files' SHA-256 by (path, size, mtime, ctime, inode), as git's index keeps them: a file
    whose stat is unchanged is not read again; any difference (an edit, a touch, a copy, a
    replace by rename) reads and hashes it. Like git's "racily clean" rule, a file changed less
    than ``RACY`` seconds before it was hashed is never trusted from its stat alone: a second
    write within the filesystem's timestamp granularity would not change it."""

    RACY = 2.0

    def __init__(self, path: Path | None):
        self.path = path
        self.old: dict[str, list] = {}
        self.new: dict[str, list] = {}
        self.hashed = 0
        if path is not None:
            try:
                import json

                loaded = json.loads(path.read_text())
                self.old = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self.old = {}

    def digest(self, e: Entry) -> bytes:
        import time

        src = str(e.source)
        st = os.stat(src)
        sig = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        rec = self.old.get(src)
        if rec is not None and rec[:4] == sig:
            self.new[src] = rec
            return bytes.fromhex(rec[4])
        d = file_digest(e)
        self.hashed += 1
        if time.time() - st.st_mtime > self.RACY:
            self.new[src] = [*sig, d.hex()]
        return d

    def save(self) -> None:
        """Keep what this walk saw (files gone since are dropped); best effort: a cache."""
        if self.path is None or self.new == self.old:
            return
        import json

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.new, separators=(",", ":")))
            os.replace(tmp, self.path)
        except OSError:
            pass

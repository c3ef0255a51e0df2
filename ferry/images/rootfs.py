"""A root filesystem held in memory: what the base image's layer is made of.

The tree is a plain ``dict[path, Entry]`` (paths relative, no leading slash). Every step is a
pure function from tree to tree, so each of them (usrmerge, trimming, the files dpkg's
maintainer scripts would have written) is unit-tested without touching the disk, and the
tar written from a tree is the same bytes on any machine.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass, replace
from typing import Iterable

from ferry.errors import BuildError

FILE, DIR, SYMLINK = "file", "dir", "symlink"

# Top-level directories that bookworm's usrmerge turns into symlinks into /usr.
MERGED_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
ALWAYS_LINKED = ("bin", "sbin", "lib")


@dataclass(frozen=True)
class Entry:
    path: str
    kind: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    target: str = ""
    package: str | None = None

    @classmethod
    def dir(cls, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> "Entry":
        return cls(path, DIR, mode, uid, gid)

    @classmethod
    def file(cls, path: str, data: bytes | str, mode: int = 0o644, uid: int = 0,
             gid: int = 0) -> "Entry":
        return cls(path, FILE, mode, uid, gid, data.encode() if isinstance(data, str) else data)

    @classmethod
    def symlink(cls, path: str, target: str) -> "Entry":
        return cls(path, SYMLINK, 0o777, target=target)


Tree = dict[str, Entry]


def normalise(name: str) -> str:
    """``./usr/bin/`` -> ``usr/bin``; the archive root becomes ``""``."""
    path = posixpath.normpath("/" + name).lstrip("/")
    return "" if path in (".", "") else path


def usrmerge(path: str) -> str:
    """Where a path lands on a merged-/usr system: ``lib/x`` is really ``usr/lib/x``."""
    head, _, rest = path.partition("/")
    if head in MERGED_DIRS:
        return f"usr/{head}" + (f"/{rest}" if rest else "")
    return path


def entries_from_tar(tar: tarfile.TarFile, package: str) -> list[Entry]:
    """A package's data tarball as entries, paths already usr-merged.

    Hard links become copies of their target (dpkg would link them; a copy keeps the layer
    independent of entry order). Device nodes and fifos have no place in an image.
    """
    out: list[Entry] = []
    contents: dict[str, tuple[bytes, int]] = {}
    for info in tar:
        path = usrmerge(normalise(info.name))
        if not path:
            continue
        mode = stat.S_IMODE(info.mode)
        if info.isdir():
            out.append(Entry(path, DIR, mode, info.uid, info.gid, package=package))
        elif info.isreg():
            f = tar.extractfile(info)
            data = f.read() if f else b""
            contents[path] = (data, mode)
            out.append(Entry(path, FILE, mode, info.uid, info.gid, data, package=package))
        elif info.issym():
            out.append(Entry(path, SYMLINK, 0o777, info.uid, info.gid, target=info.linkname,
                             package=package))
        elif info.islnk():
            target = usrmerge(normalise(info.linkname))
            if target not in contents:
                raise BuildError(f"{package}: hard link {path} to missing {target}",
                                 "the package is damaged; delete it from the cache")
            data, target_mode = contents[target]  # one inode: the target's mode too
            out.append(Entry(path, FILE, target_mode, info.uid, info.gid, data, package=package))
    return out


def merge(tree: Tree, entries: Iterable[Entry]) -> tuple[Tree, list[str]]:
    """Unpack entries over a tree as dpkg would; returns the new tree and overwritten files.

    A directory already present keeps its first owner and mode (dpkg does not change them).
    """
    out = dict(tree)
    overwritten = []
    for e in entries:
        old = out.get(e.path)
        if old is not None and old.kind == DIR and e.kind == DIR:
            continue
        if old is not None and old.kind != DIR and old.package != e.package:
            overwritten.append(e.path)
        out[e.path] = e
    return out, overwritten


def add_usrmerge_links(tree: Tree) -> Tree:
    """``/bin -> usr/bin`` etc., as bookworm's usrmerge has them (lib64 only where used)."""
    out = dict(tree)
    used = {p.split("/")[1] for p in tree if p.startswith("usr/") and p.count("/") >= 1}
    for d in MERGED_DIRS:
        if d in ALWAYS_LINKED or d in used:
            if f"usr/{d}" not in out:
                out[f"usr/{d}"] = Entry.dir(f"usr/{d}")
            out[d] = Entry.symlink(d, f"usr/{d}")
    if "usr" not in out:
        out["usr"] = Entry.dir("usr")
    return out


def _matches(path: str, pattern: str) -> bool:
    """``dir/`` means the directory and all below it; otherwise fnmatch (``*`` crosses /)."""
    if pattern.endswith("/"):
        base = pattern.rstrip("/")
        return fnmatch.fnmatchcase(path, base) or fnmatch.fnmatchcase(path, base + "/*")
    return fnmatch.fnmatchcase(path, pattern)


def only(entries: list[Entry], patterns: list[str]) -> list[Entry]:
    """The entries matching any pattern, plus the directories that lead to them."""
    kept = [e for e in entries if any(_matches(e.path, p) for p in patterns)]
    return kept + _parents_of(kept, {e.path: e for e in entries})


def trim(tree: Tree, drop: list[str], keep: list[str]) -> Tree:
    """Remove what matches ``drop`` unless it matches ``keep`` (docs, man pages, locales)."""
    out = {p: e for p, e in tree.items()
           if not any(_matches(p, d) for d in drop) or any(_matches(p, k) for k in keep)}
    # a kept file's directories stay, as the packages shipped them
    for parent in _parents_of(list(out.values()), tree):
        if parent.path in tree:
            out.setdefault(parent.path, parent)
    return out


def _parents_of(entries: list[Entry], source: dict[str, Entry]) -> list[Entry]:
    have = {e.path for e in entries}
    parents: dict[str, Entry] = {}
    for e in entries:
        p = posixpath.dirname(e.path)
        while p and p not in have and p not in parents:
            parents[p] = source.get(p) or Entry.dir(p)
            p = posixpath.dirname(p)
    return list(parents.values())


def ensure_dirs(tree: Tree) -> Tree:
    """Every path's parent directories exist (tar readers and runc expect them)."""
    out = dict(tree)
    for parent in _parents_of(list(tree.values()), tree):
        out.setdefault(parent.path, parent)
    return out


# --------------------------------------------------------------------------- users

@dataclass(frozen=True)
class User:
    name: str = "app"
    uid: int = 65532
    gid: int = 65532
    home: str = "/home/app"
    shell: str = "/usr/sbin/nologin"


def passwd(user: User) -> str:
    """root, the app user and nobody; no passwords, no login shells."""
    return (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"{user.name}:x:{user.uid}:{user.gid}:{user.name}:{user.home}:{user.shell}\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )


def group(user: User) -> str:
    return f"root:x:0:\n{user.name}:x:{user.gid}:\nnogroup:x:65534:\n"


NSSWITCH = """\
# /etc/hosts first: without this file glibc asks DNS before /etc/hosts
passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      files
services:       files
ethers:         files
rpc:            files
"""


def ca_bundle(tree: Tree, source_dir: str = "usr/share/ca-certificates") -> bytes:
    """What update-ca-certificates writes to /etc/ssl/certs/ca-certificates.crt.

    ca-certificates' postinst enables every certificate it ships (ca-certificates.conf lists
    ``find -name '*.crt' | sort`` under /usr/share/ca-certificates); the script then
    concatenates them in that order, adding a final newline where one is missing.
    """
    prefix = source_dir.rstrip("/") + "/"
    certs = sorted(p for p, e in tree.items()
                   if p.startswith(prefix) and p.endswith(".crt") and e.kind == FILE)
    if not certs:
        raise BuildError("no certificates under /" + source_dir,
                         "keep ca-certificates in the recipe's packages")
    out = bytearray()
    for p in certs:
        data = tree[p].data
        out += data if data.endswith(b"\n") else data + b"\n"
    return bytes(out)


def dpkg_status_entry(control_text: str) -> bytes:
    """The package's control paragraph as installed (``Status:`` added after Package).

    Written to /var/lib/dpkg/status.d/<package> as distroless does, so vulnerability
    scanners (trivy, grype, syft) see which Debian packages are in the image even though
    dpkg itself is not.
    """
    lines = control_text.strip("\n").splitlines()
    out = []
    for line in lines:
        out.append(line)
        if line.startswith("Package:"):
            out.append("Status: install ok installed")
    return ("\n".join(out) + "\n").encode()


# --------------------------------------------------------------------------- bytecode

# Where the sandboxed interpreter finds its input and writes its output, inside the root.
BYTECODE_DIR = ".ferry-bytecode"

# Run by the base's own interpreter (``python3.X -I -S -B``): it compiles each (path, source)
# it is given, as py3compile would have in the postinst, into a hash-checked .pyc.
#  * checked-hash (PEP 552), not a timestamp: the bytes do not depend on any mtime, and a
#    later layer that replaces a module (a newer Debian package) is noticed by its content;
#  * marshal format 2: format 3+ marks objects referenced more than once by looking at their
#    reference counts, which depend on what else the process holds, so the same source could
#    give different bytes from one build to the next. Format 2 has no back-references.
# A source that does not compile (lib2to3's Python 2 test data) gives None: the interpreter
# would not compile it either.
BYTECODE_SCRIPT = """\
import importlib.util, marshal, sys, warnings
warnings.simplefilter("ignore")
here = sys.argv[1]
with open(here + "/in", "rb") as f:
    items = marshal.load(f)
out = []
for path, source in items:
    try:
        code = compile(source, path, "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError):
        out.append(None)
        continue
    out.append(importlib.util.MAGIC_NUMBER + (3).to_bytes(4, "little")
               + importlib.util.source_hash(source) + marshal.dumps(code))
with open(here + "/out", "wb") as f:
    marshal.dump(out, f, 2)
"""


def _is_module(path: str, e: Entry) -> bool:
    return e.kind == FILE and path.endswith(".py") and path.startswith("usr/lib/python3")


def python_sources(trees: Iterable[Tree]) -> dict[tuple[str, str], bytes]:
    """Every module under usr/lib/python3* of the trees, keyed by (absolute path, sha256 of
    its source): the same module in two architectures' trees is compiled once."""
    import hashlib

    out: dict[tuple[str, str], bytes] = {}
    for tree in trees:
        for path, e in tree.items():
            if _is_module(path, e):
                out["/" + path, hashlib.sha256(e.data).hexdigest()] = e.data
    return out


def marshal_sources(items: list[tuple[str, bytes]]) -> bytes:
    import marshal

    return marshal.dumps(items, 2)


def unmarshal_pycs(data: bytes, count: int) -> list[bytes | None]:
    import marshal

    out = marshal.loads(data)
    if not isinstance(out, list) or len(out) != count or \
            not all(x is None or isinstance(x, bytes) for x in out):
        raise BuildError("the base's interpreter returned no usable bytecode",
                         "set bytecode = false in the recipe's [config] and report it")
    return out


def add_bytecode(tree: Tree, pycs: dict[tuple[str, str], bytes], python: str) -> Tree:
    """``__pycache__/*.cpython-3X.pyc`` next to every module the interpreter compiled.

    The image runs as a user who cannot write to /usr/lib, so without these Python compiles
    the standard library on every start (~0.2 s for a typical web app's imports)."""
    import hashlib

    tag = "cpython-" + python.replace(".", "")
    out = dict(tree)
    for path, e in tree.items():
        if not _is_module(path, e):
            continue
        data = pycs.get(("/" + path, hashlib.sha256(e.data).hexdigest()))
        if data is None:
            continue
        folder, name = posixpath.split(path)
        pyc = f"{folder}/__pycache__/{name[:-3]}.{tag}.pyc"
        out.setdefault(f"{folder}/__pycache__", Entry.dir(f"{folder}/__pycache__"))
        out[pyc] = Entry(pyc, FILE, 0o644, data=data, package=e.package)
    return out


def write_tree(tree: Tree, dest: "os.PathLike[str] | str") -> None:
    """The tree on disk under ``dest`` (parents first), for a sandbox to run it. Nothing is
    ever written outside ``dest``: a path whose parent leads out (an absolute symlink) is an
    error."""
    root = os.path.realpath(dest)
    os.makedirs(root, exist_ok=True)
    for path in sorted(tree, key=lambda s: s.split("/")):
        e = tree[path]
        full = os.path.join(root, path)
        parent = os.path.realpath(os.path.dirname(full))
        if parent != root and not parent.startswith(root + os.sep):
            raise BuildError(f"the base's tree has {path} under a link that leaves it",
                             "report the package that ships it")
        if e.kind == DIR:
            os.makedirs(full, exist_ok=True)
            os.chmod(full, e.mode | 0o700)
        elif e.kind == SYMLINK:
            os.symlink(e.target, full)
        else:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(e.data)
            os.chmod(full, e.mode | 0o600)


# --------------------------------------------------------------------------- tar

def tar_bytes(tree: Tree, mtime: int = 1) -> bytes:
    """The tree as an uncompressed tar, byte for byte the same on any machine.

    Sorted paths (a parent always sorts before its children), one fixed mtime, numeric
    owners without names, PAX format for long names.
    """
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        # by path components, as ferry.images.layers sorts: "a/b" right after "a"
        for path in sorted(tree, key=lambda s: s.split("/")):
            e = tree[path]
            info = tarfile.TarInfo(path)
            info.mtime = mtime
            info.uid, info.gid = e.uid, e.gid
            info.uname = info.gname = ""
            info.mode = e.mode
            if e.kind == DIR:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif e.kind == SYMLINK:
                info.type = tarfile.SYMTYPE
                info.linkname = e.target
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


def size(tree: Tree) -> int:
    return sum(len(e.data) for e in tree.values())


def with_owner(e: Entry, uid: int, gid: int) -> Entry:
    return replace(e, uid=uid, gid=gid)

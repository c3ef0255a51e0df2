"""A sandbox for one build step, without a daemon: exact argv, built in one place.

    unshare --mount --propagation private            a private mount namespace (real root;
        sh -ec SCRIPT sh OPTS ROOT ...                  --map-root-user when ferry is not root)
            mount -t overlay overlay -o lowerdir=TOP:...:BASE,upperdir=UP,workdir=WORK ROOT
            exec bwrap --bind ROOT / --proc /proc --dev /dev --tmpfs /tmp --unshare-all
                       --unshare-user --uid U --gid G --clearenv --setenv K V ... --chdir WORKDIR
                       --die-with-parent --new-session -- ARGV

The overlay stacks the image's trees read-only (base, then packages, dependencies, source)
and catches every write in UP: what the step wrote is exactly UP, deletions included
(overlayfs whiteouts), so the diff needs no snapshot. bubblewrap (Debian's ``bubblewrap``)
runs the step in new namespaces with no network unless asked; it maps the build machine's
root to the image's user, so the step runs as that uid/gid and may write the image's
root-owned files (the workdir, as Docker's ``COPY --chown`` would give it). Without bwrap,
util-linux's ``unshare`` does the same (``--user --map-user --root --wd``).

Everything here is pure; ``buildstep.py`` runs it.
"""

from __future__ import annotations

import os
import platform as _platform
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BuildError

# the outer script: mount the overlay in the private namespace, then hand over. Arguments:
# $1 overlay options, $2 the merged root, $3 backend, $4 network (1/0), $5 mount's path, then argv
SCRIPT = """\
opts=$1 root=$2 backend=$3 net=$4 mnt=$5
shift 5
"$mnt" -t overlay overlay -o "$opts" "$root"
if [ "$backend" = unshare ]; then
  "$mnt" --rbind /dev "$root/dev"
  "$mnt" -t tmpfs -o mode=1777 tmpfs "$root/tmp"
  if [ "$net" = 1 ]; then "$mnt" --bind /etc/resolv.conf "$root/etc/resolv.conf"; fi
fi
exec "$@"
"""

# mount points the sandbox needs in the image's tree: a lowest overlay layer provides them,
# so mounting over them writes nothing into the step's output
SCAFFOLD_DIRS = ("proc", "dev", "tmp", "sys", "etc")
SCAFFOLD_FILES = ("etc/resolv.conf", "etc/hosts")

_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_QEMU = {"amd64": "qemu-x86_64", "arm64": "qemu-aarch64"}


@dataclass(frozen=True)
class Tools:
    unshare: str
    sh: str
    mount: str
    bwrap: str | None  # None: the unshare backend

    @classmethod
    def find(cls) -> "Tools":
        found = {n: shutil.which(n) or (f"/usr/bin/{n}" if os.path.exists(f"/usr/bin/{n}") else None)
                 for n in ("unshare", "sh", "mount", "bwrap")}
        missing = [n for n in ("unshare", "sh", "mount") if not found[n]]
        if missing:
            raise BuildError(f"image.build needs {', '.join(missing)} on the build machine (util-linux)",
                             "run the build on Linux with util-linux installed (apt-get install util-linux mount)")
        return cls(found["unshare"], found["sh"], found["mount"], found["bwrap"])

    @staticmethod
    def find_bwrap() -> str:
        """bubblewrap alone, for running a base's own interpreter (its bytecode)."""
        bwrap = shutil.which("bwrap") or ("/usr/bin/bwrap" if os.path.exists("/usr/bin/bwrap") else None)
        if not bwrap:
            raise BuildError("the base's bytecode is compiled by its own Python in a sandbox, and bubblewrap "
                             "(bwrap) is not installed",
                             "apt-get install bubblewrap (or set bytecode = false in the recipe's [config])")
        return bwrap


@dataclass(frozen=True)
class Step:
    """One build step as the sandbox runs it."""

    argv: tuple[str, ...]
    uid: int
    gid: int
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/app"
    network: bool = False


def machine_architecture(machine: str | None = None) -> str:
    m = (machine or _platform.machine()).lower()
    return _MACHINES.get(m, m)


def can_run(architecture: str, machine: str, binfmt: dict[str, str]) -> bool:
    """Can this machine run the image's binaries: its own architecture, or qemu-user
    registered with binfmt_misc with the F flag (the interpreter is opened when registered,
    so it works inside the sandbox's root). ``binfmt`` maps entry names to their text (pure)."""
    if architecture == machine:
        return True
    entry = binfmt.get(_QEMU.get(architecture, ""), "")
    if not entry.startswith("enabled"):
        return False
    flags = re.search(r"^flags:\s*(\S*)", entry, re.M)
    return bool(flags and "F" in flags.group(1))


def read_binfmt(root: Path = Path("/proc/sys/fs/binfmt_misc")) -> dict[str, str]:
    out = {}
    try:
        for p in root.iterdir():
            if p.name.startswith("qemu-"):
                out[p.name] = p.read_text(errors="replace")
    except OSError:
        pass
    return out


def parse_user(user: str, passwd: str = "", group: str = "") -> tuple[int, int]:
    """``image.user`` ("65532:65532", "app", "app:app", "1000") as numbers, names looked up in
    the image's own /etc/passwd and /etc/group."""
    name, _, grp = user.partition(":")

    def lookup(table: str, key: str, field_index: int) -> int | None:
        for line in table.splitlines():
            parts = line.split(":")
            if len(parts) > 3 and parts[0] == key:
                return int(parts[field_index])
        return None

    if name.isdigit():
        uid = int(name)
    else:
        uid = lookup(passwd, name, 2)
        if uid is None:
            raise BuildError(f"image.user: {name!r} is not a user of the image (its /etc/passwd)",
                             'use numbers, e.g. user = "65532:65532"')
    if grp.isdigit():
        gid = int(grp)
    elif grp:
        gid = lookup(group, grp, 2)
        if gid is None:
            raise BuildError(f"image.user: {grp!r} is not a group of the image (its /etc/group)",
                             'use numbers, e.g. user = "65532:65532"')
    else:
        gid = lookup(passwd, name, 3) if not name.isdigit() else None
        gid = uid if gid is None else gid
    return uid, gid


def overlay_options(lowers: list[Path], upper: Path, work: Path) -> str:
    """lowerdir is top first. No metacopy and no redirects: every changed file is whole in the
    upper directory, which is then the step's output as it is."""
    for p in [*lowers, upper, work]:
        if any(c in str(p) for c in ",:\n"):
            raise BuildError(f"the cache path {p} has a ',' or ':' overlayfs cannot take",
                             "set FERRY_CACHE_DIR to a plain path")
    return (f"lowerdir={':'.join(str(p) for p in lowers)},upperdir={upper},workdir={work},"
            "redirect_dir=off,metacopy=off,index=off,xino=off")


def bwrap_argv(bwrap: str, root: Path, step: Step) -> list[str]:
    argv = [bwrap, "--bind", str(root), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--unshare-all", "--unshare-user", "--uid", str(step.uid), "--gid", str(step.gid),
            "--hostname", "ferry-build", "--die-with-parent", "--new-session"]
    if step.network:
        argv += ["--share-net", "--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]
    argv.append("--clearenv")
    for k, v in step.env.items():
        argv += ["--setenv", k, v]
    argv += ["--chdir", step.workdir, "--", *step.argv]
    return argv


def bytecode_argv(bwrap: str, root: Path, interpreter: str, io_dir: str) -> list[str]:
    """The base's own interpreter compiling its standard library: the assembled tree as /,
    as root inside (nothing to own), no network, an empty environment but a fixed hash seed
    and SOURCE_DATE_EPOCH, isolated mode (no site, no user paths, no bytecode written)."""
    step = Step((interpreter, "-I", "-S", "-B", f"/{io_dir}/compile.py", f"/{io_dir}"), 0, 0,
                {"PYTHONHASHSEED": "0", "SOURCE_DATE_EPOCH": "1", "LC_ALL": "C.UTF-8"}, "/", False)
    return bwrap_argv(bwrap, root, step)


def ldconfig_argv(bwrap: str, root: Path, argv: tuple[str, ...]) -> list[str]:
    """The tree's own ldconfig writing its /etc/ld.so.cache (ldcache.py): the tree as /, as
    root inside (the cache is root's), no network, an empty environment."""
    return bwrap_argv(bwrap, root, Step(tuple(argv), 0, 0, {"LC_ALL": "C"}, "/", False))


def unshare_argv(unshare: str, root: Path, step: Step) -> list[str]:
    argv = [unshare, "--user", f"--map-user={step.uid}", f"--map-group={step.gid}", "--mount", "--pid", "--ipc",
            "--uts", "--fork", "--kill-child", "--mount-proc", f"--root={root}", f"--wd={step.workdir}"]
    if not step.network:
        argv.insert(5, "--net")
    return [*argv, "--", *step.argv]


def command(tools: Tools, lowers: list[Path], upper: Path, work: Path, root: Path, step: Step,
            as_root: bool = True) -> tuple[list[str], dict[str, str]]:
    """The full argv for one step, and the environment to start it with."""
    outer = [tools.unshare, "--mount", "--propagation", "private"]
    if not as_root:
        outer.insert(1, "--map-root-user")
    opts = overlay_options(lowers, upper, work)
    if tools.bwrap:
        inner, env = bwrap_argv(tools.bwrap, root, step), {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    else:
        inner, env = unshare_argv(tools.unshare, root, step), dict(step.env)
    backend = "bwrap" if tools.bwrap else "unshare"
    return [*outer, "--", tools.sh, "-ec", SCRIPT, "sh", opts, str(root), backend,
            "1" if step.network else "0", tools.mount, *inner], env


# where the dependency folder is bound inside the sandbox (bwrap's own tmpfs /tmp), and the
# script the base's interpreter runs there: the standard library's compileall over it, each
# .pyc named for the image's path (ddir), so a traceback shows /app/deps/..., never /tmp
DEPS_MOUNT = "/tmp/ferry-deps"
DEPS_BYTECODE_SCRIPT = (
    "import compileall, py_compile, sys; "
    "src, ddir, mode, workers = sys.argv[1:5]; "
    "compileall.compile_dir(src, ddir=ddir, force=True, quiet=2, workers=int(workers), "
    "invalidation_mode=py_compile.PycInvalidationMode[mode])"
)
_KERNEL_DIRS = frozenset({"proc", "dev", "tmp", "sys"})


def deps_bytecode_argv(bwrap: str, base_root: Path, top: list[tuple[str, str | None]], interpreter: str,
                       target: Path, dest: str, mode: str, workers: int) -> list[str]:
    """The base's own interpreter compiling the dependency folder in place.

    bubblewrap's root is its own empty tmpfs: each top-level entry of the base's tree
    (``top``: name, and the symlink's target or None) is bound read-only into it, or made the
    same symlink (``/lib -> usr/lib``), so no mount point has to exist in the base (the tree
    in the cache is never written) and any base works, distroless or not. Only the
    dependency folder is writable. No network, no environment but a fixed hash seed and
    SOURCE_DATE_EPOCH, no site (``-S -s``), no bytecode of its own (``-B``)."""
    argv = [bwrap]
    for name, link in sorted(top):
        if name in _KERNEL_DIRS:
            continue
        argv += ["--symlink", link, f"/{name}"] if link is not None else ["--ro-bind", str(base_root / name), f"/{name}"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind", str(target), DEPS_MOUNT,
             "--unshare-all", "--unshare-user", "--uid", "0", "--gid", "0", "--hostname", "ferry-build",
             "--die-with-parent", "--new-session", "--clearenv",
             "--setenv", "PYTHONHASHSEED", "0", "--setenv", "SOURCE_DATE_EPOCH", "1", "--setenv", "LC_ALL", "C.UTF-8",
             "--chdir", "/", "--", interpreter, "-S", "-s", "-B", "-c", DEPS_BYTECODE_SCRIPT,
             DEPS_MOUNT, "/" + dest.strip("/"), mode, str(workers)]
    return argv

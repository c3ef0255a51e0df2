"""The build output layer: ``image.build`` steps run over the image's assembled filesystem.

    base tree (trees.py, once per base) + packages + deps + source trees, read-only
        -> overlayfs with an empty upper directory
        -> each step in the sandbox (sandbox.py: bubblewrap, or unshare), as the image's user,
           with the image's environment plus image.build_env, no network unless
           image.build_network, in the workdir; output streamed as progress
        -> the upper directory is what the steps wrote (deletions as whiteouts): one layer,
           normalised as every ferry layer (sorted, fixed mtime, uid/gid 0, modes 0755/0644)

Python in a step lists directories in sorted order (dirorder.py): what a tool writes in listing
order is then the same on any filesystem the cache is on.

The key is the digests of every layer under it, the steps, the environment and the network
flag (with ``image.build_inputs``, the content of those source files stands for the source
layer: an edit elsewhere in the app keeps the layer): an unchanged build runs nothing (local cache) and uploads nothing (the previous image's
``dev.ferry.build.*`` labels). Steps run only where the image's binaries run: this machine's
architecture, or another through qemu-user registered with binfmt_misc.
"""

from __future__ import annotations

import collections
import os
import shlex
import stat
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

from ..errors import BuildError
from . import dirorder, sandbox
from .layers import GZIP_LEVEL, Entry, normalise_mode, write_layer
from .oci import canonical_json, sha256
from .steps import Layer, LayerStep, StepContext
from .trees import OPAQUE, WHITEOUT, reader

RECIPE = "2"  # 2: Python in the steps lists directories sorted (dirorder.py)
TAIL = 40
_SANDBOX_ERRORS = ("unshare: ", "mount: ", "bwrap: Creating new namespace", "bwrap: Can't", "bwrap: No permissions")  # lines of a failing step's output kept for the error


def diff_entries(upper: Path) -> list[Entry]:
    """The layer entries for an overlay's upper directory: files, directories, symlinks as they
    are; overlayfs whiteouts (0/0 character devices) and opaque directories as OCI whiteouts."""
    out: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(upper):
        rel_dir = os.path.relpath(dirpath, upper)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")

        def arc(name: str) -> str:
            return f"{rel_dir}/{name}" if rel_dir else name
        keep = []
        for d in sorted(dirnames):
            full = Path(dirpath) / d
            if full.is_symlink():
                out.append(Entry(arc(d), "symlink", 0o777, target=os.readlink(full)))
                continue
            out.append(Entry(arc(d), "dir", 0o755))
            try:
                opaque = os.getxattr(full, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
            except OSError:
                opaque = False
            if opaque:
                out.append(Entry(f"{arc(d)}/{OPAQUE}", data=b""))
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            full = Path(dirpath) / name
            st = full.lstat()
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                out.append(Entry(arc(WHITEOUT + name), data=b""))
            elif stat.S_ISLNK(st.st_mode):
                out.append(Entry(arc(name), "symlink", 0o777, target=os.readlink(full)))
            elif stat.S_ISREG(st.st_mode):
                out.append(Entry(arc(name), "file", normalise_mode(st.st_mode), source=full))
    return out


def stale_bytecode(path: str, workdir: str) -> bool:
    """A .pyc a step wrote for the app's own modules. With image.build_inputs the build layer
    outlives source edits it was not keyed on, and a source file's mtime is fixed in every
    layer, so such a .pyc could pass Python's timestamp check against newer code: left out."""
    prefix = workdir.strip("/") + "/"
    return path.startswith(prefix) and "/__pycache__/" in "/" + path and path.endswith(".pyc")


def scaffold(root: Path) -> Path:
    """The lowest layer of the overlay: the mount points the sandbox needs."""
    for d in sandbox.SCAFFOLD_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in sandbox.SCAFFOLD_FILES:
        (root / f).touch()
    dirorder.install(root)
    return root


class BuildStep(LayerStep):
    kind = "build"

    def __init__(self, steps: Sequence[Sequence[str]], env_for: Callable[[Sequence[Layer]], dict[str, str]],
                 user: str, workdir: str, network: bool, mtime: int, architecture: str,
                 base_diff_ids: Sequence[str], inputs_key: str | None = None):
        self.steps = tuple(tuple(s) for s in steps)
        self.env_for = env_for
        self.user = user
        self.workdir = workdir
        self.network = network
        self.mtime = mtime
        self.architecture = architecture
        self.base_diff_ids = tuple(base_diff_ids)
        # image.build_inputs' content hash: it stands for the source layer in the key
        self.inputs_key = inputs_key

    def key(self, below: Sequence[Layer] = ()) -> str:
        facts = {"recipe": RECIPE, "steps": [list(s) for s in self.steps], "env": self.env_for(below),
                 "network": self.network, "user": self.user, "workdir": self.workdir, "mtime": self.mtime,
                 "gzip": GZIP_LEVEL}
        if self.inputs_key is None:
            facts["layers"] = [*self.base_diff_ids, *(layer.diff_id for layer in below)]
        else:
            facts["layers"] = [*self.base_diff_ids, *(layer.diff_id for layer in below if layer.kind != "source")]
            facts["inputs"] = self.inputs_key
        return sha256(canonical_json(facts))[7:]

    def title(self, ctx: StepContext) -> str:
        return f"build layer {ctx.platform}"

    def make(self, ctx, key, below, work):
        machine = sandbox.machine_architecture()
        if not sandbox.can_run(self.architecture, machine, sandbox.read_binfmt()):
            raise BuildError(f"image.build runs the image's own programs, and this {machine} machine cannot run "
                             f"{ctx.platform} ones",
                             f"build {ctx.platform} on a {self.architecture} machine, register qemu-user with binfmt "
                             "(Debian: apt-get install qemu-user-static binfmt-support), or drop it from image.platforms")
        tools = sandbox.Tools.find()
        base_tree = ctx.base_tree()
        trees = ctx.trees()
        layer_trees = [trees.layer(layer.blob, layer.diff_id) for layer in below]
        read, _ = reader(base_tree)
        uid, gid = sandbox.parse_user(self.user, (read("etc/passwd") or b"").decode("utf-8", "replace"),
                                      (read("etc/group") or b"").decode("utf-8", "replace"))
        lowers = [*reversed(layer_trees), base_tree, scaffold(work / "scaffold")]
        upper, ovl, root = work / "upper", work / "ovl", work / "root"
        for d in (upper, ovl, root):
            d.mkdir()
        env = dirorder.step_env(self.env_for(below))
        t0 = time.monotonic()
        for i, argv in enumerate(self.steps):
            step = sandbox.Step(tuple(argv), uid, gid, env, self.workdir, self.network)
            cmd, cmd_env = sandbox.command(tools, lowers, upper, ovl, root, step, as_root=os.geteuid() == 0)
            self._run(ctx, i, step, cmd, cmd_env)
        trees.prune()
        entries = [e for e in diff_entries(upper) if not dirorder.is_own(e.path)]
        if self.inputs_key is not None:
            entries = [e for e in entries if not stale_bytecode(e.path, self.workdir)]
        lf = write_layer(entries, work / "layer.tar.gz", self.mtime)
        prefix = self.workdir.strip("/") + "/"
        files = sorted(e.path for e in entries if e.kind == "file" and e.path.startswith(prefix)
                       and not e.path.rsplit("/", 1)[-1].startswith(WHITEOUT))
        return lf, {"steps": len(self.steps), "files": files, "entries": len(entries),
                    "seconds": round(time.monotonic() - t0, 2)}

    def _run(self, ctx: StepContext, i: int, step: sandbox.Step, cmd: list[str], env: dict[str, str]) -> None:
        shown = shlex.join(step.argv)
        ctx.progress.step(f"build step {i + 1}/{len(self.steps)} ({ctx.platform}): {shown}")
        tail: collections.deque[str] = collections.deque(maxlen=TAIL)
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=env, text=True, errors="replace", bufsize=1)
        except OSError as e:
            raise BuildError(f"cannot start the build sandbox: {e}", "install bubblewrap and util-linux") from None
        assert proc.stdout is not None
        with proc:
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                ctx.progress.info(f"  | {line}")
            code = proc.wait()
        if code != 0:
            last = next((ln for ln in reversed(tail) if ln.strip()), "")
            if last.startswith(_SANDBOX_ERRORS):
                raise BuildError(f"the build sandbox could not start for image.build[{i}]: {last.strip()[-300:]}",
                                 "build steps need root (or unprivileged user namespaces) and overlayfs on the build "
                                 "machine; a program the step names must be in the image",
                                 details={"step": i, "argv": list(step.argv), "exit_code": code, "output": list(tail)})
            raise BuildError(f"image.build[{i}] `{shown}` failed with exit code {code}"
                             + (f": {last.strip()[-300:]}" if last else ""),
                             "fix the step (its output is above); nothing was pushed",
                             details={"step": i, "argv": list(step.argv), "exit_code": code, "output": list(tail)})

    def summary(self, meta: dict) -> str:
        return f", {meta.get('entries', 0)} entries from {meta.get('steps', 0)} steps in {meta.get('seconds', 0)} s"

    def layer(self, key, blob, diff_id, origin, meta):
        files = frozenset(meta["files"]) if "files" in meta else None  # reused from the registry: not known
        return Layer("build", key, blob, diff_id, origin, f"ferry: build steps ({len(self.steps)})",
                     self.labels(key, blob.digest, meta), dict(meta), files=files)

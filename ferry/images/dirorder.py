"""Directory listings in sorted order for build steps' Python, so their output is the same on
any filesystem.

A build step's layer must not depend on the build machine, but the order a directory lists in
(readdir) does: ext4 orders entries by a hash seeded per filesystem, tmpfs by creation, and
overlayfs follows its layers. A tool that writes what it listed, in the order it listed it,
carries that order into the layer. Django's collectstatic writes staticfiles.json's paths in the
order os.scandir found the files: examples/django built to one digest with ferry's cache on
ext4 and to another with it on tmpfs.

The sandbox puts SITECUSTOMIZE first on each step's PYTHONPATH. Python processes of the step
then list directories sorted by name: os.listdir, os.scandir, and everything built on them
(os.walk, glob, pathlib, shutil). After that, the image's own sitecustomize runs, if it has one.
Python started with -I or -S skips it, and so does a program that is not Python (npm, a bundler):
sort in the tool.
"""

from __future__ import annotations

from pathlib import Path

# in the sandbox's scaffold, the overlay's lowest layer: seen by the steps, never in their output
DIR = ".ferry-build"

SITECUSTOMIZE = '''\
"""ferry's build sandbox: directories list in sorted order (ferry/images/dirorder.py)."""
import os as _os
import sys as _sys

_listdir, _scandir = _os.listdir, _os.scandir


def listdir(path="."):
    return sorted(_listdir(path))


class _Sorted:
    """os.scandir's iterator and context manager, over the entries sorted by name."""

    def __init__(self, path):
        with _scandir(path) as it:
            self._entries = iter(sorted(it, key=lambda e: e.name))

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._entries)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._entries = iter(())


def scandir(path="."):
    return _Sorted(path)


_os.listdir, _os.scandir = listdir, scandir

# then the image's own sitecustomize, which this one shadows on sys.path
_here = _os.path.dirname(_os.path.abspath(__file__))
_path = list(_sys.path)
_sys.path[:] = [p for p in _path if _os.path.abspath(p or ".") != _here]
_sys.modules.pop("sitecustomize", None)
try:
    import sitecustomize  # noqa: F401
except ImportError as e:
    if e.name != "sitecustomize":
        raise
finally:
    _sys.path[:] = _path
'''


def install(scaffold_root: Path) -> Path:
    """Write the sitecustomize into the scaffold; the folder the steps see at /DIR."""
    d = scaffold_root / DIR
    d.mkdir(parents=True, exist_ok=True)
    (d / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return d


def step_env(env: dict[str, str]) -> dict[str, str]:
    """The step's environment with /DIR first on PYTHONPATH (pure)."""
    rest = env.get("PYTHONPATH", "")
    return {**env, "PYTHONPATH": f"/{DIR}:{rest}" if rest else f"/{DIR}"}


def is_own(path: str) -> bool:
    """A layer path under /DIR (a .pyc a step with bytecode writing on left there): not the app's."""
    return path == DIR or path.startswith(DIR + "/")

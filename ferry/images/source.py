"""The source layer: the service's own files under the working directory (``/app``).

It changes on every commit, so it is the last and smallest layer. Excludes follow
``image.exclude`` in ferry.toml plus a ``.ferryignore`` file in the source folder (one pattern
a line, ``#`` comments):

- a pattern without ``/`` matches a file or folder name anywhere (``__pycache__``, ``*.pyc``);
- a pattern with ``/`` matches the path from the source folder (``docs/*``, ``/local.env``);
- an excluded folder's whole content is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from ..errors import BuildError
from .layers import Entry, StatCache, content_key, tree_entries

IGNORE_FILE = ".ferryignore"


@dataclass(frozen=True)
class Excludes:
    names: tuple[str, ...]
    paths: tuple[str, ...]

    @classmethod
    def parse(cls, patterns) -> "Excludes":
        names, paths = [], []
        for raw in patterns:
            p = raw.strip()
            if not p or p.startswith("#"):
                continue
            p = p.rstrip("/")
            if "/" in p:
                paths.append(p.lstrip("/"))
            else:
                names.append(p)
        return cls(tuple(names), tuple(paths))

    def __call__(self, rel: str, is_dir: bool = False) -> bool:
        name = rel.rsplit("/", 1)[-1]
        if any(fnmatchcase(name, pat) for pat in self.names):
            return True
        return any(fnmatchcase(rel, pat) for pat in self.paths)


def excludes_for(source: Path, configured) -> Excludes:
    patterns = list(configured)
    ignore = source / IGNORE_FILE
    if ignore.is_file():
        patterns += ignore.read_text().splitlines()
    patterns.append(IGNORE_FILE)
    return Excludes.parse(patterns)


@dataclass(frozen=True)
class SourceLayer:
    entries: tuple[Entry, ...]
    key: str  # content hash: the local cache's key for the compressed layer

    @property
    def files(self) -> list[str]:
        return [e.path for e in self.entries if e.kind == "file"]


def collect(source: Path, workdir: str, exclude, stat_cache: Path | None = None) -> SourceLayer:
    """Every file of the source folder (less the excludes) placed under ``workdir``.
    ``stat_cache``: where files' digests are remembered by their stat (layers.StatCache), so a
    warm build reads only the files that changed."""
    if not source.is_dir():
        raise BuildError(f"source folder {source} does not exist", "set image.source in ferry.toml to your service's folder")
    try:
        entries = tree_entries(source, workdir, skip=excludes_for(source, exclude))
        digests = StatCache(stat_cache)
        key = content_key(entries, digests)
        digests.save()
    except OSError as e:
        raise BuildError(f"cannot read the source folder {source}: {e}",
                         "check the files' permissions, or exclude them with image.exclude / .ferryignore") from None
    if not any(e.kind == "file" for e in entries):
        raise BuildError(f"source folder {source} has no files to put in the image (all excluded?)",
                         "check image.source and image.exclude in ferry.toml")
    return SourceLayer(tuple(entries), key)

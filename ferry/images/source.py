"""The source layer: the service's own files under the working directory (``/app``).

It changes on every commit, so it is the last and smallest layer. Excludes follow
``image.exclude`` in ferry.toml plus a ``.ferryignore`` file in the source folder (one pattern
a line, ``#`` comments):

- a pattern without ``/`` matches a file or folder name anywhere (``__pycache__``, ``*.pyc``);
- a pattern with ``/`` matches the path from the source folder (``docs/*``, ``/local.env``);
- an excluded folder's whole content is left out.

``image.build_inputs`` uses the same patterns to name the source files the build steps read:
their content, not the whole source layer's, keys the build layer (``inputs_key``).
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


@dataclass(frozen=True)
class Selection:
    """Files named by patterns (Excludes' syntax), a matched folder bringing all it holds."""

    patterns: Excludes

    @classmethod
    def parse(cls, patterns) -> "Selection":
        return cls(Excludes.parse(patterns))

    def __call__(self, rel: str) -> bool:
        parts = rel.split("/")
        return any(self.patterns("/".join(parts[:n])) for n in range(1, len(parts) + 1))

    def unmatched(self, rels) -> list[str]:
        """The patterns no path of ``rels`` falls under (a typo, a moved folder)."""
        rels = list(rels)
        out = []
        for raw in (*self.patterns.names, *self.patterns.paths):
            one = Selection(Excludes.parse([raw]))
            if not any(one(r) for r in rels):
                out.append(raw)
        return out


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
    # content hash of the files image.build_inputs names (None: no build_inputs, every file is one)
    inputs_key: str | None = None

    @property
    def files(self) -> list[str]:
        return [e.path for e in self.entries if e.kind == "file"]


def collect(source: Path, workdir: str, exclude, stat_cache: Path | None = None,
            build_inputs=()) -> SourceLayer:
    """Every file of the source folder (less the excludes) placed under ``workdir``.
    ``stat_cache``: where files' digests are remembered by their stat (layers.StatCache), so a
    warm build reads only the files that changed. ``build_inputs``: patterns of the files the
    build steps read; their own content hash is ``inputs_key``."""
    if not source.is_dir():
        raise BuildError(f"source folder {source} does not exist", "set image.source in ferry.toml to your service's folder")
    try:
        entries = tree_entries(source, workdir, skip=excludes_for(source, exclude))
        digests = StatCache(stat_cache)
        key = content_key(entries, digests)
        inputs_key = _inputs_key(entries, workdir, build_inputs, digests) if build_inputs else None
        digests.save()
    except OSError as e:
        raise BuildError(f"cannot read the source folder {source}: {e}",
                         "check the files' permissions, or exclude them with image.exclude / .ferryignore") from None
    if not any(e.kind == "file" for e in entries):
        raise BuildError(f"source folder {source} has no files to put in the image (all excluded?)",
                         "check image.source and image.exclude in ferry.toml")
    return SourceLayer(tuple(entries), key, inputs_key)


def _inputs_key(entries, workdir: str, patterns, digests: StatCache) -> str:
    prefix = workdir.strip("/") + "/"
    rel = {e.path: e.path[len(prefix):] for e in entries if e.kind == "file" and e.path.startswith(prefix)}
    pick = Selection.parse(patterns)
    missing = pick.unmatched(rel.values())
    if missing:
        raise BuildError(f"image.build_inputs: no source file falls under {', '.join(map(repr, missing))}",
                         "name folders or files of image.source that the build steps read (a name anywhere, "
                         "e.g. \"static\", or a path from the source folder, e.g. \"mysite/settings.py\"); "
                         "an excluded file is not an input")
    return content_key([e for e in entries if e.path in rel and pick(rel[e.path])], digests)

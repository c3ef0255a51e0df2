"""The local content-addressed cache: compressed layers keyed by what went into them.

Layout under ``$FERRY_CACHE_DIR`` (default ``$XDG_CACHE_HOME/ferry`` or ``~/.cache/ferry``)::

    blobs/sha256/<hex>          compressed layers, named by their digest
    layers/<kind>/<key>.json    input key -> {digest, diff_id, size, ...}: a hit means the layer
                                is neither rebuilt nor recompressed
    uv/                         the wheel installer's own cache (removing the ferry cache makes a
                                machine "fresh" in one step)
    apt/<suite>-<arch>/         private apt state for image.packages (packages.py)
    debs/                       downloaded .deb files, checked by SHA256
    trees/                      unpacked layers for build steps and a base's files (trees.py)
    tmp/                        work directories, cleaned as they finish

Writes are atomic (write to tmp, then rename), so an interrupted build never leaves a record
that points at a half-written blob; a record whose blob vanished is treated as a miss.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .oci import OCI_LAYER_GZIP, Blob


def default_root(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("FERRY_CACHE_DIR"):
        return Path(env["FERRY_CACHE_DIR"])
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ferry"


@dataclass(frozen=True)
class CachedLayer:
    digest: str
    diff_id: str
    size: int
    path: Path
    extra: dict = field(default_factory=dict, compare=False)

    def blob(self) -> Blob:
        return Blob(self.digest, self.size, OCI_LAYER_GZIP, path=self.path)


class Cache:
    def __init__(self, root: Path | None = None):
        self.root = (Path(root) if root else default_root()).absolute()

    def blob_path(self, digest: str) -> Path:
        algo, _, hexd = digest.partition(":")
        return self.root / "blobs" / algo / hexd

    def _record(self, kind: str, key: str) -> Path:
        return self.root / "layers" / kind / f"{key}.json"

    def get(self, kind: str, key: str) -> CachedLayer | None:
        rec = self._record(kind, key)
        try:
            meta = json.loads(rec.read_text())
        except (OSError, ValueError):
            return None
        path = self.blob_path(meta["digest"])
        if not path.is_file() or path.stat().st_size != meta["size"]:
            return None
        return CachedLayer(meta["digest"], meta["diff_id"], meta["size"], path, meta.get("extra", {}))

    def put(self, kind: str, key: str, layer_path: Path, digest: str, diff_id: str, size: int,
            extra: dict | None = None) -> CachedLayer:
        """Move a freshly written layer into the store and record its key."""
        dest = self.blob_path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() and dest.stat().st_size == size:
            Path(layer_path).unlink(missing_ok=True)
        else:
            os.replace(layer_path, dest)
        meta = {"digest": digest, "diff_id": diff_id, "size": size, "extra": extra or {}}
        rec = self._record(kind, key)
        rec.parent.mkdir(parents=True, exist_ok=True)
        tmp = rec.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")  # platforms build in threads
        tmp.write_text(json.dumps(meta, sort_keys=True, indent=1))
        os.replace(tmp, rec)
        return CachedLayer(digest, diff_id, size, dest, meta["extra"])

    # --- where layers were pushed: lets the next push to another repository of the same
    # registry mount them instead of uploading (docker keeps the same memory)

    def note_pushed(self, digests, location: str) -> None:
        registry = location.split("/", 1)[0]
        base = self.root / "pushed"
        base.mkdir(parents=True, exist_ok=True)
        for digest in digests:
            rec = base / digest.replace(":", "-")
            try:
                known = json.loads(rec.read_text())
            except (OSError, ValueError):
                known = {}
            if known.get(registry) == location:
                continue
            known[registry] = location
            tmp = rec.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, sort_keys=True))
            os.replace(tmp, rec)

    def pushed_to(self, digest: str, registry: str) -> str | None:
        try:
            return json.loads((self.root / "pushed" / digest.replace(":", "-")).read_text()).get(registry)
        except (OSError, ValueError):
            return None

    def tmpdir(self, prefix: str) -> Path:
        base = self.root / "tmp"
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=base))

    @staticmethod
    def discard(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    @property
    def uv_dir(self) -> Path:
        return self.root / "uv"

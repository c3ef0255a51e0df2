"""The image as a pipeline of layer steps, one class per layer kind (as Jib's ``BuildSteps``).

Every step makes one layer and has one key; ``run_step`` applies the one cache rule to all:

    1. the local cache (cache.py: ``layers/<kind>/<key>.json``): nothing is made;
    2. the registry's previous image: its config labels ``dev.ferry.<kind>.key`` and
       ``dev.ferry.<kind>.layer`` name a layer with this key, known only by digest (nothing is
       resolved, downloaded or uploaded; the publisher finds or mounts it);
    3. otherwise ``step.make`` writes it, and the local cache records it.

A step knows nothing about the image: it returns a ``Layer`` (blob, diff_id, history line,
the labels that let a later build find it again, and what it provides to the entrypoint
check), and ``builder.assemble`` stacks what the steps returned on the base. A step may
depend on the layers under it (the build step's key is made of their digests): they are
passed as ``below``.

Other parts of ferry add files to a step's layer with a ``Contribution`` (e.g. the app's own
package metadata and console scripts into the source layer): its entries are part of the
layer and of its key, and what it provides (scripts, modules) reaches the entrypoint check.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import BuildError
from ..progress import NULL, Progress, human_bytes
from . import deps as deps_mod
from .cache import Cache
from .deps import DepsSpec, Distribution
from .layers import GZIP_LEVEL, Entry, LayerFile, content_key, write_layer
from .oci import OCI_LAYER_GZIP, Blob, Image, Platform, canonical_json, sha256
from .source import SourceLayer

SOURCE_RECIPE = "1"

ORIGINS = ("cache", "registry", "built")


def label_key(kind: str) -> str:
    return f"dev.ferry.{kind}.key"


def label_layer(kind: str) -> str:
    return f"dev.ferry.{kind}.layer"


@dataclass(frozen=True)
class Contribution:
    """Files another part of ferry puts into a step's layer, and what they provide to the
    entrypoint check (console scripts by name, importable top-level modules)."""

    name: str
    entries: tuple[Entry, ...]
    scripts: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    # import roots the image must have on PYTHONPATH (right after the workdir), and whether the
    # contribution puts console scripts in a bin directory that must be on PATH
    pythonpath: tuple[str, ...] = ()
    bindir: str | None = None

    def key(self) -> str:
        return content_key(self.entries)


@dataclass(frozen=True)
class Layer:
    """One of ferry's layers, as a step returns it and the assembler stacks it."""

    kind: str  # "packages" | "deps" | "source" | "build"
    key: str
    blob: Blob
    diff_id: str
    origin: str  # "cache" | "registry" | "built"
    created_by: str  # its line in the image config's history
    labels: dict[str, str] = field(default_factory=dict)  # ferry's bookkeeping in the config
    meta: dict = field(default_factory=dict, compare=False)  # the step's own facts (JSON)
    # what it provides to the entrypoint check; None: unknown (then that side is not checked)
    files: frozenset[str] | None = frozenset()  # image paths without the leading slash
    scripts: tuple[str, ...] | None = ()
    modules: tuple[str, ...] | None = ()
    path: str | None = None  # a bin directory the image puts first on PATH
    pythonpath: str | None = None  # a directory the image puts on PYTHONPATH

    @property
    def digest(self) -> str:
        return self.blob.digest

    @property
    def size(self) -> int:
        return self.blob.size


@dataclass
class StepContext:
    """What a step may use for one platform: the cache, progress, the previous image under the
    target tag (fetched once, on the first step that misses the local cache), the base, and,
    for a step that needs file contents, ``fetch_blob`` (download a layer known only by digest
    into the cache; returns the file) with the base's unpacked tree and facts, made on first
    use only."""

    platform: Platform
    cache: Cache
    repository: str
    progress: Progress = NULL
    fetch_previous: Callable[[], Image | None] | None = None
    fetch_blob: Callable[[Blob], Path] | None = None
    environ: dict[str, str] | None = None
    base: object | None = None  # builder.BaseImage: the base's config, layers and diff_ids
    _memo: dict = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def _once(self, name: str, make: Callable[[], object]):
        with self._lock:
            if name not in self._memo:
                self._memo[name] = make()
            return self._memo[name]

    def previous(self) -> Image | None:
        return self._once("previous", lambda: self.fetch_previous() if self.fetch_previous else None)

    def trees(self):
        from .trees import Trees

        return self._once("trees", lambda: Trees(self.cache, self.fetch_blob, self.progress))

    def base_tree(self) -> Path:
        """The base's filesystem on this machine (downloaded and unpacked once per base)."""
        return self._once("base_tree", lambda: self.trees().base(self.base.layers, self.base.diff_ids))

    def base_facts(self, files: bool = False):
        """basefacts.BaseFacts: from the base's config; with ``files`` also from its own files
        (os-release, the dpkg status), which needs the base's tree."""
        from . import basefacts

        facts = self._once("facts", lambda: basefacts.from_config(self.base.config, self.base.image.annotations))
        if not files or facts.files_read:
            return facts

        def read_files():
            from .trees import reader

            read, listdir = reader(self.base_tree())
            return basefacts.with_files(facts, read, listdir)
        return self._once("facts_files", read_files)


class LayerStep:
    """One layer kind. Subclasses set ``kind`` and implement ``key``, ``make`` and ``layer``;
    ``recorded = False`` leaves the layer out of the registry tier (no labels)."""

    kind: str = ""
    recorded: bool = True

    def key(self, below: Sequence[Layer]) -> str:
        raise NotImplementedError

    def title(self, ctx: StepContext) -> str:
        return f"{self.kind} layer {ctx.platform}"

    def make(self, ctx: StepContext, key: str, below: Sequence[Layer], work: Path) -> tuple[LayerFile, dict]:
        """Write the layer under ``work``; return it and the facts to keep with it."""
        raise NotImplementedError

    def layer(self, key: str, blob: Blob, diff_id: str, origin: str, meta: dict) -> Layer:
        raise NotImplementedError

    def labels(self, key: str, digest: str, meta: dict) -> dict[str, str]:
        """What the image config records so a later build (on any machine) finds this layer."""
        if not self.recorded:
            return {}
        return {label_key(self.kind): key, label_layer(self.kind): digest}

    def meta_from_labels(self, labels: dict[str, str]) -> dict | None:
        """The facts recorded in the previous image's labels; None: they cannot be trusted,
        make the layer again."""
        return {}

    def summary(self, meta: dict) -> str:
        return ""


def recorded_layer(previous: Image | None, kind: str, key: str) -> tuple[Blob, str, dict[str, str]] | None:
    """The layer a previous image recorded for ``kind`` under ``key``: (blob by descriptor,
    diff_id, labels), or None. Pure."""
    if previous is None:
        return None
    try:
        cfg = previous.config_json()
    except (LookupError, ValueError):
        return None
    labels = (cfg.get("config") or {}).get("Labels") or {}
    if labels.get(label_key(kind)) != key:
        return None
    digest = labels.get(label_layer(kind))
    digests = [layer.digest for layer in previous.layers]
    diff_ids = (cfg.get("rootfs") or {}).get("diff_ids") or []
    if digest not in digests or len(diff_ids) != len(digests):
        return None
    i = digests.index(digest)
    prev = previous.layers[i]
    # known by digest only: the publisher finds it in the target repository (HEAD) or mounts it
    return Blob(digest, prev.size, OCI_LAYER_GZIP, source=prev.source), diff_ids[i], labels


_making: dict[tuple[str, str, str], threading.Lock] = {}
_making_guard = threading.Lock()


def _lock_for(cache: Cache, kind: str, key: str) -> threading.Lock:
    with _making_guard:
        return _making.setdefault((str(cache.root), kind, key), threading.Lock())


def run_step(step: LayerStep, ctx: StepContext, below: Sequence[Layer] = ()) -> Layer:
    """local cache -> the registry's previous image -> make it. Platforms run in threads: a
    layer two of them share (the source) is made once, the other finds it in the cache."""
    key = step.key(below)
    with _lock_for(ctx.cache, step.kind, key):
        return _run_step(step, ctx, below, key)


def _run_step(step: LayerStep, ctx: StepContext, below: Sequence[Layer], key: str) -> Layer:
    title = step.title(ctx)
    hit = ctx.cache.get(step.kind, key)
    if hit:
        ctx.progress.info(f"{title}: unchanged, from the local cache ({hit.digest[7:19]}, {human_bytes(hit.size)})")
        return step.layer(key, hit.blob(), hit.diff_id, "cache", hit.extra)
    if step.recorded:
        found = recorded_layer(ctx.previous(), step.kind, key)
        if found:
            blob, diff_id, labels = found
            meta = step.meta_from_labels(labels)
            if meta is not None:
                blob = dataclasses.replace(blob, source=blob.source or ctx.repository)
                ctx.progress.info(f"{title}: unchanged, reused from the registry's previous image "
                                  f"({blob.digest[7:19]}, {human_bytes(blob.size)}; nothing made)")
                return step.layer(key, blob, diff_id, "registry", meta)
    work = ctx.cache.tmpdir(f"{step.kind}-")
    try:
        lf, meta = step.make(ctx, key, below, work)
        stored = ctx.cache.put(step.kind, key, lf.path, lf.digest, lf.diff_id, lf.size, extra=meta)
    finally:
        ctx.cache.discard(work)
    ctx.progress.info(f"{title}: built {stored.digest[7:19]} ({human_bytes(stored.size)}{step.summary(stored.extra)})")
    return step.layer(key, stored.blob(), stored.diff_id, "built", stored.extra)


# --- the dependency layer ------------------------------------------------------------------------

@dataclass(frozen=True)
class DepsInfo:
    """What the image records about its dependency layer (and reads back on a fresh machine)."""

    key: str
    digest: str
    diff_id: str
    size: int
    packages: tuple[Distribution, ...] = ()
    scripts: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()

    def inventory_json(self) -> str:
        """The whole metadata, so an SBOM made on a fresh machine from this label is byte-identical
        to one made where the dependency layer was built. Compressed (zlib, then base64): the
        config is sent with every build and is not gzipped on the wire, and this label is most
        of it (10 distributions: 2.0 KB of JSON, 0.9 KB compressed)."""
        text = json.dumps({"packages": [d.to_json() for d in self.packages],
                           "scripts": list(self.scripts), "modules": list(self.modules)},
                          separators=(",", ":"), sort_keys=True)
        return INVENTORY_PREFIX + base64.b64encode(zlib.compress(text.encode(), 9)).decode()

    @staticmethod
    def parse_inventory(text: str) -> tuple[tuple[Distribution, ...], tuple[str, ...], tuple[str, ...]]:
        """Either form: compressed, or the plain JSON images built before 0.2 carry."""
        if text.startswith(INVENTORY_PREFIX):
            try:
                text = zlib.decompress(base64.b64decode(text[len(INVENTORY_PREFIX):], validate=True)).decode()
            except (zlib.error, binascii.Error, UnicodeDecodeError) as e:
                raise ValueError(f"unreadable inventory label: {e}") from None
        doc = json.loads(text)
        pk = tuple(Distribution.from_json(d) for d in doc.get("packages", []))
        return pk, tuple(doc.get("scripts", [])), tuple(doc.get("modules", []))

    @classmethod
    def of(cls, layer: Layer) -> "DepsInfo":
        m = layer.meta
        return cls(layer.key, layer.digest, layer.diff_id, layer.size,
                   tuple(Distribution.from_json(d) for d in m.get("packages", [])),
                   tuple(m.get("scripts", [])), tuple(m.get("modules", [])))


LABEL_DEPS_INVENTORY = "dev.ferry.deps.inventory"
INVENTORY_PREFIX = "zlib+base64:"


def declared_requirements(req: deps_mod.Requirements) -> int | None:
    """How many distributions the dependency input names (None: not known for its kind)."""
    import tomllib

    try:
        if req.kind == "requirements":
            return len(deps_mod.parse_requirements_txt(req.path)[0])
        if req.kind == "uv.lock":
            lock = tomllib.loads((req.path.parent / "uv.lock").read_text())
            # the project itself (editable / virtual source) is not a dependency
            return sum(1 for p in lock.get("package", [])
                       if not {"editable", "virtual"} & set((p.get("source") or {}).keys()))
        if req.kind == "pyproject":
            return len((tomllib.loads(req.path.read_text()).get("project") or {}).get("dependencies") or [])
    except (OSError, ValueError):
        return None
    return None


def for_another_platform(dspec: DepsSpec, wanted: int) -> BuildError:
    name = dspec.requirements.path.name + (" + uv.lock" if dspec.requirements.kind == "uv.lock" else "")
    hint = ("lock for Linux too: add \"sys_platform == 'linux'\" to [tool.uv] environments in pyproject.toml "
            "(or remove the key) and run `uv lock`" if dspec.requirements.kind == "uv.lock" else
            f"lock for the image's platform: uv pip compile --universal (or --python-platform "
            f"{dspec.arch}-{dspec.manylinux}), or fix the markers")
    return BuildError(f"{name} names {wanted} distribution{'s' if wanted != 1 else ''}, but none is for {dspec.platform} (CPython "
                      f"{dspec.python}): their environment markers leave it out; the lock was made for another platform",
                      hint)


class _Prefetch:
    """``make()`` run in a thread from now; ``result()`` waits for it and returns its value or
    raises its error, in the caller's thread."""

    def __init__(self, make: Callable[[], Path]):
        self._value: Path | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(make,), name="ferry-prefetch", daemon=True)
        self._thread.start()

    def _run(self, make: Callable[[], Path]) -> None:
        try:
            self._value = make()
        except BaseException as e:  # handed to the caller by result()
            self._error = e

    def result(self) -> Path:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


class DepsStep(LayerStep):
    """Wheels for the image's platform at /app/deps (deps.py), keyed by DepsSpec.key()."""

    kind = "deps"

    def __init__(self, dspec: DepsSpec, no_bytecode: str = "", compiler_tree: Callable[[], Path] | None = None,
                 via: str | None = None):
        self.dspec = dspec
        self.no_bytecode = no_bytecode  # why the layer has no bytecode (deps.bytecode_plan)
        # the tree whose interpreter compiles: another platform's base (``via``), else this one's
        self.compiler_tree = compiler_tree
        self.via = via

    def key(self, below: Sequence[Layer] = ()) -> str:
        return self.dspec.key()

    def title(self, ctx: StepContext) -> str:
        return f"dependency layer {ctx.platform}"

    def make(self, ctx, key, below, work):
        ctx.progress.step(f"dependencies for {ctx.platform} (Python {self.dspec.python})")
        target = work / "site"
        # the compiler's tree (downloaded and unpacked once per base) is fetched while uv
        # installs: on a new machine the two take about as long as each other
        tree = _Prefetch(self._compiler_tree(ctx)) if self.dspec.bytecode else None
        installer = deps_mod.install(self.dspec, target, work, ctx.cache.uv_dir, ctx.environ)
        if not target.is_dir():
            target.mkdir()
        scripts = deps_mod.finalise(target, self.dspec.shebang)
        pycs, why, seconds = self._bytecode(ctx, target, tree)
        packages = deps_mod.inventory(target)
        if not packages:
            wanted = declared_requirements(self.dspec.requirements)
            if wanted:
                raise for_another_platform(self.dspec, wanted)
        modules = deps_mod.top_level_modules(target)
        lf = write_layer(deps_mod.entries(target, self.dspec.dest), work / "layer.tar.gz", self.dspec.mtime)
        return lf, {"packages": [d.to_json() for d in packages], "scripts": list(scripts),
                    "modules": list(modules), "installer": installer, "bytecode": pycs,
                    "bytecode_seconds": seconds}

    def _compiler_tree(self, ctx: StepContext) -> Callable[[], Path]:
        """The tree whose interpreter compiles: another platform's base (``via``), else this
        platform's (unpacked once per base, shared with the build step)."""
        return self.compiler_tree or ctx.base_tree

    def _bytecode(self, ctx: StepContext, target: Path, tree: "_Prefetch | None" = None) -> tuple[int, str, float]:
        """The base's interpreter compiles the folder (deps.compile_bytecode); without one
        that runs here the layer has no bytecode, said as a warning. -> (.pyc, why not, s)."""
        import time

        why, pycs, t0 = self.no_bytecode, 0, time.monotonic()
        if self.dspec.bytecode:
            base_tree = tree.result() if tree else self._compiler_tree(ctx)()
            if self.via:
                ctx.progress.info(f"dependency layer {ctx.platform}: bytecode compiled by the linux/{self.via} "
                                  f"base's Python ({self.dspec.bytecode}; bytecode is the same on every architecture)")
            t0 = time.monotonic()
            pycs, why = deps_mod.compile_bytecode(target, base_tree, self.dspec.python, self.dspec.dest)
        if why:
            ctx.progress.warn(f"dependency layer {ctx.platform}: no bytecode: {why}; each start of the image "
                              "compiles the dependencies it imports, in memory")
        return pycs, why, round(time.monotonic() - t0, 2)

    def summary(self, meta: dict) -> str:
        pycs = meta.get("bytecode")
        code = f", {pycs} .pyc in {meta.get('bytecode_seconds', 0)} s" if pycs else ""
        return f", {len(meta.get('packages', []))} distributions with {meta.get('installer', '?')}{code}"

    def meta_from_labels(self, labels):
        try:
            packages, scripts, modules = DepsInfo.parse_inventory(labels.get(LABEL_DEPS_INVENTORY, "{}"))
        except (ValueError, TypeError):
            return None
        return {"packages": [d.to_json() for d in packages], "scripts": list(scripts), "modules": list(modules)}

    def labels(self, key, digest, meta):
        info = DepsInfo(key, digest, "", 0, tuple(Distribution.from_json(d) for d in meta.get("packages", [])),
                        tuple(meta.get("scripts", [])), tuple(meta.get("modules", [])))
        return {**super().labels(key, digest, meta), LABEL_DEPS_INVENTORY: info.inventory_json()}

    def layer(self, key, blob, diff_id, origin, meta):
        scripts, modules = tuple(meta.get("scripts", [])), tuple(meta.get("modules", []))
        known = bool(scripts or modules)  # reused without an inventory: the dependency side is unknown
        dest = "/" + self.dspec.dest.strip("/")
        return Layer("deps", key, blob, diff_id, origin,
                     f"ferry: dependencies ({self.dspec.dest}, key {key[:12]})",
                     self.labels(key, blob.digest, meta), dict(meta),
                     files=frozenset(f"{dest[1:]}/bin/{s}" for s in scripts),
                     scripts=scripts if known else None, modules=modules if known else None,
                     path=f"{dest}/bin", pythonpath=dest)


# --- the source layer ----------------------------------------------------------------------------

class SourceStep(LayerStep):
    """The app's files under the workdir (source.py), keyed by their content. Not recorded in
    the labels: its key is the content itself (read anyway), and labels for it would change
    the digest of every image ferry made before."""

    kind = "source"
    recorded = False

    def __init__(self, src: SourceLayer, source: Path, workdir: str, mtime: int,
                 contributions: Sequence[Contribution] = ()):
        self.src = src
        self.source = source
        self.workdir = workdir
        self.mtime = mtime
        self.contributions = tuple(contributions)

    def key(self, below: Sequence[Layer] = ()) -> str:
        doc = {"recipe": SOURCE_RECIPE, "content": self.src.key, "mtime": self.mtime, "gzip": GZIP_LEVEL}
        if self.contributions:
            doc["contributions"] = [[c.name, c.key()] for c in self.contributions]
        return sha256(canonical_json(doc))[7:]

    def title(self, ctx: StepContext) -> str:
        return "source layer"

    def entries(self) -> list[Entry]:
        out = list(self.src.entries)
        for c in self.contributions:
            out += c.entries
        return out

    def make(self, ctx, key, below, work):
        try:
            lf = write_layer(self.entries(), work / "layer.tar.gz", self.mtime)
        except OSError as e:
            raise BuildError(f"could not archive the source folder {self.source}: {e}",
                             "a file changed or vanished while ferry read it; rerun the build") from None
        except ValueError as e:  # a contribution names a path the source has too
            raise BuildError(f"the source layer has {e}", "rename the file in the source folder") from None
        return lf, {}

    def summary(self, meta: dict) -> str:
        return f", {len(self.src.files)} files"

    def layer(self, key, blob, diff_id, origin, meta):
        files = frozenset(e.path for e in self.entries() if e.kind == "file")
        scripts = tuple(s for c in self.contributions for s in c.scripts)
        modules = tuple(m for c in self.contributions for m in c.modules)
        pythonpath = ":".join(dict.fromkeys(p for c in self.contributions for p in c.pythonpath)) or None
        bindir = next((c.bindir for c in self.contributions if c.bindir), None)
        return Layer("source", key, blob, diff_id, origin, f"ferry: source ({self.workdir})", {}, dict(meta),
                     files=files, scripts=scripts, modules=modules, path=bindir, pythonpath=pythonpath)

"""The layer steps, each without a registry: the one cache rule (local cache -> the previous
image's labels -> make), the dependency and source steps, contributions, and the assembler."""

from __future__ import annotations

import base64
import gzip
import io
import tarfile
import zlib
from pathlib import Path

import pytest

from ferry.errors import BuildError
from ferry.images import deps as deps_mod
from ferry.images.builder import BaseImage, BuildSpec, assemble, entrypoint_facts
from ferry.images.cache import Cache
from ferry.images.deps import DepsSpec, read_requirements
from ferry.images.layers import Entry, write_layer
from ferry.images.oci import OCI_CONFIG, OCI_LAYER_GZIP, Blob, Image, Platform, canonical_json, sha256
from ferry.images.source import collect
from ferry.images.steps import (Contribution, DepsStep, Layer, LayerStep, SourceStep, StepContext, recorded_layer,
                                run_step)


class Toy(LayerStep):
    """A step whose layer is one file; counts how often it is made."""

    kind = "toy"

    def __init__(self, content: bytes, key: str = "k1"):
        self.content, self._key, self.made = content, key, 0

    def key(self, below=()):
        return self._key

    def make(self, ctx, key, below, work):
        self.made += 1
        return write_layer([Entry("toy/file", data=self.content)], work / "l.tgz", 1), {"n": len(self.content)}

    def layer(self, key, blob, diff_id, origin, meta):
        return Layer(self.kind, key, blob, diff_id, origin, "toy", self.labels(key, blob.digest, meta), dict(meta))

    def meta_from_labels(self, labels):
        return {"n": int(labels["dev.ferry.toy.n"])} if "dev.ferry.toy.n" in labels else None

    def labels(self, key, digest, meta):
        return {**super().labels(key, digest, meta), "dev.ferry.toy.n": str(meta.get("n", 0))}


def image_with(layers: list[Layer], extra_labels: dict | None = None, diff_ids=None) -> Image:
    labels = {k: v for layer in layers for k, v in layer.labels.items()}
    labels.update(extra_labels or {})
    cfg = {"architecture": "amd64", "os": "linux", "config": {"Labels": labels},
           "rootfs": {"type": "layers", "diff_ids": diff_ids if diff_ids is not None else [l.diff_id for l in layers]}}
    blobs = tuple(Blob(l.digest, l.size, OCI_LAYER_GZIP, source="127.0.0.1:5000/app") for l in layers)
    return Image(Blob.from_bytes(canonical_json(cfg), OCI_CONFIG), blobs)


def ctx(tmp_path: Path, name: str, previous: Image | None = None) -> StepContext:
    return StepContext(Platform(), Cache(tmp_path / name), "127.0.0.1:5000/app",
                       fetch_previous=(lambda: previous) if previous is not None else None)


def test_a_step_is_made_once_then_found_in_the_local_cache(tmp_path):
    step = Toy(b"one")
    first = run_step(step, ctx(tmp_path, "c"))
    second = run_step(step, ctx(tmp_path, "c"))
    assert (first.origin, second.origin, step.made) == ("built", "cache", 1)
    assert second.digest == first.digest and second.meta == {"n": 3}
    assert first.labels == {"dev.ferry.toy.key": "k1", "dev.ferry.toy.layer": first.digest, "dev.ferry.toy.n": "3"}


def test_a_fresh_machine_reuses_the_layer_the_previous_image_recorded(tmp_path):
    made = run_step(Toy(b"one"), ctx(tmp_path, "machine-one"))
    step = Toy(b"one")
    again = run_step(step, ctx(tmp_path, "machine-two", previous=image_with([made])))
    assert (again.origin, step.made) == ("registry", 0)
    assert again.digest == made.digest and again.diff_id == made.diff_id and again.meta == {"n": 3}
    assert again.blob.data is None and again.blob.path is None and again.blob.source == "127.0.0.1:5000/app"


def test_the_previous_image_is_fetched_only_when_the_local_cache_misses(tmp_path):
    asked = []
    step = Toy(b"one")
    c = StepContext(Platform(), Cache(tmp_path / "c"), "r", fetch_previous=lambda: asked.append(1))
    run_step(step, c)
    run_step(Toy(b"two", key="k2"), c)  # a second miss: the previous image is not fetched again
    c2 = StepContext(Platform(), Cache(tmp_path / "c"), "r", fetch_previous=lambda: asked.append(1))
    run_step(step, c2)  # a hit: not fetched at all
    assert asked == [1]


@pytest.mark.parametrize("why", ["other key", "layer not in the image", "diff_ids do not line up", "labels unreadable"])
def test_a_previous_image_that_does_not_match_is_not_reused(tmp_path, why):
    made = run_step(Toy(b"one"), ctx(tmp_path, "m1"))
    if why == "other key":
        prev = image_with([made], {"dev.ferry.toy.key": "k0"})
    elif why == "layer not in the image":
        prev = image_with([made], {"dev.ferry.toy.layer": "sha256:" + "0" * 64})
    elif why == "diff_ids do not line up":
        prev = image_with([made], diff_ids=[])
    else:
        prev = image_with([Layer("toy", "k1", made.blob, made.diff_id, "built", "toy",
                                 {"dev.ferry.toy.key": "k1", "dev.ferry.toy.layer": made.digest})])
    step = Toy(b"one")
    again = run_step(step, ctx(tmp_path, "m2", previous=prev))
    assert (again.origin, step.made) == ("built", 1)


def test_recorded_layer_reads_key_layer_and_diff_id_from_the_config():
    a = Layer("deps", "k", Blob("sha256:aa", 3, OCI_LAYER_GZIP), "sha256:a1", "built", "x",
              {"dev.ferry.deps.key": "k", "dev.ferry.deps.layer": "sha256:aa"})
    b = Layer("source", "s", Blob("sha256:bb", 4, OCI_LAYER_GZIP), "sha256:b1", "built", "y")
    prev = image_with([a, b])
    blob, diff_id, labels = recorded_layer(prev, "deps", "k")
    assert (blob.digest, blob.size, diff_id, blob.source) == ("sha256:aa", 3, "sha256:a1", "127.0.0.1:5000/app")
    assert recorded_layer(prev, "deps", "other") is None
    assert recorded_layer(prev, "source", "s") is None  # never recorded
    assert recorded_layer(None, "deps", "k") is None


# --- the dependency step --------------------------------------------------------------------------

def fake_install(calls):
    def install(spec, target, work, uv_cache, environ=None, runner=None):
        calls.append(str(spec.platform))
        for line in spec.requirements.path.read_text().split():
            name, _, version = line.partition("==")
            (target / f"{name}-{version}.dist-info").mkdir(parents=True)
            (target / f"{name}-{version}.dist-info" / "METADATA").write_text(f"Name: {name}\nVersion: {version}\n")
            (target / name).mkdir()
            (target / name / "__init__.py").write_text("")
        (target / "bin").mkdir()
        (target / "bin" / "gunicorn").write_text("#!/host/python3\nimport gunicorn\n")
        return "fake"
    return install


def test_the_dependency_step_records_its_inventory_for_a_fresh_machine(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(deps_mod, "install", fake_install(calls))
    (tmp_path / "requirements.txt").write_text("gunicorn==22.0.0\n")
    step = DepsStep(DepsSpec(read_requirements(tmp_path / "requirements.txt"), Platform(), "3.11",
                             shebang="/usr/bin/python3"))
    layer = run_step(step, ctx(tmp_path, "c"))
    assert (layer.kind, layer.origin, layer.path, layer.pythonpath) == ("deps", "built", "/app/deps/bin", "/app/deps")
    assert (layer.scripts, layer.modules) == (("gunicorn",), ("gunicorn",))
    inventory = layer.labels.pop("dev.ferry.deps.inventory")
    assert layer.labels == {"dev.ferry.deps.key": step.key(), "dev.ferry.deps.layer": layer.digest}
    plain = '{"modules":["gunicorn"],"packages":[{"name":"gunicorn","version":"22.0.0"}],"scripts":["gunicorn"]}'
    assert inventory.startswith("zlib+base64:")  # the config travels with every build: kept small
    assert zlib.decompress(base64.b64decode(inventory.split(":", 1)[1])).decode() == plain
    # images built before the label was compressed are read too
    assert step.meta_from_labels({"dev.ferry.deps.inventory": plain}) == step.meta_from_labels(
        {"dev.ferry.deps.inventory": inventory}) == {"packages": [{"name": "gunicorn", "version": "22.0.0"}],
                                                     "scripts": ["gunicorn"], "modules": ["gunicorn"]}
    assert step.meta_from_labels({"dev.ferry.deps.inventory": "zlib+base64:!!!"}) is None
    layer.labels["dev.ferry.deps.inventory"] = inventory
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.blob.read()))) as t:
        assert t.extractfile("app/deps/bin/gunicorn").read().startswith(b"#!/usr/bin/python3\n")
    again = run_step(step, ctx(tmp_path, "fresh", previous=image_with([layer])))
    assert again.origin == "registry" and calls == ["linux/amd64"]
    assert (again.scripts, again.meta["packages"]) == (("gunicorn",), [{"name": "gunicorn", "version": "22.0.0"}])
    assert step.meta_from_labels({"dev.ferry.deps.inventory": "not json"}) is None


# --- the source step and contributions ------------------------------------------------------------

def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "hello").mkdir(parents=True)
    (src / "hello" / "__init__.py").write_text("app = 1\n")
    return src


def test_the_source_key_is_the_one_earlier_builds_used(tmp_path):
    src = collect(source(tmp_path), "/app", ())
    step = SourceStep(src, tmp_path / "src", "/app", 1)
    # the local caches of earlier ferry versions stay valid: same key for the same content
    assert step.key() == sha256(canonical_json({"recipe": "1", "content": src.key, "mtime": 1, "gzip": 6}))[7:]
    layer = run_step(step, ctx(tmp_path, "c"))
    assert layer.labels == {} and layer.files == frozenset({"app/hello/__init__.py"})
    assert run_step(step, ctx(tmp_path, "fresh", previous=image_with([layer]))).origin == "built"  # not recorded


def test_a_contribution_adds_files_to_the_source_layer_and_scripts_to_the_check(tmp_path):
    src = collect(source(tmp_path), "/app", ())
    plain = SourceStep(src, tmp_path / "src", "/app", 1)
    metadata = Contribution("the app's package", (
        Entry("app/deps/hello-1.0.dist-info/METADATA", data=b"Name: hello\nVersion: 1.0\n"),
        Entry("app/deps/bin/hello-serve", data=b"#!/usr/bin/python3\n", mode=0o755)), scripts=("hello-serve",),
        modules=("hello",))
    step = SourceStep(src, tmp_path / "src", "/app", 1, [metadata])
    assert step.key() != plain.key()
    layer = run_step(step, ctx(tmp_path, "c"))
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.blob.read()))) as t:
        assert {"app/hello/__init__.py", "app/deps/bin/hello-serve", "app/deps/hello-1.0.dist-info/METADATA"} <= set(t.getnames())
    files, scripts, modules = entrypoint_facts([layer], "/app")
    assert "deps/bin/hello-serve" in files and scripts == ("hello-serve",) and modules == ("hello",)


def test_a_contribution_that_clashes_with_a_source_file_is_a_clear_error(tmp_path):
    src = collect(source(tmp_path), "/app", ())
    clash = Contribution("x", (Entry("app/hello/__init__.py", data=b"other\n"),))
    with pytest.raises(BuildError, match="two layer entries for 'app/hello/__init__.py'"):
        run_step(SourceStep(src, tmp_path / "src", "/app", 1, [clash]), ctx(tmp_path, "c"))


def test_entrypoint_facts_are_unknown_when_one_layer_does_not_know():
    known = Layer("source", "s", Blob("sha256:s", 1, OCI_LAYER_GZIP), "d", "built", "x",
                  files=frozenset({"app/main.py", "etc/other"}))
    unknown = Layer("deps", "d", Blob("sha256:d", 1, OCI_LAYER_GZIP), "d", "registry", "y", scripts=None, modules=None)
    assert entrypoint_facts([known], "/app") == ({"main.py"}, (), ())
    assert entrypoint_facts([unknown, known], "/app") == ({"main.py"}, None, None)


# --- the assembler ---------------------------------------------------------------------------------

def test_the_assembler_stacks_the_base_then_the_steps_layers_in_order(tmp_path):
    base_cfg = {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": ["sha256:b1"]}}
    base = Image(Blob.from_bytes(canonical_json(base_cfg), OCI_CONFIG),
                 (Blob("sha256:bb", 9, "application/vnd.docker.image.rootfs.diff.tar.gzip", source="r/base"),))
    layers = [Layer(k, k, Blob(f"sha256:{k}", 1, OCI_LAYER_GZIP), f"sha256:{k}1", "built", f"ferry: {k}",
                    {f"dev.ferry.{k}.key": k}) for k in ("packages", "deps", "source", "build")]
    spec = BuildSpec(app="a", repository="r/a", base="r/base", source=tmp_path, entrypoint=("python3",))
    img = assemble(spec, BaseImage(base, "sha256:base", base_cfg, ("sha256:b1",)), layers, Platform())
    assert [b.digest for b in img.layers] == ["sha256:bb", "sha256:packages", "sha256:deps", "sha256:source", "sha256:build"]
    assert img.layers[0].media_type == OCI_LAYER_GZIP
    cfg = img.config_json()
    assert cfg["rootfs"]["diff_ids"] == ["sha256:b1", "sha256:packages1", "sha256:deps1", "sha256:source1", "sha256:build1"]
    assert [h["created_by"] for h in cfg["history"]] == ["base image layer", "ferry: packages", "ferry: deps",
                                                         "ferry: source", "ferry: build"]
    assert {f"dev.ferry.{k}.key" for k in ("packages", "deps", "source", "build")} <= set(cfg["config"]["Labels"])
    assert img.annotations["org.opencontainers.image.base.digest"] == "sha256:base"


def test_a_lock_whose_markers_leave_the_platform_out_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(deps_mod, "install", lambda spec, target, work, uv_cache, environ=None: "fake")  # installs nothing
    (tmp_path / "requirements.txt").write_text("six==1.16.0 ; sys_platform == 'darwin'\n")
    step = DepsStep(DepsSpec(read_requirements(tmp_path / "requirements.txt"), Platform("linux", "arm64"), "3.11"))
    with pytest.raises(BuildError) as e:
        run_step(step, ctx(tmp_path, "c"))
    assert e.value.message == ("requirements.txt names 1 distribution, but none is for linux/arm64 (CPython 3.11): "
                               "their environment markers leave it out; the lock was made for another platform")
    assert "aarch64-manylinux_2_28" in e.value.hint
    (tmp_path / "requirements.txt").write_text("# nothing yet\n")
    empty = DepsStep(DepsSpec(read_requirements(tmp_path / "requirements.txt"), Platform(), "3.11"))
    assert run_step(empty, ctx(tmp_path, "c")).meta["packages"] == []  # an empty list is no error

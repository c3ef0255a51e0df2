"""The dependency layer's bytecode, against the local target: compiled by the base's own
Python, used by the image's Python as it starts (no module of /app/deps compiled in memory),
hash-checked against its source, and reproducible from two empty caches."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from ferry.images import sandbox

from .test_build import App

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def target(local_target) -> dict:
    return local_target


@pytest.fixture(scope="module")
def uv_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("uv-cache")


def build_json(app: App, *args: str, env: dict | None = None) -> tuple[dict, str]:
    r = app.build("--json", *args, env=env)
    return json.loads(r.stdout), r.stderr


def deps_members(app: App, doc: dict, platform: str = "linux/amd64") -> list[str]:
    """The file names in the dependency layer, read from ferry's cache (the blob it built)."""
    digest = next(d["layer"] for d in doc["deps"] if d["platform"].startswith(platform))
    blob = app.cache / "blobs" / "sha256" / digest[7:]
    if not blob.is_file():
        blob = next(p for p in app.cache.rglob(digest[7:]) if p.is_file())
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob.read_bytes()))) as tar:
        return tar.getnames()


def test_the_deps_layer_has_bytecode_the_image_s_python_uses_without_compiling(tmp_path, target, uv_cache,
                                                                               docker_cli):
    app = App(tmp_path / "pyc", target["registry"], target["base_image"], f"ferry-test/pyc-{uuid.uuid4().hex[:8]}",
              uv_cache)
    doc, err = build_json(app, "--to-docker", "--tag", "pyc", env={"DOCKER_HOST": target["docker_host"]})
    assert "no bytecode" not in err, err[-2000:]
    names = deps_members(app, doc)
    assert "app/deps/flask/__pycache__/__init__.cpython-311.pyc" in names
    assert "app/deps/werkzeug/routing/__pycache__/rules.cpython-311.pyc" in names
    image = f"{app.registry}/{app.repo}:pyc"
    v = subprocess.run([*docker_cli, "run", "--rm", "--network", "host", "--entrypoint", "python3", image,
                        "-v", "-c", "import flask, werkzeug.routing"], capture_output=True, text=True, timeout=120)
    assert v.returncode == 0, v.stderr[-2000:]
    lines = v.stderr.splitlines()
    assert "# /app/deps/flask/__pycache__/__init__.cpython-311.pyc matches /app/deps/flask/__init__.py" in lines
    loaded = [ln for ln in lines if ln.startswith("# code object from ") and "/app/deps/" in ln]
    assert loaded and all(".pyc" in ln for ln in loaded), [ln for ln in loaded if ".pyc" not in ln][:5]
    # hash-checked: flags 3 and the source's hash, so an edited source is never run as its old .pyc
    check = ("import importlib.util as u, flask; p = flask.__file__; h = open(u.cache_from_source(p), 'rb').read(16); "
             "print(int.from_bytes(h[4:8], 'little'), h[8:16] == u.source_hash(open(p, 'rb').read()))")
    r = subprocess.run([*docker_cli, "run", "--rm", "--network", "host", "--entrypoint", "python3", image, "-c", check],
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["3", "True"], r.stderr[-2000:]
    subprocess.run([*docker_cli, "rmi", image], capture_output=True, timeout=60)


def test_two_empty_caches_and_other_file_times_give_one_deps_digest(tmp_path, target, uv_cache):
    repo = f"ferry-test/pyc-repro-{uuid.uuid4().hex[:8]}"
    one = App(tmp_path / "one", target["registry"], target["base_image"], repo, uv_cache)
    two = App(tmp_path / "elsewhere" / "two", target["registry"], target["base_image"], repo, uv_cache)
    for i, p in enumerate(sorted((two.root / "hello").rglob("*"))):
        os.utime(p, (1_500_000_000 + i, 1_500_000_000 + i))
    a, _ = build_json(one)
    b, _ = build_json(two)
    assert a["deps"][0]["origin"] == b["deps"][0]["origin"] == "built"
    assert a["deps"][0]["layer"] == b["deps"][0]["layer"]
    assert a["digest"] == b["digest"]
    assert any(n.endswith(".cpython-311.pyc") for n in deps_members(one, a))


def layer_files(app: App, doc: dict, platform: str) -> dict[str, bytes]:
    digest = next(d["layer"] for d in doc["deps"] if d["platform"].startswith(platform))
    blob = next(p for p in app.cache.rglob(digest[7:]) if p.is_file())
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob.read_bytes()))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_arm64_gets_the_bytecode_of_amd64_s_python_when_this_machine_cannot_run_it(tmp_path, target, uv_cache):
    app = App(tmp_path / "multi", target["registry"], target["base_image"],
              f"ferry-test/pyc-multi-{uuid.uuid4().hex[:8]}", uv_cache, platforms=("linux/amd64", "linux/arm64"))
    doc, err = build_json(app)
    amd, arm = layer_files(app, doc, "linux/amd64"), layer_files(app, doc, "linux/arm64")
    pyc = "app/deps/flask/__pycache__/app.cpython-311.pyc"
    assert amd[pyc] == arm[pyc]  # the same source, the same Python: the same bytes
    assert "no bytecode" not in err, err[-2000:]
    if not sandbox.can_run("arm64", sandbox.machine_architecture(), sandbox.read_binfmt()):
        assert "dependency layer linux/arm64: bytecode compiled by the linux/amd64 base's Python" in err


def test_a_lone_platform_this_machine_cannot_run_gets_no_bytecode_and_a_warning(tmp_path, target, uv_cache):
    app = App(tmp_path / "arm", target["registry"], target["base_image"], f"ferry-test/pyc-arm-{uuid.uuid4().hex[:8]}",
              uv_cache, platforms=("linux/arm64",))
    doc, err = build_json(app)
    arm = deps_members(app, doc, "linux/arm64")
    if sandbox.can_run("arm64", sandbox.machine_architecture(), sandbox.read_binfmt()):
        assert any(n.endswith(".cpython-311.pyc") for n in arm)
    else:
        assert not any(n.endswith(".pyc") or "__pycache__" in n for n in arm)
        assert "dependency layer linux/arm64: no bytecode: this" in err and "qemu-user" in err

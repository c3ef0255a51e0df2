"""`ferry build` end to end against the local target's registry (127.0.0.1:5000), its base
image and its Docker engine: push, inspect with skopeo, reproducibility across checkouts,
layer-by-layer uploads, the registry as the cache, multi-platform wheels, and running the
image."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
HELLO = ROOT / "examples" / "hello"
FERRY = [sys.executable, "-m", "ferry"]
ELF_MACHINE = {62: "x86_64", 183: "aarch64"}


@pytest.fixture(scope="module")
def target(local_target) -> dict:
    return local_target


@pytest.fixture(scope="module")
def uv_cache(tmp_path_factory) -> Path:
    # shared by the tests of this module so wheels are downloaded once; ferry's own layer
    # cache stays per test (FERRY_CACHE_DIR), which is what the tests are about
    return tmp_path_factory.mktemp("uv-cache")


class App:
    """A checkout of the sample service with its own ferry.toml, repository and cache."""

    def __init__(self, root: Path, registry: str, base: str, repo: str, uv_cache: Path,
                 platforms=("linux/amd64",), cache: Path | None = None):
        self.root = root
        self.repo = repo
        self.registry = registry
        self.cache = cache or root.parent / f"{root.name}-cache"
        self.uv_cache = uv_cache
        if not root.exists():
            shutil.copytree(HELLO, root / "hello", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        self.write_config(base, platforms)

    def write_config(self, base, platforms, entrypoint=None, requirements="hello/requirements.txt"):
        entrypoint = entrypoint or ["python3", "-m", "gunicorn", "-c", "gunicorn.conf.py", "hello:app"]
        (self.root / "ferry.toml").write_text(f"""
[app]
name = "hello"
[image]
repository = "{self.registry}/{self.repo}"
base = "{base}"
source = "hello"
requirements = "{requirements}"
entrypoint = {json.dumps(entrypoint)}
port = 8000
platforms = {json.dumps(list(platforms))}
""")

    def build(self, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        e = {**os.environ, "FERRY_CACHE_DIR": str(self.cache), "UV_CACHE_DIR": str(self.uv_cache), **(env or {})}
        r = subprocess.run([*FERRY, "-c", str(self.root / "ferry.toml"), "build", *args], cwd=self.root, env=e,
                           capture_output=True, text=True, timeout=600)
        if check and r.returncode != 0:
            pytest.fail(f"ferry build {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-4000:]}")
        return r

    def push(self, *args: str, env: dict | None = None) -> dict:
        r = self.build("--push", "--json", *args, env=env)
        return json.loads(r.stdout)


def skopeo(*args: str) -> str:
    r = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def registry_get(registry: str, path: str, accept: str | None = None) -> bytes:
    req = urllib.request.Request(f"http://{registry}{path}")
    if accept:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()


def uploaded_roles(doc: dict) -> set[str]:
    return {layer["role"] for layer in doc["layers"] if layer["uploaded"]}


@pytest.fixture
def app(tmp_path, target, uv_cache) -> App:
    return App(tmp_path / "checkout", target["registry"], target["base_image"], f"ferry-test/build-{uuid.uuid4().hex[:8]}",
               uv_cache)


def test_push_prints_the_digest_and_skopeo_sees_the_image(app, tmp_path):
    doc = app.push("--sbom", str(tmp_path / "sbom.json"))
    name = f"{app.registry}/{app.repo}"
    assert doc["image"] == f"{name}@{doc['digest']}" and doc["digest"].startswith("sha256:")
    assert [layer["role"] for layer in doc["layers"]][-2:] == ["deps", "source"]
    assert all(set(layer) >= {"digest", "size", "uploaded"} for layer in doc["layers"])
    assert doc["bytes_uploaded"] > 0

    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{name}:latest"))
    assert info["Digest"] == doc["digest"]
    assert info["Layers"] == [layer["digest"] for layer in doc["layers"]]
    config = json.loads(skopeo("inspect", "--config", "--tls-verify=false", f"docker://{name}@{doc['digest']}"))
    c = config["config"]
    assert c["Entrypoint"] == ["python3", "-m", "gunicorn", "-c", "gunicorn.conf.py", "hello:app"]
    assert c["WorkingDir"] == "/app" and c["User"] == "65532:65532" and "8000/tcp" in c["ExposedPorts"]
    assert c["Labels"]["dev.ferry.health.path"] == "/healthz"
    assert c["Labels"]["dev.ferry.deps.key"] == doc["deps"][0]["key"]
    assert config["created"] == "1970-01-01T00:00:01Z"

    layout = tmp_path / "layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{name}@{doc['digest']}", f"oci:{layout}:hello")
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    assert [layer["digest"] for layer in manifest["layers"]] == info["Layers"]

    sbom = json.loads((tmp_path / "sbom.json").read_text())
    names = {p["name"].lower() for p in sbom["packages"]}
    assert {"flask", "gunicorn", "prometheus-client", "werkzeug"} <= {n.replace("_", "-") for n in names}
    assert doc["sbom"]["attached"]["subject"] == doc["digest"]
    # the attached SBOM is findable from the image (OCI 1.1 tag scheme on distribution 2.8)
    rtag = "sha256-" + doc["digest"][7:]
    referrers = json.loads(registry_get(app.registry, f"/v2/{app.repo}/manifests/{rtag}",
                                        "application/vnd.oci.image.index.v1+json"))
    assert any(m.get("artifactType") == "application/spdx+json" for m in referrers["manifests"])


def test_two_checkouts_with_different_file_times_push_one_digest(tmp_path, target, uv_cache):
    repo = f"ferry-test/repro-{uuid.uuid4().hex[:8]}"
    one = App(tmp_path / "one", target["registry"], target["base_image"], repo, uv_cache)
    two = App(tmp_path / "elsewhere" / "two", target["registry"], target["base_image"], repo, uv_cache)
    for i, p in enumerate(sorted((two.root / "hello").rglob("*"))):
        os.utime(p, (1_500_000_000 + i, 1_500_000_000 + i))
        os.chmod(p, 0o700 if p.is_dir() else 0o600)
    a = one.push()
    b = two.push()
    assert a["digest"] == b["digest"]
    assert b["bytes_uploaded"] == 0


def test_source_change_uploads_only_the_source_layer_and_no_change_uploads_nothing(app):
    first = app.push()
    init = app.root / "hello" / "hello" / "__init__.py"
    init.write_text(init.read_text().replace('GREETING = "hello from ferry"', 'GREETING = "hello again"'))
    second = app.push()
    assert second["digest"] != first["digest"]
    assert uploaded_roles(second) == {"source"}
    assert second["bytes_uploaded"] < 20_000  # the source layer and the config
    assert second["deps"][0]["origin"] == "cache"
    third = app.push()
    assert third["digest"] == second["digest"]
    assert third["bytes_uploaded"] == 0 and uploaded_roles(third) == set()
    assert third["sbom"]["attached"]["bytes_uploaded"] == 0


def test_requirements_change_uploads_only_the_deps_layer(app):
    app.push()
    req = app.root / "hello" / "requirements.txt"
    req.write_text(req.read_text() + "six==1.16.0\n")
    doc = app.push()
    assert uploaded_roles(doc) == {"deps"}
    assert doc["deps"][0]["origin"] == "built"


def test_fresh_machine_reuses_the_deps_layer_from_the_registry_without_resolving(app, tmp_path):
    first = app.push()
    shutil.rmtree(app.cache)
    # an index that cannot answer: if anything were resolved or downloaded, the build would fail
    offline = {"UV_OFFLINE": "1", "UV_DEFAULT_INDEX": "http://127.0.0.1:9/simple",
               "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "UV_CACHE_DIR": str(tmp_path / "empty-uv")}
    doc = app.push(env=offline)
    assert doc["deps"][0]["origin"] == "registry"
    assert doc["digest"] == first["digest"]
    assert doc["bytes_uploaded"] == 0
    # and a source change on that fresh machine uploads only the source layer
    shutil.rmtree(app.cache)
    (app.root / "hello" / "hello" / "extra.py").write_text("X = 1\n")
    changed = app.push(env=offline)
    assert uploaded_roles(changed) == {"source"} and changed["bytes_uploaded"] < 20_000


def test_multi_platform_push_is_an_index_and_arm64_gets_aarch64_wheels(tmp_path, target, uv_cache):
    app = App(tmp_path / "multi", target["registry"], target["base_image"], f"ferry-test/multi-{uuid.uuid4().hex[:8]}",
              uv_cache, platforms=("linux/amd64", "linux/arm64"))
    doc = app.push()
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{app.registry}/{app.repo}@{doc['digest']}"))
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    archs = {m["platform"]["architecture"]: m["digest"] for m in raw["manifests"]}
    assert set(archs) == {"amd64", "arm64"}
    for arch, expected in (("arm64", "aarch64"), ("amd64", "x86_64")):
        manifest = json.loads(registry_get(app.registry, f"/v2/{app.repo}/manifests/{archs[arch]}",
                                           "application/vnd.oci.image.manifest.v1+json"))
        config = json.loads(registry_get(app.registry, f"/v2/{app.repo}/blobs/{manifest['config']['digest']}"))
        assert config["architecture"] == arch
        deps_digest = config["config"]["Labels"]["dev.ferry.deps.layer"]
        layer = gzip.decompress(registry_get(app.registry, f"/v2/{app.repo}/blobs/{deps_digest}"))
        machines = set()
        with tarfile.open(fileobj=io.BytesIO(layer)) as t:
            for m in t.getmembers():
                if m.name.endswith(".so"):
                    head = t.extractfile(m).read(20)
                    assert head[:4] == b"\x7fELF"
                    machines.add(ELF_MACHINE.get(int.from_bytes(head[18:20], "little"), "other"))
        assert machines == {expected}, f"{arch} image has .so files for {machines}"


def test_to_tar_to_oci_and_to_docker_write_the_same_image(app, tmp_path, target, docker_cli):
    doc = json.loads(app.build("--to-tar", str(tmp_path / "img.tar"), "--json").stdout)
    config = json.loads(skopeo("inspect", "--config", f"docker-archive:{tmp_path / 'img.tar'}"))
    info = json.loads(skopeo("inspect", f"docker-archive:{tmp_path / 'img.tar'}"))
    assert info["Layers"] == config["rootfs"]["diff_ids"] and len(info["Layers"]) == len(doc["layers"])
    assert config["config"]["Entrypoint"][:3] == ["python3", "-m", "gunicorn"]

    app.build("--to-oci", str(tmp_path / "layout"), "--tag", "t1")
    oci = json.loads(skopeo("inspect", f"oci:{tmp_path / 'layout'}:t1"))
    assert oci["Digest"] == doc["digest"]
    assert oci["Layers"] == [layer["digest"] for layer in doc["layers"]]

    loaded = json.loads(app.build("--to-docker", "--json", env={"DOCKER_HOST": target["docker_host"]}).stdout)
    name = f"{app.registry}/{app.repo}:latest"
    try:
        image_id = subprocess.run([*docker_cli, "image", "inspect", "-f", "{{.Id}}", name],
                                  capture_output=True, text=True, timeout=60).stdout.strip()
        expected = json.loads(skopeo("inspect", "--raw", f"oci:{tmp_path / 'layout'}:t1"))["config"]["digest"]
        assert image_id == expected == loaded["digest"]
    finally:
        subprocess.run([*docker_cli, "rmi", name], capture_output=True, timeout=60)


def test_a_missing_entrypoint_module_fails_before_anything_is_pushed(app):
    app.write_config(app_base(app), ("linux/amd64",), entrypoint=["python3", "-m", "helo"])
    r = app.build("--push", check=False)
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("ferry: error: image.entrypoint needs the module 'helo'")
    assert "fix image.entrypoint" in err
    with pytest.raises(urllib.error.HTTPError):
        registry_get(app.registry, f"/v2/{app.repo}/manifests/latest")


def test_a_requirement_without_a_wheel_for_the_platform_is_a_clear_error(app):
    req = app.root / "hello" / "requirements.txt"
    # wheels for Windows only and no sdist (an sdist-only package is built when it is pure Python,
    # refused by name when it compiles code: tests/integration/images/test_deps_real_apps.py)
    req.write_text("pywin32==306\n")
    app.write_config(app_base(app), ("linux/arm64",))
    r = app.build("--push", check=False)
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()[-1]
    assert "requirements.txt cannot be installed for linux/arm64" in err
    assert "pywin32" in err and "wheel" in err


def app_base(app: App) -> str:
    text = (app.root / "ferry.toml").read_text()
    return text.split('base = "', 1)[1].split('"', 1)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_built_image_runs_and_answers_healthz(app, target, docker_cli):
    doc = app.push()
    port = free_port()
    name = f"ferry-build-test-{uuid.uuid4().hex[:8]}"
    run = subprocess.run([*docker_cli, "run", "-d", "--name", name, "--network", "host", "-e", f"PORT={port}",
                          doc["image"]], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    try:
        deadline = time.monotonic() + 60
        last = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    assert resp.status == 200
                    assert json.loads(resp.read()) == {"status": "ok"}
                    break
            except (OSError, urllib.error.URLError) as e:
                last = e
                state = subprocess.run([*docker_cli, "inspect", "-f", "{{.State.Running}}", name],
                                       capture_output=True, text=True).stdout.strip()
                if state == "false":
                    logs = subprocess.run([*docker_cli, "logs", name], capture_output=True, text=True)
                    pytest.fail(f"container exited:\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}")
                time.sleep(0.3)
        else:
            pytest.fail(f"/healthz never answered: {last}")
        assert docker_inspect_user(docker_cli, name) == "65532:65532"
        # console scripts start with the image's Python, not the build machine's
        script = subprocess.run([*docker_cli, "run", "--rm", "--network", "host", "--entrypoint", "gunicorn",
                                 doc["image"], "--version"], capture_output=True, text=True, timeout=120)
        assert script.returncode == 0 and "gunicorn (version 22.0.0)" in script.stdout + script.stderr, script.stderr
    finally:
        subprocess.run([*docker_cli, "rm", "-f", name], capture_output=True, timeout=60)


def docker_inspect_user(docker_cli, name: str) -> str:
    r = subprocess.run([*docker_cli, "inspect", "-f", "{{.Config.User}}", name], capture_output=True, text=True)
    return r.stdout.strip()


def test_pyproject_with_uv_lock_installs_the_locked_versions(tmp_path, target, uv_cache):
    svc = tmp_path / "svc"
    svc.mkdir()
    (svc / "pyproject.toml").write_text('[project]\nname = "svc"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
                                        'dependencies = ["six>=1.15", "markupsafe>=2.1"]\n')
    (svc / "main.py").write_text("print('hi')\n")
    lock = subprocess.run([sys.executable, "-m", "uv", "lock", "--project", str(svc)], capture_output=True, text=True,
                          env={**os.environ, "UV_CACHE_DIR": str(uv_cache)}, timeout=300)
    assert lock.returncode == 0, lock.stderr
    locked = {}
    for block in (svc / "uv.lock").read_text().split("[[package]]")[1:]:
        fields = dict(line.split(" = ", 1) for line in block.strip().splitlines()[:2])
        locked[fields["name"].strip('"')] = fields["version"].strip('"')
    (tmp_path / "ferry.toml").write_text(f"""
[app]
name = "svc"
[image]
repository = "{target['registry']}/ferry-test/lock-{uuid.uuid4().hex[:8]}"
base = "{target['base_image']}"
source = "svc"
requirements = "svc/pyproject.toml"
entrypoint = ["python3", "main.py"]
platforms = ["linux/arm64"]
""")
    env = {**os.environ, "FERRY_CACHE_DIR": str(tmp_path / "cache"), "UV_CACHE_DIR": str(uv_cache)}
    r = subprocess.run([*FERRY, "-c", str(tmp_path / "ferry.toml"), "build", "--json", "--sbom", str(tmp_path / "s.json")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "not reproducible" not in r.stderr  # a lock file pins everything
    sbom = json.loads((tmp_path / "s.json").read_text())
    got = {p["name"].lower(): p["versionInfo"] for p in sbom["packages"][1:]}
    assert got == {"six": locked["six"], "markupsafe": locked["markupsafe"]}


def test_unpinned_requirements_build_with_a_warning(app):
    (app.root / "hello" / "requirements.txt").write_text("flask>=3\ngunicorn\nprometheus-client==0.20.0\n")
    r = app.build("--json")
    assert "warning: requirements.txt: not pinned to exact versions: flask, gunicorn" in r.stderr
    assert json.loads(r.stdout)["warnings"]


def so_machines(layer_tar: bytes) -> set[str]:
    machines = set()
    with tarfile.open(fileobj=io.BytesIO(layer_tar)) as t:
        for m in t.getmembers():
            if m.name.endswith(".so"):
                head = t.extractfile(m).read(20)
                machines.add(ELF_MACHINE.get(int.from_bytes(head[18:20], "little"), "other"))
    return machines


def test_pip_installs_arm64_wheels_when_uv_is_not_used(app, tmp_path):
    app.write_config(app_base(app), ("linux/arm64",))
    r = app.build("--to-oci", str(tmp_path / "layout"), "--json", env={"FERRY_INSTALLER": "pip"})
    doc = json.loads(r.stdout)
    assert doc["deps"][0]["origin"] == "built"
    deps_digest = doc["deps"][0]["layer"]
    layer = gzip.decompress((tmp_path / "layout" / "blobs" / "sha256" / deps_digest[7:]).read_bytes())
    assert so_machines(layer) == {"aarch64"}
    with tarfile.open(fileobj=io.BytesIO(layer)) as t:
        installer = t.extractfile("app/deps/gunicorn-22.0.0.dist-info/INSTALLER").read()
        shebang = t.extractfile("app/deps/bin/gunicorn").read().split(b"\n", 1)[0]
        assert not any(n.endswith(".pyc") for n in t.getnames())
    assert installer.strip() == b"pip"
    assert shebang == b"#!/usr/bin/python3"  # ferry's base: no /usr/bin/env

"""Real dependency sets against the local target: a uv workspace laid out like the FastAPI
full-stack template (with an sdist-only dependency and the app's own console scripts) run with
`fastapi run`; pylock.toml from `uv export` and `pip lock`; an sdist that compiles code; and a
matrix of popular distributions, each imported inside the pushed image and listed in its SBOM.

Locks are made here, at test time, by uv and pip from the package index: nothing is pinned to
an index host in the repository."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
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

FERRY = [sys.executable, "-m", "ferry"]
UV = [sys.executable, "-m", "uv"]
ELF_MACHINE = {62: "x86_64", 183: "aarch64"}
FASTAPI_PORT = 37011


@pytest.fixture(scope="module")
def target(local_target) -> dict:
    return local_target


@pytest.fixture(scope="module")
def uv_cache(tmp_path_factory) -> Path:
    # one wheel cache for the module: each distribution is downloaded once per session
    return tmp_path_factory.mktemp("deps-uv-cache")


def write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def run_uv(uv_cache: Path, *args: str, cwd: Path) -> str:
    r = subprocess.run([*UV, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "UV_CACHE_DIR": str(uv_cache)})
    assert r.returncode == 0, f"uv {' '.join(args)}: {r.stderr[-3000:]}"
    return r.stdout


def ferry_toml(root: Path, target: dict, repo: str, **image) -> Path:
    lines = [f"[app]\nname = \"{repo.rsplit('/', 1)[-1]}\"\n[image]",
             f'repository = "{target["registry"]}/{repo}"', f'base = "{target["base_image"]}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in image.items()]
    return write(root / "ferry.toml", "\n".join(lines) + "\n")


def ferry_build(config: Path, uv_cache: Path, *args: str, cache: Path | None = None, check: bool = True):
    env = {**os.environ, "FERRY_CACHE_DIR": str(cache or config.parent / ".ferry-cache"), "UV_CACHE_DIR": str(uv_cache)}
    r = subprocess.run([*FERRY, "-c", str(config), "build", *args], cwd=config.parent, env=env,
                       capture_output=True, text=True, timeout=900)
    if check and r.returncode != 0:
        pytest.fail(f"ferry build {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return r


def last_error(r) -> str:
    assert r.returncode != 0, r.stderr
    return r.stderr.strip().splitlines()[-1]


def sbom_versions(path: Path) -> dict[str, str]:
    doc = json.loads(path.read_text())
    return {re.sub(r"[-_.]+", "-", p["name"]).lower(): p.get("versionInfo", "") for p in doc["packages"][1:]}


def locked_versions(pylock_text: str) -> dict[str, str]:
    import tomllib

    return {p["name"]: p["version"] for p in tomllib.loads(pylock_text)["packages"]}


def registry_has(registry: str, repo: str, tag: str = "latest") -> bool:
    try:
        req = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{tag}", method="HEAD",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        with urllib.request.urlopen(req, timeout=10):
            return True
    except urllib.error.HTTPError:
        return False


def so_machines(layer_gz: bytes) -> set[str]:
    out = set()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer_gz))) as t:
        for m in t.getmembers():
            if m.name.endswith(".so") or ".so." in m.name:
                head = t.extractfile(m).read(20)
                if head[:4] == b"\x7fELF":
                    out.add(ELF_MACHINE.get(int.from_bytes(head[18:20], "little"), "other"))
    return out


def docker_run(docker_cli, image: str, *argv: str, entrypoint: str | None = None, timeout: int = 300):
    cmd = [*docker_cli, "run", "--rm", "--network", "host"]
    if entrypoint:
        cmd += ["--entrypoint", entrypoint]
    return subprocess.run([*cmd, image, *argv], capture_output=True, text=True, timeout=timeout)


# --- a uv workspace like the FastAPI full-stack template ----------------------------------------

WS_ROOT = """[dependency-groups]
dev = ["pytest>=8"]

[tool.uv.workspace]
members = ["backend"]
"""
WS_APP = """[project]
name = "app"
version = "0.3.1"
description = "The template's backend"
requires-python = ">=3.11,<4.0"
dependencies = [
    "fastapi[standard]<1.0.0,>=0.114.2",
    "pydantic-settings<3.0.0,>=2.2.1",
    "dkimpy==1.1.8",  # published only as an sdist (pure Python)
]

[project.scripts]
app-info = "app.cli:main"

[dependency-groups]
dev = ["coverage>=7.4"]

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"
"""
MAIN = """from fastapi import FastAPI

app = FastAPI()


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}
"""
CLI = """import importlib.metadata as md
import sys

import dkim


def main() -> int:
    eps = sorted(e.name for e in md.entry_points(group="console_scripts") if e.value.startswith("app."))
    print(f"app {md.version('app')} scripts={','.join(eps)} dkim={dkim.__name__} argv0={sys.argv[0]}")
    return 0
"""


@pytest.fixture(scope="module")
def workspace_app(tmp_path_factory, target, uv_cache):
    root = tmp_path_factory.mktemp("deps-ws")
    write(root / "pyproject.toml", WS_ROOT)
    write(root / "backend" / "pyproject.toml", WS_APP)
    write(root / "backend" / "app" / "__init__.py", "")
    write(root / "backend" / "app" / "main.py", MAIN)
    write(root / "backend" / "app" / "cli.py", CLI)
    write(root / "frontend" / "package.json", "{}\n")
    run_uv(uv_cache, "lock", cwd=root)
    repo = f"ferry-test/deps-ws-{uuid.uuid4().hex[:8]}"
    cfg = ferry_toml(root, target, repo, source="backend", requirements="pyproject.toml", package="app",
                     entrypoint=["fastapi", "run", "app/main.py", "--host", "127.0.0.1", "--port", str(FASTAPI_PORT)],
                     port=FASTAPI_PORT)
    doc = json.loads(ferry_build(cfg, uv_cache, "--push", "--json", "--sbom", str(root / "sbom.json")).stdout)
    return root, cfg, doc


def test_a_workspace_member_runs_with_fastapi_run_and_its_own_console_script(workspace_app, uv_cache, docker_cli,
                                                                              tmp_path):
    root, cfg, doc = workspace_app
    got = sbom_versions(root / "sbom.json")
    # the oracle: what uv itself installs from the member's exported lock for this platform
    run_uv(uv_cache, "export", "--frozen", "--no-dev", "--no-emit-workspace", "--package", "app", "--format",
           "pylock.toml", "-o", str(tmp_path / "pylock.toml"), cwd=root)
    run_uv(uv_cache, "pip", "install", "--target", str(tmp_path / "site"), "--python-platform", "x86_64-manylinux_2_28",
           "--python-version", "3.11", "-r", str(tmp_path / "pylock.toml"), "--quiet", cwd=root)
    assert got == dict(d.name[:-len(".dist-info")].lower().replace("_", "-").rsplit("-", 1)
                       for d in (tmp_path / "site").glob("*.dist-info"))
    assert "dkimpy" in got and "fastapi" in got
    assert "pytest" not in got and "coverage" not in got  # dev groups stay out

    name = f"deps-ws-{uuid.uuid4().hex[:8]}"
    started = subprocess.run([*docker_cli, "run", "-d", "--name", name, "--network", "host", doc["image"]],
                             capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{FASTAPI_PORT}/healthz", timeout=2) as resp:
                    assert json.loads(resp.read()) == {"status": "ok"}
                    break
            except (OSError, urllib.error.URLError):
                state = subprocess.run([*docker_cli, "inspect", "-f", "{{.State.Running}}", name],
                                       capture_output=True, text=True).stdout.strip()
                if state == "false" or time.monotonic() > deadline:
                    logs = subprocess.run([*docker_cli, "logs", name], capture_output=True, text=True)
                    pytest.fail(f"`fastapi run` never answered /healthz:\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}")
                time.sleep(0.3)
    finally:
        subprocess.run([*docker_cli, "rm", "-f", name], capture_output=True, timeout=60)

    # the app's own script, from [project.scripts], with its metadata visible to importlib.metadata
    info = docker_run(docker_cli, doc["image"], entrypoint="app-info")
    assert info.returncode == 0, info.stderr
    assert info.stdout.strip() == "app 0.3.1 scripts=app-info dkim=dkim argv0=/app/deps/bin/app-info"


def test_a_fresh_machine_builds_the_workspace_to_the_same_digest(workspace_app, uv_cache, tmp_path):
    root, cfg, doc = workspace_app
    # a new ferry cache: the dependency layer is exported, installed and the sdist built again
    again = json.loads(ferry_build(cfg, uv_cache, "--json", "--to-oci", str(tmp_path / "oci"),
                                   cache=tmp_path / "fresh-cache").stdout)
    assert again["deps"][0]["origin"] == "built"
    assert again["digest"] == doc["digest"]
    assert list((tmp_path / "fresh-cache" / "wheels").glob("*/dkimpy-1.1.8-py3-none-any.whl"))


def test_workspace_mistakes_are_named_before_anything_is_pushed(tmp_path, target, uv_cache):
    write(tmp_path / "pyproject.toml", WS_ROOT)
    write(tmp_path / "backend" / "pyproject.toml", WS_APP)
    write(tmp_path / "backend" / "app" / "__init__.py", "")
    repo = f"ferry-test/deps-wserr-{uuid.uuid4().hex[:8]}"
    cfg = ferry_toml(tmp_path, target, repo, source="backend", requirements="pyproject.toml", package="api",
                     entrypoint=["fastapi", "run", "app/main.py"])
    err = last_error(ferry_build(cfg, uv_cache, "--push", check=False))
    assert err.startswith(f"ferry: error: image.package: 'api' is not a member of the uv workspace at {tmp_path} "
                          "(members: app (backend))")
    assert "[tool.uv.workspace] members" in err
    cfg = ferry_toml(tmp_path, target, repo, source="backend", requirements="backend/pyproject.toml",
                     entrypoint=["fastapi", "run", "app/main.py"])
    err = last_error(ferry_build(cfg, uv_cache, "--push", check=False))
    assert err == (f"ferry: error: the uv workspace at {tmp_path} has no uv.lock: the image's dependencies would not "
                   f"be locked (run `uv lock` in {tmp_path} and commit uv.lock)")
    assert not registry_has(target["registry"], repo)


# --- pylock.toml ---------------------------------------------------------------------------------

def test_a_pylock_from_uv_export_gives_each_platform_its_wheels(tmp_path, target, uv_cache):
    svc = tmp_path / "svc"
    write(svc / "pyproject.toml", '[project]\nname = "svc"\nversion = "1.0"\nrequires-python = ">=3.11"\n'
                                  'dependencies = ["orjson==3.10.16", "markupsafe>=2.1", "six>=1.16"]\n')
    write(svc / "main.py", "import orjson\nprint(orjson.dumps({'ok': True}).decode())\n")
    run_uv(uv_cache, "lock", cwd=svc)
    run_uv(uv_cache, "export", "--frozen", "--no-emit-project", "--format", "pylock.toml", "-o", "pylock.toml", cwd=svc)
    repo = f"ferry-test/deps-pylock-{uuid.uuid4().hex[:8]}"
    cfg = ferry_toml(tmp_path, target, repo, source="svc", requirements="svc/pylock.toml",
                     entrypoint=["python3", "main.py"], platforms=["linux/amd64", "linux/arm64"])
    doc = json.loads(ferry_build(cfg, uv_cache, "--json", "--to-oci", str(tmp_path / "oci"),
                                 "--sbom", str(tmp_path / "sbom.json")).stdout)
    blobs = tmp_path / "oci" / "blobs" / "sha256"
    machines = {d["platform"]: so_machines((blobs / d["layer"][7:]).read_bytes()) for d in doc["deps"]}
    assert machines == {"linux/amd64": {"x86_64"}, "linux/arm64/v8": {"aarch64"}}
    locked = locked_versions((svc / "pylock.toml").read_text())
    assert sbom_versions(tmp_path / "sbom.json") == {"markupsafe": locked["markupsafe"], "orjson": "3.10.16",
                                                     "six": locked["six"]}
    # the lock is the dependency layer's input, not the app's
    source = doc["source"]["layer"]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress((blobs / source[7:]).read_bytes()))) as t:
        assert "app/pylock.toml" not in t.getnames() and "app/main.py" in t.getnames()


def test_a_pip_lock_is_installed_for_its_machine_and_refused_for_another(tmp_path, target, uv_cache):
    svc = tmp_path / "svc"
    write(svc / "main.py", "import orjson\n")
    lock = subprocess.run([sys.executable, "-m", "pip", "lock", "orjson==3.10.16", "six==1.16.0", "-o",
                           str(svc / "pylock.toml")], capture_output=True, text=True, timeout=300)
    assert lock.returncode == 0, lock.stderr
    repo = f"ferry-test/deps-piplock-{uuid.uuid4().hex[:8]}"
    cfg = ferry_toml(tmp_path, target, repo, source="svc", requirements="svc/pylock.toml",
                     entrypoint=["python3", "main.py"], platforms=["linux/amd64"])
    ok = json.loads(ferry_build(cfg, uv_cache, "--json", "--to-oci", str(tmp_path / "oci")).stdout)
    assert ok["deps"][0]["origin"] == "built"
    cfg = ferry_toml(tmp_path, target, repo, source="svc", requirements="svc/pylock.toml",
                     entrypoint=["python3", "main.py"], platforms=["linux/arm64"])
    err = last_error(ferry_build(cfg, uv_cache, "--push", check=False))
    assert err.startswith("ferry: error: pylock.toml: no wheel (and no sdist) for linux/arm64 (CPython 3.11, "
                          "manylinux_2_28_aarch64 wheels) in the lock for: orjson 3.10.16 (wheels: "
                          "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64); it was locked for another platform")
    assert "pip lock" in err
    assert not registry_has(target["registry"], repo)


# --- sdists ---------------------------------------------------------------------------------------

C_EXT = """#include <Python.h>
static struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "fastcext", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_fastcext(void) { return PyModule_Create(&m); }
"""


def test_an_sdist_that_compiles_code_is_refused_by_name(tmp_path, target, uv_cache):
    proj = tmp_path / "fastcext"
    write(proj / "pyproject.toml", '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
                                   '[project]\nname = "fastcext"\nversion = "1.0"\n')
    write(proj / "setup.py", 'from setuptools import Extension, setup\nsetup(ext_modules=[Extension("fastcext", ["fastcext.c"])])\n')
    write(proj / "fastcext.c", C_EXT)
    write(proj / "MANIFEST.in", "include fastcext.c\n")
    run_uv(uv_cache, "build", "--sdist", "--out-dir", str(tmp_path / "svc"), cwd=proj)
    sdist = tmp_path / "svc" / "fastcext-1.0.tar.gz"
    write(tmp_path / "svc" / "main.py", "import fastcext\n")
    write(tmp_path / "svc" / "pylock.toml", f"""lock-version = "1.0"
created-by = "hand"

[[packages]]
name = "fastcext"
version = "1.0"
sdist = {{ path = "fastcext-1.0.tar.gz", hashes = {{ sha256 = "{hashlib.sha256(sdist.read_bytes()).hexdigest()}" }} }}
""")
    repo = f"ferry-test/deps-cext-{uuid.uuid4().hex[:8]}"
    cfg = ferry_toml(tmp_path, target, repo, source="svc", requirements="svc/pylock.toml",
                     entrypoint=["python3", "main.py"])
    err = last_error(ferry_build(cfg, uv_cache, "--push", check=False))
    assert err.startswith("ferry: error: pylock.toml: fastcext 1.0 is published only as an sdist that compiles code: "
                          "its wheel is cp311-cp311-linux_x86_64, built for this machine, not for linux/amd64 "
                          "(CPython 3.11, manylinux_2_28_x86_64 wheels)")
    assert "manylinux wheel" in err
    assert not registry_has(target["registry"], repo)


def test_a_hashed_requirements_file_with_an_sdist_only_package_builds(tmp_path, target, uv_cache, docker_cli):
    svc = tmp_path / "svc"
    write(svc / "requirements.in", "dkimpy==1.1.8\nsix==1.16.0\n")
    run_uv(uv_cache, "pip", "compile", "requirements.in", "--generate-hashes", "--python-version", "3.11",
           "-o", "requirements.txt", "--quiet", cwd=svc)
    write(svc / "main.py", "import dkim, six\nprint(dkim.__name__, six.__version__)\n")
    repo = f"ferry-test/deps-sdist-{uuid.uuid4().hex[:8]}"
    cfg = ferry_toml(tmp_path, target, repo, source="svc", requirements="svc/requirements.txt",
                     entrypoint=["python3", "main.py"])
    doc = json.loads(ferry_build(cfg, uv_cache, "--push", "--json", "--sbom", str(tmp_path / "sbom.json")).stdout)
    got = sbom_versions(tmp_path / "sbom.json")
    assert got["dkimpy"] == "1.1.8" and got["six"] == "1.16.0" and "dnspython" in got
    out = docker_run(docker_cli, doc["image"])
    assert out.returncode == 0 and out.stdout.strip() == "dkim 1.16.0", out.stderr


# --- a matrix of popular distributions: one build, each imported in the image ---------------------

MATRIX = {  # distribution (as pinned) -> the import that loads its compiled parts
    "numpy==2.2.4": "numpy.linalg",
    "pandas==2.2.3": "pandas",
    "pydantic==2.11.3": "pydantic",
    "psycopg[binary]==3.2.6": "psycopg",
    "SQLAlchemy==2.0.40": "sqlalchemy.cyextension",
    "cryptography==44.0.2": "cryptography.hazmat.bindings._rust",
    "Pillow==11.2.1": "PIL.Image",
    "lxml==5.3.2": "lxml.etree",
    "grpcio==1.71.0": "grpc",
    "orjson==3.10.16": "orjson",
    "uvloop==0.21.0": "uvloop",
    "celery==5.5.1": "celery",
    "Django==5.2": "django",
    "scipy==1.15.2": "scipy.linalg",
}


@pytest.fixture(scope="module")
def matrix_image(tmp_path_factory, target, uv_cache):
    root = tmp_path_factory.mktemp("deps-matrix")
    deps = ", ".join(json.dumps(d) for d in MATRIX)
    write(root / "svc" / "pyproject.toml", f'[project]\nname = "matrix"\nversion = "1.0"\nrequires-python = ">=3.11"\n'
                                           f'dependencies = [{deps}]\n')
    write(root / "svc" / "main.py", "print('matrix')\n")
    run_uv(uv_cache, "lock", cwd=root / "svc")
    repo = f"ferry-test/deps-matrix-{uuid.uuid4().hex[:8]}"
    cfg = ferry_toml(root, target, repo, source="svc", requirements="svc/pyproject.toml",
                     entrypoint=["python3", "main.py"])
    doc = json.loads(ferry_build(cfg, uv_cache, "--push", "--json", "--sbom", str(root / "sbom.json")).stdout)
    return root, doc


def test_every_popular_distribution_imports_inside_the_image(matrix_image, docker_cli):
    root, doc = matrix_image
    names = [re.split(r"[\[=]", d)[0] for d in MATRIX]
    program = ("import importlib, importlib.metadata as md, json\n"
               f"mods = {sorted(MATRIX.values())!r}\n"
               "for m in mods: importlib.import_module(m)\n"
               "import psycopg; psycopg.pq.version()  # the bundled libpq loads\n"
               "from PIL import features; assert features.check('jpg')\n"
               f"names = {names!r}\n"
               "print(json.dumps({n: md.version(n) for n in names}))\n")
    r = docker_run(docker_cli, doc["image"], "-c", program, entrypoint="python3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout) == {re.split(r"[\[=]", d)[0]: d.split("==")[1] for d in MATRIX}


def test_the_sbom_lists_every_distribution_with_its_version(matrix_image):
    root, doc = matrix_image
    got = sbom_versions(root / "sbom.json")
    for d in MATRIX:
        name, version = re.split(r"[\[=]", d)[0], d.split("==")[1]
        assert got.get(re.sub(r"[-_.]+", "-", name).lower()) == version, (name, got)
    assert got.get("psycopg-binary") == "3.2.6" and "pydantic-core" in got and "numpy" in got
    assert doc["sbom"]["attached"]["subject"] == doc["digest"]

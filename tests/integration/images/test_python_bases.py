"""ferry's Python 3.13 (trixie) and 3.14 (forky) bases, made by `ferry local up --python
3.13,3.14` into the local registry (the real ferry/python tags other tests use), read back
and run by the local dockerd; a Django 6 app (Python >= 3.12) built on 3.13, and refused on
3.11 before anything is resolved; and a base laid out like the official python:3.13-slim
(Python under /usr/local, its own PATH and PYTHON_VERSION, a dpkg status, no ferry labels),
assembled here with ferry's own image code, that an app is built on and served from."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from ferry.images import baseimage, basefacts, rootfs
from ferry.images.layers import gzip_bytes
from ferry.images.oci import OCI_CONFIG, OCI_LAYER_GZIP, Blob, Image, Platform, canonical_json, sha256
from ferry.images.publish import RegistryPublisher
from ferry.images.registry import RegistryClient

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
FERRY = [sys.executable, "-m", "ferry"]
PORTS = range(30100, 30200)  # this module's share of the bases helper's range
SUITES = {"3.13": "trixie", "3.14": "forky"}
DJANGO = """\
asgiref==3.13.0
django==6.1.3
gunicorn==27.0.1
sqlparse==0.6.1
"""


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {PORTS}")


@pytest.fixture(scope="module")
def client(local_target):
    with RegistryClient(local_target["registry"]) as c:
        yield c


@pytest.fixture(scope="module")
def up_twice(local_target) -> tuple[dict, dict]:
    """`ferry local up --python 3.13,3.14`, then again."""
    runs = []
    for _ in range(2):
        r = subprocess.run([*FERRY, "local", "up", "--python", "3.13,3.14", "--json"], cwd=ROOT, capture_output=True,
                           text=True, timeout=1800)
        assert r.returncode == 0, r.stderr[-3000:]
        runs.append(json.loads(r.stdout))
    return runs[0], runs[1]


def test_local_up_makes_the_3_13_and_3_14_bases_and_a_second_run_changes_nothing(up_twice, local_target):
    first, second = up_twice
    assert set(first["base_images"]) == set(second["base_images"]) == {"3.13", "3.14"}
    for python in ("3.13", "3.14"):
        assert first["base_images"][python]["image"] == f"{local_target['registry']}/ferry/python:{python}"
        again = second["base_images"][python]
        assert (again["action"], again["bytes_uploaded"]) == ("none", 0)
        assert again["digest"] == first["base_images"][python]["digest"]
    # (3.11 is left out: while branches with another assembler share this registry, one of
    # them may have pushed its own 3.11 between the two runs)


def _index(client, python: str) -> dict:
    data, _, _ = client.get_manifest("ferry/python", python)
    return json.loads(data)


def _platform_image(client, index: dict, arch: str) -> tuple[dict, dict]:
    (desc,) = [m for m in index["manifests"] if m["platform"]["architecture"] == arch]
    manifest = json.loads(client.get_manifest("ferry/python", desc["digest"])[0])
    config = json.loads(client.get_blob("ferry/python", manifest["config"]["digest"]))
    return manifest, config


def _layer(client, manifest: dict) -> dict[str, tarfile.TarInfo | bytes]:
    (layer,) = manifest["layers"]
    out: dict = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(client.get_blob("ferry/python", layer["digest"])))) as t:
        for m in t.getmembers():
            out[m.name] = t.extractfile(m).read() if m.isfile() else m
    return out


@pytest.mark.parametrize("python", ["3.13", "3.14"])
def test_each_base_is_amd64_and_arm64_labelled_with_its_suite_python_and_interpreter(up_twice, client, python):
    index = _index(client, python)
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]
    assert index["annotations"][baseimage.ANNOTATION_RECIPE] == baseimage.load_recipe(python=python).hash
    for arch in ("amd64", "arm64"):
        manifest, config = _platform_image(client, index, arch)
        labels = config["config"]["Labels"]
        assert labels["dev.ferry.base.suite"] == SUITES[python]
        assert labels["dev.ferry.base.python"].startswith(python + ".")
        assert labels["dev.ferry.base.interpreter"] == "/usr/bin/python3"
        assert config["config"]["User"] == "65532:65532"
        facts = basefacts.from_config(config, manifest.get("annotations"))
        assert (facts.suite, facts.python, facts.ferry) == (SUITES[python], labels["dev.ferry.base.python"], True)
        names = {p.split("=")[0] for p in manifest["annotations"][baseimage.ANNOTATION_PACKAGES].split(",")}
        assert {"libstdc++6", "libgcc-s1", f"python{python}", "ca-certificates", "tzdata"} <= names


@pytest.mark.parametrize("python", ["3.13", "3.14"])
def test_arm64_gets_the_bytecode_the_amd64_interpreter_compiled(up_twice, client, python):
    index = _index(client, python)
    amd = _layer(client, _platform_image(client, index, "amd64")[0])
    arm = _layer(client, _platform_image(client, index, "arm64")[0])
    tag = "cpython-" + python.replace(".", "")
    pyc = f"usr/lib/python{python}/json/__pycache__/decoder.{tag}.pyc"
    assert amd[pyc] == arm[pyc]
    assert int.from_bytes(amd[pyc][4:8], "little") == 0b11  # hash-checked
    # arm64's own _sysconfigdata (not in the amd64 tree) was compiled in the same run
    arm_only = [p for p in arm if p.startswith(f"usr/lib/python{python}/__pycache__/_sysconfigdata_")
                and "aarch64" in p]
    assert arm_only, sorted(p for p in arm if "sysconfigdata" in p)


def _run(docker_cli, ref: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*docker_cli, "run", "--rm", "--network", "host", ref, *argv],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("python", ["3.13", "3.14"])
def test_each_base_runs_its_python_non_root_with_ssl_libstdcxx_and_its_precompiled_stdlib(
        up_twice, local_target, docker_cli, python):
    ref = f"{local_target['registry']}/ferry/python@{up_twice[1]['base_images'][python]['digest']}"
    r = _run(docker_cli, ref, "python3", "-c",
             "import sys, os, ssl, sqlite3, ctypes, zoneinfo, json.decoder, importlib.util; "
             "ctypes.CDLL('libstdc++.so.6'); ctypes.CDLL('libgcc_s.so.1'); "
             "ctx = ssl.create_default_context(); "
             "print('%d.%d' % sys.version_info[:2], os.getuid(), os.getgid(), len(ctx.get_ca_certs()) > 100, "
             "os.path.exists(json.decoder.__cached__), zoneinfo.ZoneInfo('Europe/Paris'))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [python, "65532", "65532", "True", "True", "Europe/Paris"]


def test_the_3_13_base_assembled_again_in_an_empty_cache_is_the_same_digest(up_twice, tmp_path):
    # the same resolution and .debs (the mirror moves on between two resolutions); unpacking,
    # the sandboxed bytecode, layers, configs and manifests are all made again
    recipe = baseimage.load_recipe(python="3.13")
    shared = baseimage.Cache(baseimage.default_cache_dir())
    fresh = baseimage.Cache(tmp_path / "cache")
    for p in recipe.platforms:
        arch = Platform.parse(p).architecture
        lock = shared.lock(recipe.hash, arch)
        fresh.lock(recipe.hash, arch).parent.mkdir(parents=True, exist_ok=True)
        fresh.lock(recipe.hash, arch).write_bytes(lock.read_bytes())
    (fresh.root / "debs").symlink_to(shared.debs)
    index, _ = baseimage.build_index(recipe, fresh)
    assert index.digest == up_twice[1]["base_images"]["3.13"]["digest"]


# --------------------------------------------------------------------------- a Django 6 app

def django_app(root: Path, registry: str, base: str, python: str, requires: str = ">=3.12") -> Path:
    """A small Django 6 site (Django 6 needs Python >= 3.12) served by gunicorn on $PORT."""
    web = root / "web"
    (web / "basesite").mkdir(parents=True)
    (web / "requirements.txt").write_text(DJANGO)
    (web / "pyproject.toml").write_text(f'[project]\nname = "basesite"\nversion = "1"\nrequires-python = "{requires}"\n')
    (web / "gunicorn.conf.py").write_text('import os\nbind = "127.0.0.1:" + os.environ["PORT"]\nworkers = 1\n')
    (web / "basesite" / "__init__.py").write_text("")
    (web / "basesite" / "settings.py").write_text(
        'SECRET_KEY = "bases-test"\nDEBUG = False\nALLOWED_HOSTS = ["127.0.0.1"]\nROOT_URLCONF = "basesite.urls"\n'
        "INSTALLED_APPS = []\nMIDDLEWARE = []\nDATABASES = {}\nUSE_TZ = True\n")
    (web / "basesite" / "urls.py").write_text(
        "import sys\nimport django\nfrom django.http import HttpResponse\nfrom django.urls import path\n\n\n"
        "def index(request):\n"
        "    return HttpResponse(f'django {django.__version__} on python {sys.version.split()[0]} at {sys.executable}')\n\n\n"
        'urlpatterns = [path("", index)]\n')
    (web / "basesite" / "wsgi.py").write_text(
        'import os\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", "basesite.settings")\n'
        "from django.core.wsgi import get_wsgi_application\napplication = get_wsgi_application()\n")
    repo = f"bases-test/django-{uuid.uuid4().hex[:8]}"
    (root / "ferry.toml").write_text(f"""
[app]
name = "bases-django"
[image]
repository = "{registry}/{repo}"
base = "{base}"
python = "{python}"
source = "web"
requirements = "web/requirements.txt"
entrypoint = ["python3", "-m", "gunicorn", "-c", "gunicorn.conf.py", "basesite.wsgi"]
""")
    return root / "ferry.toml"


def ferry_build(config: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FERRY_CACHE_DIR": str(cache / "ferry"), "UV_CACHE_DIR": str(cache / "uv")}
    return subprocess.run([*FERRY, "-c", str(config), "build", *args], cwd=config.parent, env=env,
                          capture_output=True, text=True, timeout=900)


def serve(docker_cli, image: str) -> str:
    """Run the image on a port of this module's range and return its answer to GET /."""
    port = free_port()
    name = f"bases-test-{uuid.uuid4().hex[:8]}"
    start = subprocess.run([*docker_cli, "run", "-d", "--rm", "--name", name, "--network", "host", "-e", f"PORT={port}",
                            image], capture_output=True, text=True, timeout=300)
    assert start.returncode == 0, start.stderr
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/", timeout=2, trust_env=False)
                if r.status_code == 200:
                    return r.text
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        logs = subprocess.run([*docker_cli, "logs", name], capture_output=True, text=True, timeout=60)
        raise AssertionError(f"no answer on {port}: {logs.stdout[-2000:]} {logs.stderr[-2000:]}")
    finally:
        subprocess.run([*docker_cli, "rm", "-f", name], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def build_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bases-build-cache")


def _cleanup(docker_cli, local_target, image: str) -> None:
    """Remove the image and everything pushed to its repository (its SBOM and signature tags
    too): the registry has no garbage collection while serving."""
    subprocess.run([*docker_cli, "rmi", "-f", image], capture_output=True, timeout=60)
    registry, rest = image.split("/", 1)
    repo = rest.split("@", 1)[0].rsplit(":", 1)[0]
    with RegistryClient(registry) as c:
        for tag in c.list_tags(repo):
            info = c.manifest_info(repo, tag)
            if info is not None:
                c.delete_manifest(repo, info.digest)


@pytest.mark.parametrize("python", ["3.13", "3.14"])
def test_a_django_6_app_builds_on_the_new_bases_and_answers(up_twice, local_target, docker_cli, tmp_path, build_cache,
                                                            python):
    config = django_app(tmp_path, local_target["registry"], f"{local_target['registry']}/ferry/python:{python}", python)
    r = ferry_build(config, build_cache, "--push", "--json")
    assert r.returncode == 0, r.stderr[-4000:]
    doc = json.loads(r.stdout)
    try:
        body = serve(docker_cli, doc["image"])
        assert body.startswith(f"django 6.1.3 on python {python}.") and body.endswith(" at /usr/bin/python3"), body
    finally:
        _cleanup(docker_cli, local_target, doc["image"])


def test_the_django_6_app_on_the_3_11_base_is_refused_before_anything_is_resolved(local_target, tmp_path, build_cache):
    reg = local_target["registry"]
    config = django_app(tmp_path, reg, f"{reg}/ferry/python:3.11", "3.11")
    r = ferry_build(config, build_cache, "--push")
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1
    assert last == (f"ferry: error: pyproject.toml requires-python asks for Python >=3.12, but the base image "
                    f"{reg}/ferry/python:3.11 has Python 3.11.2 "
                    f'(set image.base = "{reg}/ferry/python:3.13" and image.python = "3.13"; `ferry local up --python 3.13` '
                    f"makes that base (bases that fit: {reg}/ferry/python:3.13, or :3.14), or change pyproject.toml "
                    "requires-python)")
    assert "dependencies for" not in r.stderr


def test_image_python_and_the_base_must_agree(local_target, tmp_path, build_cache):
    reg = local_target["registry"]
    config = django_app(tmp_path, reg, f"{reg}/ferry/python:3.14", "3.13")
    r = ferry_build(config, build_cache)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith(
        f"ferry: error: image.python asks for Python 3.13, but the base image {reg}/ferry/python:3.14 has Python 3.14.")
    assert "dependencies for" not in r.stderr


# --------------------------------------------------------------------------- an official-like base

OFFICIAL_ENV = ("PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
                "GPG_KEY=7169605F62C751356D054A26A821E680E5FA6305")


def official_like(tree: rootfs.Tree, python: str) -> rootfs.Tree:
    """The 3.13 tree rearranged as the official python:3.13-slim is: the interpreter and its
    standard library under /usr/local, ``python3`` and ``python`` links there, an empty
    site-packages; the Debian packages in one /var/lib/dpkg/status without any python (the
    official image builds its own); root and nobody only."""
    E = rootfs.Entry
    out: rootfs.Tree = {}
    for path, e in tree.items():
        if path.startswith(f"usr/lib/python{python}"):
            new = "usr/local/" + path[len("usr/"):]
            out[new] = dataclasses.replace(e, path=new)
        elif path in (f"usr/bin/python{python}", "usr/bin/python3"):
            continue
        elif path.startswith("var/lib/dpkg/status.d"):
            continue
        else:
            out[path] = e
    for d in ("usr/local", "usr/local/bin", "usr/local/lib", f"usr/local/lib/python{python}/site-packages"):
        out[d] = E.dir(d)
    out[f"usr/local/bin/python{python}"] = E(f"usr/local/bin/python{python}", rootfs.FILE, 0o755,
                                             data=tree[f"usr/bin/python{python}"].data)
    out["usr/local/bin/python3"] = E.symlink("usr/local/bin/python3", f"python{python}")
    out["usr/local/bin/python"] = E.symlink("usr/local/bin/python", "python3")
    records = [tree[p].data.decode() for p in sorted(tree) if p.startswith("var/lib/dpkg/status.d/")
               and not p.rsplit("/", 1)[1].startswith(("python3", "libpython3"))]
    out["var/lib/dpkg"] = E.dir("var/lib/dpkg")
    out["var/lib/dpkg/status"] = E.file("var/lib/dpkg/status", "\n".join(r.strip("\n") + "\n" for r in records))
    out["etc/passwd"] = E.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    out["etc/group"] = E.file("etc/group", "root:x:0:\nnogroup:x:65534:\n")
    return rootfs.ensure_dirs(out)


@pytest.fixture(scope="module")
def official_base(local_target) -> dict:
    """Assembled from trixie's packages with coreutils (the official image has /usr/bin/env),
    pushed as one linux/amd64 image with the official image's config and no ferry label."""
    recipe = baseimage.load_recipe(python="3.13")
    recipe = baseimage._with(recipe, install=(*recipe.install, "coreutils"), platforms=("linux/amd64",))
    cache = baseimage.Cache(baseimage.default_cache_dir())
    with cache.locked():
        prepared = baseimage.prepare_platform(recipe, cache, "linux/amd64", False, baseimage.NULL)
    tree = official_like(prepared.tree, "3.13")
    tar = rootfs.tar_bytes(tree, baseimage.MTIME)
    gz = gzip_bytes(tar)
    config = {"architecture": "amd64", "os": "linux", "created": "2026-11-01T00:00:00Z",
              "config": {"Env": [*OFFICIAL_ENV, f"PYTHON_VERSION={prepared.python}"], "Cmd": ["python3"]},
              "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
              "history": [{"created": "2026-11-01T00:00:00Z", "created_by": "assembled like python:3.13-slim"}]}
    image = Image(Blob.from_bytes(canonical_json(config), OCI_CONFIG), (Blob.from_bytes(gz, OCI_LAYER_GZIP),),
                  Platform("linux", "amd64"))
    repo, tag = f"bases-test/python-official-{uuid.uuid4().hex[:8]}", "3.13-slim"
    with RegistryClient(local_target["registry"]) as c:
        RegistryPublisher(c, repo).publish(image, tags=[tag])
    yield {"ref": f"{local_target['registry']}/{repo}:{tag}", "repo": repo, "tree": tree, "config": config,
           "python": prepared.python}
    with RegistryClient(local_target["registry"]) as c:
        c.delete_manifest(repo, image.digest)


def test_ferry_finds_the_official_like_base_s_python_on_its_path_and_its_site_layout(official_base):
    tree = official_base["tree"]

    def read(path: str) -> bytes | None:
        seen = 0
        while path in tree and tree[path].kind == rootfs.SYMLINK and seen < 8:
            target = tree[path].target
            path = target.lstrip("/") if target.startswith("/") else os.path.normpath(
                os.path.join(os.path.dirname(path), target))
            seen += 1
        e = tree.get(path)
        return e.data if e is not None and e.kind == rootfs.FILE else None

    def listdir(path: str) -> list[str]:
        return sorted({p[len(path) + 1:].split("/")[0] for p in tree if p.startswith(path + "/")})

    facts = basefacts.from_config(official_base["config"])
    assert (facts.ferry, facts.python, facts.suite) == (False, official_base["python"], None)
    facts = basefacts.with_files(facts, read, listdir)
    assert (facts.debian, facts.suite) == (True, "trixie")
    assert (facts.python_path, facts.site_packages) == ("/usr/local/bin/python3", "/usr/local/lib/python3.13/site-packages")
    assert "coreutils" in facts.installed_names() and not any(n.startswith("python3") for n in facts.installed_names())
    assert facts.interpreter is None  # it has /usr/bin/env: console scripts start with `env python3`, as on the official image


def test_an_app_builds_on_the_official_like_base_and_answers_from_its_usr_local_python(
        official_base, local_target, docker_cli, tmp_path, build_cache):
    config = django_app(tmp_path, local_target["registry"], official_base["ref"], "3.13")
    r = ferry_build(config, build_cache, "--push", "--json")
    assert r.returncode == 0, r.stderr[-4000:]
    doc = json.loads(r.stdout)
    try:
        inspect = subprocess.run([*docker_cli, "image", "inspect", doc["image"]], capture_output=True, text=True,
                                 timeout=120)
        if inspect.returncode != 0:
            subprocess.run([*docker_cli, "pull", "-q", doc["image"]], capture_output=True, timeout=300, check=True)
            inspect = subprocess.run([*docker_cli, "image", "inspect", doc["image"]], capture_output=True, text=True,
                                     timeout=120)
        env = json.loads(inspect.stdout)[0]["Config"]["Env"]
        # the base's PATH kept, after the dependencies' console scripts
        assert "PATH=/app/deps/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin" in env, env
        assert f"PYTHON_VERSION={official_base['python']}" in env
        body = serve(docker_cli, doc["image"])
        assert body == f"django 6.1.3 on python {official_base['python']} at /usr/local/bin/python3", body
    finally:
        _cleanup(docker_cli, local_target, doc["image"])


def test_debian_packages_for_an_app_on_the_3_13_base_come_from_trixie(up_twice, local_target, docker_cli, tmp_path,
                                                                      build_cache):
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "app.py").write_text("print('hi')\n")
    repo = f"bases-test/packages-{uuid.uuid4().hex[:8]}"
    (tmp_path / "ferry.toml").write_text(f"""
[app]
name = "bases-packages"
[image]
repository = "{local_target['registry']}/{repo}"
base = "{local_target['registry']}/ferry/python:3.13"
python = "3.13"
source = "web"
packages = ["sqlite3"]
entrypoint = ["python3", "app.py"]
""")
    r = ferry_build(tmp_path / "ferry.toml", build_cache, "--push", "--json")
    assert r.returncode == 0, r.stderr[-4000:]
    doc = json.loads(r.stdout)
    try:
        versions = dict(p.split("=", 1) for p in doc["debian_packages"])
        assert versions["sqlite3"].startswith("3.46."), versions  # trixie's (bookworm has 3.40)
        assert "libc6" not in versions and "python3.13" not in versions  # the base's label and packages say it has them
        out = subprocess.run([*docker_cli, "run", "--rm", "--network", "host", "--entrypoint", "sqlite3", doc["image"],
                              "--version"], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and out.stdout.startswith("3.46."), out.stderr
    finally:
        _cleanup(docker_cli, local_target, doc["image"])

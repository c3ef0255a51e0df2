"""`ferry build` for real apps against the local target: Debian packages (image.packages)
resolved against the base, build steps (image.build) in a bubblewrap sandbox over the
assembled image, the Python check, foreign bases, and bad input that pushes nothing. Images
are run by the local target's dockerd; layers are read back from the registry."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from ferry.images import sandbox
from ferry.images.layers import Entry, write_layer
from ferry.images.oci import OCI_CONFIG, Blob, Image, Platform, canonical_json
from ferry.images.publish import RegistryPublisher
from ferry.images.registry import RegistryClient
from ferry.images.remote import fetch_image

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
HELLO = ROOT / "examples" / "hello"
FERRY = [sys.executable, "-m", "ferry"]
# MarkupSafe 2.1.5's macOS wheel (PyPI files never change): a lock made on a Mac has only this
MAC_WHEEL_SHA256 = "629ddd2ca402ae6dbedfceeba9c46d5f7b2a61d9749597d4307f943ef198fc1f"
STEP = ("import os, flask; os.makedirs('/app/static', exist_ok=True); "
        "open('/app/static/built.txt', 'w').write(f\"{os.getuid()}:{os.getgid()} {os.environ['BLD_GREETING']} "
        "{flask.__name__} {os.getcwd()}\")")


@pytest.fixture(scope="module")
def machine(tmp_path_factory) -> dict:
    """One build machine's caches, shared by this module's tests (apt lists, .debs, trees and
    wheels are fetched once)."""
    root = tmp_path_factory.mktemp("bld-machine")
    return {"cache": root / "ferry-cache", "uv": root / "uv-cache", "root": root}


@pytest.fixture(scope="module")
def pushed(local_target, docker_cli):
    """Repositories and images the tests made, removed at the end (the registry has no GC)."""
    made: dict[str, list[str]] = {"repos": [], "images": []}
    yield made
    with RegistryClient(local_target["registry"]) as c:
        for repo in made["repos"]:
            for tag in c.list_tags(repo) if _exists(c, repo) else []:
                info = c.manifest_info(repo, tag)
                if info is not None:
                    c.delete_manifest(repo, info.digest)
    for image in made["images"]:
        subprocess.run([*docker_cli, "rmi", "-f", image], capture_output=True, timeout=60)


def _exists(client, repo: str) -> bool:
    try:
        client.list_tags(repo)
        return True
    except Exception:  # noqa: BLE001 - a repository nothing was pushed to
        return False


class App:
    """The sample service in a folder of its own, with the ferry.toml a test writes."""

    def __init__(self, root: Path, target: dict, machine: dict, pushed: dict, name: str):
        self.root, self.target, self.machine = root, target, machine
        self.repo = f"ferry-test/bld-{name}-{uuid.uuid4().hex[:8]}"
        pushed["repos"].append(self.repo)
        shutil.copytree(HELLO, root / "hello", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    @property
    def ref(self) -> str:
        return f"{self.target['registry']}/{self.repo}"

    def configure(self, image: str = "", base: str | None = None, entrypoint=None) -> "App":
        entrypoint = entrypoint or ["python3", "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", "127.0.0.1:{port}",
                                    "hello:app"]
        (self.root / "ferry.toml").write_text(f"""
[app]
name = "bld-app"
[image]
repository = "{self.ref}"
base = "{base or self.target['base_image']}"
source = "hello"
requirements = "hello/requirements.txt"
entrypoint = {json.dumps(entrypoint)}
{image}
""")
        return self

    def build(self, *args: str, cache: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "FERRY_CACHE_DIR": str(cache or self.machine["cache"]),
               "UV_CACHE_DIR": str(self.machine["uv"])}
        r = subprocess.run([*FERRY, "-c", str(self.root / "ferry.toml"), "build", *args], cwd=self.root, env=env,
                           capture_output=True, text=True, timeout=900)
        if check and r.returncode != 0:
            pytest.fail(f"ferry build {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-4000:]}")
        return r

    def push(self, cache: Path | None = None) -> tuple[dict, str]:
        r = self.build("--push", "--json", cache=cache)
        return json.loads(r.stdout), r.stderr

    def manifest_exists(self, tag: str = "latest") -> bool:
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://{self.ref.split('/', 1)[0]}/v2/{self.repo}/manifests/{tag}",
                                                          method="HEAD"), timeout=30)
            return True
        except urllib.error.HTTPError as e:
            assert e.code == 404
            return False


def origins(doc: dict) -> dict[str, str]:
    return {s["kind"]: s["origin"] for s in doc["steps"]}


def layer_of(doc: dict, role: str) -> dict:
    (layer,) = [x for x in doc["layers"] if x["role"] == role]
    return layer


def blob(registry: str, repo: str, digest: str) -> bytes:
    with urllib.request.urlopen(f"http://{registry}/v2/{repo}/blobs/{digest}", timeout=60) as r:
        return r.read()


def run_in(docker_cli, image: str, entrypoint: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*docker_cli, "run", "--rm", "--network", "host", "--entrypoint", entrypoint, image, *args],
                          capture_output=True, text=True, timeout=300)


REAL = f"""packages = ["libpq5", "sqlite3"]
build = [["python3", "-c", {json.dumps(STEP)}]]
build_env = {{ BLD_GREETING = "hello-from-build-env" }}"""


@pytest.fixture(scope="module")
def real(local_target, machine, pushed, tmp_path_factory) -> tuple[App, dict, str]:
    app = App(tmp_path_factory.mktemp("bld-real"), local_target, machine, pushed, "real").configure(REAL)
    doc, err = app.push()
    return app, doc, err


def test_an_image_with_debian_packages_and_a_build_step_runs_them(real, docker_cli, pushed):
    app, doc, err = real
    assert [x["role"] for x in doc["layers"]] == ["base", "packages", "deps", "source", "build"]
    assert origins(doc) == {"packages": "built", "deps": "built", "source": "built", "build": "built"}
    names = {p.split("=")[0] for p in doc["debian_packages"]}
    assert {"libpq5", "sqlite3", "libsqlite3-0"} <= names
    assert "libc6" not in names and "python3.11" not in names  # the base has them: not unpacked again
    assert "build step 1/1 (linux/amd64): python3 -c" in err
    pushed["images"].append(doc["image"])

    version = run_in(docker_cli, doc["image"], "sqlite3", "--version")
    assert version.returncode == 0 and version.stdout.startswith("3."), version.stderr
    libpq = run_in(docker_cli, doc["image"], "python3", "-c",
                   "import ctypes; print(ctypes.CDLL('libpq.so.5').PQlibVersion())")
    assert libpq.returncode == 0 and int(libpq.stdout) >= 150000, libpq.stderr
    # the step ran as the image's user, with the image's env + build_env, in the workdir, over deps
    built = run_in(docker_cli, doc["image"], "python3", "-c", "print(open('/app/static/built.txt').read())")
    assert built.stdout.strip() == "65532:65532 hello-from-build-env flask /app", built.stderr


def test_the_build_layer_is_normalised_like_every_ferry_layer(real, local_target):
    app, doc, _ = real
    raw = gzip.decompress(blob(local_target["registry"], app.repo, layer_of(doc, "build")["digest"]))
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        members = t.getmembers()
    assert [m.name for m in members] == ["app", "app/static", "app/static/built.txt"]
    assert {(m.uid, m.gid, m.mtime, m.uname) for m in members} == {(0, 0, 1, "")}
    assert [m.mode for m in members] == [0o755, 0o755, 0o644]


def test_an_unchanged_build_runs_nothing_and_uploads_nothing(real):
    app, first, _ = real
    again, err = app.push()
    assert again["digest"] == first["digest"] and again["bytes_uploaded"] == 0
    assert set(origins(again).values()) == {"cache"}
    assert "build step" not in err and "Debian packages for" not in err


def test_a_fresh_machine_reuses_packages_deps_and_build_from_the_registry(real, tmp_path):
    app, first, _ = real
    doc, err = app.push(cache=tmp_path / "fresh-cache")
    assert origins(doc) == {"packages": "registry", "deps": "registry", "source": "built", "build": "registry"}
    assert doc["digest"] == first["digest"] and doc["bytes_uploaded"] == 0
    assert "build step" not in err and "Debian packages for" not in err  # nothing ran, apt did not either
    assert doc["debian_packages"] == first["debian_packages"]  # the resolution came back from the labels


def test_two_machines_make_the_same_packages_and_build_layers(real, local_target, machine, pushed, tmp_path):
    app, first, _ = real
    other = App(tmp_path / "other", local_target, machine, pushed, "other").configure(REAL)  # no previous image
    doc, _ = other.push(cache=tmp_path / "other-machine")
    assert origins(doc) == {"packages": "built", "deps": "built", "source": "built", "build": "built"}
    for role in ("packages", "deps", "source", "build"):
        assert layer_of(doc, role)["digest"] == layer_of(first, role)["digest"], role


def test_a_failing_step_prints_its_output_and_exit_code_and_pushes_nothing(local_target, machine, pushed, tmp_path):
    app = App(tmp_path, local_target, machine, pushed, "fail").configure(
        'build = [["python3", "-c", "print(\'collecting static files\'); import sys; sys.exit(3)"]]')
    r = app.build("--push", check=False)
    assert r.returncode == 1
    assert "  | collecting static files" in r.stderr  # streamed as it ran
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ferry: error: image.build[0] `python3 -c ")
    assert "failed with exit code 3: collecting static files" in last
    assert not app.manifest_exists()


COLLECT = ("import pathlib, os; out = pathlib.Path('/app/collected'); out.mkdir(); "
           "css = open('/app/hello/static/site.css').read(); "
           "(out / 'site.css').write_text(css + '/* collected */'); print('collected', len(css))")
INPUTS = f"""build = [["python3", "-c", {json.dumps(COLLECT)}]]
build_inputs = ["static"]"""


def test_with_build_inputs_a_code_edit_keeps_the_build_layer_and_an_input_edit_remakes_it(
        local_target, machine, pushed, docker_cli, tmp_path):
    app = App(tmp_path, local_target, machine, pushed, "inputs").configure(INPUTS)
    static = app.root / "hello" / "hello" / "static"
    static.mkdir()
    (static / "site.css").write_text("body { color: navy }")
    first, err = app.push()
    assert origins(first)["build"] == "built" and "collected 20" in err

    code = app.root / "hello" / "hello" / "__init__.py"
    code.write_text(code.read_text() + "\n# a one-line change\n")
    edited, err = app.push()
    assert origins(edited)["source"] == "built" and origins(edited)["build"] == "cache"
    assert "build step" not in err and layer_of(edited, "build")["digest"] == layer_of(first, "build")["digest"]
    # a fresh runner finds it through the previous image's labels: nothing runs, nothing is sent twice
    fresh, err = app.push(cache=tmp_path / "fresh-runner")
    assert origins(fresh)["build"] == "registry" and "build step" not in err
    assert fresh["digest"] == edited["digest"]

    (static / "site.css").write_text("body { color: teal }")
    changed, err = app.push()
    assert origins(changed)["build"] == "built" and "collected 20" in err
    pushed["images"].append(changed["image"])
    out = run_in(docker_cli, changed["image"], "python3", "-c", "print(open('/app/collected/site.css').read())")
    assert out.stdout.strip() == "body { color: teal }/* collected */", out.stderr


def test_a_build_input_that_names_no_source_file_is_an_error_and_pushes_nothing(local_target, machine, pushed,
                                                                                tmp_path):
    app = App(tmp_path, local_target, machine, pushed, "noinputs").configure(
        INPUTS.replace('["static"]', '["static", "hello/setings.py"]'))
    (app.root / "hello" / "hello" / "static").mkdir()
    (app.root / "hello" / "hello" / "static" / "site.css").write_text("x")
    r = app.build("--push", check=False)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1
    assert last.startswith("ferry: error: image.build_inputs: no source file falls under 'hello/setings.py'"), last
    assert not app.manifest_exists()


def test_an_unknown_package_suggests_close_names_and_pushes_nothing(local_target, machine, pushed, tmp_path):
    app = App(tmp_path, local_target, machine, pushed, "unknown").configure('packages = ["libpq", "sqlite3"]')
    r = app.build("--push", check=False)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1
    assert last.startswith("ferry: error: image.packages: 'libpq' (did you mean libpq5")
    assert "is not a Debian bookworm package for amd64" in last
    assert not app.manifest_exists()


def _push_base(client: RegistryClient, repo: str, layers: list[Blob], diff_ids: list[str], config: dict,
               tmp_path: Path, extra: list[list[Entry]] = ()) -> str:
    """A base image made here: the given layers (by descriptor) plus new ones from entries."""
    blobs, ids = list(layers), list(diff_ids)
    for i, entries in enumerate(extra):
        lf = write_layer(entries, tmp_path / f"extra-{i}.tar.gz", 1)
        blobs.append(Blob(lf.digest, lf.size, "application/vnd.oci.image.layer.v1.tar+gzip", path=lf.path))
        ids.append(lf.diff_id)
    cfg = {**config, "rootfs": {"type": "layers", "diff_ids": ids},
           "history": [{"created_by": "test layer"} for _ in ids]}
    image = Image(Blob.from_bytes(canonical_json(cfg), OCI_CONFIG), tuple(blobs), Platform())
    RegistryPublisher(client, repo).publish(image, ["1"])
    return f"{client.registry}/{repo}:1"


def test_packages_cannot_be_added_to_a_base_that_is_not_debian(local_target, machine, pushed, tmp_path):
    repo = f"ferry-test/bld-nodebian-{uuid.uuid4().hex[:8]}"
    pushed["repos"].append(repo)
    with RegistryClient(local_target["registry"]) as c:
        base = _push_base(c, repo, [], [], {"architecture": "amd64", "os": "linux",
                                            "config": {"Env": ["PYTHON_VERSION=3.11.9"]}}, tmp_path,
                          [[Entry("etc/os-release", data=b"ID=alpine\nVERSION_ID=3.20.0\n"),
                            Entry("usr/bin/python3", data=b"not really", mode=0o755)]])
    app = App(tmp_path / "app", local_target, machine, pushed, "nodebian").configure('packages = ["libpq5"]', base=base)
    r = app.build("--push", check=False)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1
    assert last == (f"ferry: error: image.packages: the base image {base} is not Debian-based, so Debian packages "
                    "cannot be added to it (use a Debian-based base (ferry's own, or python:3.x-slim mirrored to "
                    "your registry) or remove image.packages)")
    assert not app.manifest_exists()


def test_a_foreign_debian_base_keeps_what_its_dpkg_status_lists(local_target, machine, pushed, docker_cli, tmp_path):
    """A base laid out as the official python:3.x-slim images are: no ferry labels, the
    packages in /var/lib/dpkg/status, PYTHON_VERSION in the environment; made here from
    ferry's own base with one more layer (the status file, and a whiteout for status.d)."""
    repo = f"ferry-test/bld-foreign-{uuid.uuid4().hex[:8]}"
    pushed["repos"].append(repo)
    with RegistryClient(local_target["registry"]) as c:
        ferry_base = fetch_image(c, local_target["base_image"], "linux/amd64")
        raw = gzip.decompress(c.get_blob("ferry/python", ferry_base.layers[0].digest))
        with tarfile.open(fileobj=io.BytesIO(raw)) as t:
            status = "\n".join(t.extractfile(m).read().decode() for m in t.getmembers()
                               if m.name.startswith("var/lib/dpkg/status.d/") and m.isfile())
        cfg = ferry_base.config_json()
        config = {"architecture": "amd64", "os": "linux",
                  "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "PYTHON_VERSION=3.11.2"],
                             "Cmd": ["python3"]}}
        base = _push_base(c, repo, [dataclass_source(b, "ferry/python", c.registry) for b in ferry_base.layers],
                          cfg["rootfs"]["diff_ids"], config, tmp_path,
                          [[Entry("var/lib/dpkg/status", data=status.encode()),
                            Entry("var/lib/dpkg/.wh.status.d", data=b"")]])
    app = App(tmp_path / "app", local_target, machine, pushed, "foreign").configure('packages = ["sqlite3"]', base=base)
    doc, err = app.push()
    names = {p.split("=")[0] for p in doc["debian_packages"]}
    assert {"sqlite3", "libsqlite3-0"} <= names
    assert not names & {"libc6", "zlib1g", "libtinfo6"}  # listed in the base's /var/lib/dpkg/status
    assert "downloading layer" in err  # the base's files were read: its layers were fetched once
    pushed["images"].append(doc["image"])
    version = run_in(docker_cli, doc["image"], "sqlite3", "--version")
    assert version.returncode == 0 and version.stdout.startswith("3."), version.stderr


def dataclass_source(b: Blob, repo: str, registry: str) -> Blob:
    import dataclasses

    return dataclasses.replace(b, source=f"{registry}/{repo}")


def test_no_local_base_for_the_python_asked_names_the_command(local_target, machine, pushed, tmp_path):
    app = App(tmp_path, local_target, machine, pushed, "nobase").configure(
        'python = "3.9"', base=f"{local_target['registry']}/ferry/python:3.9")
    r = app.build("--push", check=False)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1
    reg = local_target['registry']
    assert last == (f"ferry: error: the base image {reg}/ferry/python:3.9 does not exist: ferry has no base for Python 3.9 "
                    f"(use one of {reg}/ferry/python:3.11, {reg}/ferry/python:3.13, {reg}/ferry/python:3.14 (image.base))")
    assert not app.manifest_exists()


def test_requires_python_the_base_lacks_fails_before_anything_is_resolved(local_target, machine, pushed, tmp_path):
    app = App(tmp_path, local_target, machine, pushed, "python").configure()
    (app.root / "hello" / "pyproject.toml").write_text('[project]\nname = "hello"\nversion = "1"\nrequires-python = ">=3.12"\n')
    r = app.build("--push", check=False)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1
    assert last.startswith(f"ferry: error: pyproject.toml requires-python asks for Python >=3.12, but the base image "
                           f"{local_target['base_image']} has Python 3.11")
    assert "`ferry local up --python 3.13` makes that base" in last and ":3.14" in last  # the ferry bases that fit
    assert "dependencies for" not in r.stderr and not app.manifest_exists()


def test_a_uv_lock_made_for_another_platform_is_a_clear_error(local_target, machine, pushed, tmp_path):
    app = App(tmp_path, local_target, machine, pushed, "lock").configure()
    svc = app.root / "hello"
    (svc / "pyproject.toml").write_text('[project]\nname = "hello"\nversion = "1"\nrequires-python = ">=3.11"\n'
                                        'dependencies = ["six==1.16.0"]\n[tool.uv]\nenvironments = ["sys_platform == \'darwin\'"]\n')
    lock = subprocess.run([sys.executable, "-m", "uv", "lock", "--project", str(svc)], capture_output=True, text=True,
                          env={**os.environ, "UV_CACHE_DIR": str(machine["uv"])}, timeout=300)
    assert lock.returncode == 0, lock.stderr
    text = (app.root / "ferry.toml").read_text().replace('requirements = "hello/requirements.txt"',
                                                         'requirements = "hello/pyproject.toml"')
    (app.root / "ferry.toml").write_text(text.replace('"-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", "127.0.0.1:{port}", "hello:app"',
                                                      '"-m", "hello"'))
    (svc / "hello" / "__main__.py").write_text("print('hello')\n")
    r = app.build("--push", check=False)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1
    assert "uv.lock: the lock was made for other environments " in last, last
    assert last.startswith("ferry: error: ") and "darwin" in last and "not for linux/amd64" in last
    assert not app.manifest_exists()


def test_hashes_for_another_platforms_wheels_are_a_clear_error(local_target, machine, pushed, tmp_path):
    app = App(tmp_path, local_target, machine, pushed, "hashes").configure(entrypoint=["python3", "-m", "hello"])
    (app.root / "hello" / "requirements.txt").write_text(f"markupsafe==2.1.5 --hash=sha256:{MAC_WHEEL_SHA256}\n")
    (app.root / "hello" / "hello" / "__main__.py").write_text("print('hello')\n")
    r = app.build("--push", check=False)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1
    assert last.startswith("ferry: error: requirements.txt: no wheel for linux/amd64 (CPython 3.11, "
                           "manylinux_2_28_x86_64 wheels) matches its --hash (a lock made for another platform")
    assert not app.manifest_exists()


def test_build_steps_for_another_architecture_say_what_is_needed(local_target, machine, pushed, tmp_path):
    app = App(tmp_path, local_target, machine, pushed, "arm").configure(
        'platforms = ["linux/arm64"]\nbuild = [["python3", "-c", "print(1)"]]')
    r = app.build("--push", check=False)
    if sandbox.can_run("arm64", sandbox.machine_architecture(), sandbox.read_binfmt()):
        assert r.returncode == 0, r.stderr  # qemu-user through binfmt runs it
        return
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1
    assert last.startswith(f"ferry: error: image.build runs the image's own programs, and this "
                           f"{sandbox.machine_architecture()} machine cannot run linux/arm64 ones")
    assert not app.manifest_exists()

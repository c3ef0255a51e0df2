"""The Python base image, built for real from Debian packages and pushed to the local
target's registry (into a repository of its own, so the shared ferry/python:3.11 is never
touched), then inspected with skopeo, read byte by byte, and run by the local dockerd."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import uuid

import httpx
import pytest

from ferry.images import baseimage
from ferry.images.registry import RegistryClient
from ferry.progress import Progress

pytestmark = pytest.mark.integration

EM_X86_64, EM_AARCH64 = 62, 183


@pytest.fixture(scope="module")
def repo(local_target) -> str:
    return f"ferrytest/base-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def client(local_target):
    with RegistryClient(local_target["registry"]) as c:
        yield c


@pytest.fixture(scope="module")
def built(local_target, repo, client, tmp_path_factory) -> dict:
    """A cold build: an empty cache, so apt resolves and downloads everything."""
    cache = tmp_path_factory.mktemp("base-cache")
    result = baseimage.ensure_base_image(registry=local_target["registry"], repository=repo,
                                         tag="3.11", cache_dir=cache, progress=Progress())
    result["cache_dir"] = cache
    yield result
    # the registry has no garbage collection while serving: drop what this test pushed
    for img in result.get("images", []):
        client.delete_manifest(repo, img["digest"])
    client.delete_manifest(repo, result["digest"])


def _skopeo_raw(ref: str) -> dict:
    r = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _manifest(client, repo: str, index: dict, arch: str) -> dict:
    (desc,) = [m for m in index["manifests"] if m["platform"]["architecture"] == arch]
    data, _, _ = client.get_manifest(repo, desc["digest"])
    return json.loads(data)


def _layer_files(client, repo: str, manifest: dict, *names: str) -> dict[str, tarfile.TarInfo | bytes]:
    (layer,) = manifest["layers"]
    blob = client.get_blob(repo, layer["digest"])
    out: dict = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as t:
        for m in t.getmembers():
            if m.name in names:
                out[m.name] = t.extractfile(m).read() if m.isfile() else m
    return out


def test_the_tag_is_an_oci_index_of_amd64_and_arm64(built, local_target, repo):
    assert built["action"] == "built"
    index = _skopeo_raw(f"{local_target['registry']}/{repo}:3.11")
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    platforms = sorted((m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant"))
                       for m in index["manifests"])
    assert platforms == [("linux", "amd64", None), ("linux", "arm64", "v8")]
    assert index["annotations"][baseimage.ANNOTATION_RECIPE] == built["recipe"]


def test_each_python_binary_is_an_elf_for_its_own_architecture(built, local_target, repo, client):
    index = _skopeo_raw(f"{local_target['registry']}/{repo}:3.11")
    for arch, machine in (("arm64", EM_AARCH64), ("amd64", EM_X86_64)):
        files = _layer_files(client, repo, _manifest(client, repo, index, arch), "usr/bin/python3.11")
        elf = files["usr/bin/python3.11"]
        assert elf[:4] == b"\x7fELF" and elf[4] == 2, arch  # 64-bit
        assert int.from_bytes(elf[18:20], "little") == machine, arch


def test_image_config_is_non_root_with_the_real_python_version(built, local_target, repo, client):
    index = _skopeo_raw(f"{local_target['registry']}/{repo}:3.11")
    m = _manifest(client, repo, index, "arm64")
    packages = dict(p.split("=", 1) for p in m["annotations"][baseimage.ANNOTATION_PACKAGES].split(","))
    assert {"python3.11", "libc6", "libssl3", "libsqlite3-0", "ca-certificates"} <= set(packages)
    assert "dpkg" not in packages and "debconf" not in packages
    config = json.loads(client.get_blob(repo, m["config"]["digest"]))
    c = config["config"]
    assert c["User"] == "65532:65532"
    upstream = packages["python3.11"].split(":")[-1].rsplit("-", 1)[0]
    assert f"PYTHON_VERSION={upstream}" in c["Env"] and upstream.startswith("3.11.")
    assert "LANG=C.UTF-8" in c["Env"]
    assert config["architecture"] == "arm64"


def test_layer_has_users_os_release_usrmerge_and_the_package_records(built, local_target, repo, client):
    index = _skopeo_raw(f"{local_target['registry']}/{repo}:3.11")
    files = _layer_files(client, repo, _manifest(client, repo, index, "amd64"),
                         "etc/passwd", "etc/group", "usr/lib/os-release", "bin", "lib", "lib64",
                         "sbin", "home/app", "etc/ssl/certs/ca-certificates.crt",
                         "var/lib/dpkg/status.d/libc6", "usr/share/doc/libc6/changelog.Debian.gz",
                         "usr/share/doc/libc6/copyright")
    assert b"app:x:65532:65532:" in files["etc/passwd"]
    assert b"app:x:65532:" in files["etc/group"]
    assert b'ID=debian' in files["usr/lib/os-release"] and b"bookworm" in files["usr/lib/os-release"]
    assert {n: files[n].linkname for n in ("bin", "lib", "lib64", "sbin")} == {
        "bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64", "sbin": "usr/sbin"}
    assert (files["home/app"].uid, files["home/app"].gid) == (65532, 65532)
    assert files["etc/ssl/certs/ca-certificates.crt"].count(b"BEGIN CERTIFICATE") > 100
    assert files["var/lib/dpkg/status.d/libc6"].startswith(b"Package: libc6\nStatus: install ok installed\n")
    assert "usr/share/doc/libc6/changelog.Debian.gz" not in files
    assert "usr/share/doc/libc6/copyright" in files


def test_the_second_call_is_a_no_op_that_says_so(built, local_target, repo):
    again = baseimage.ensure_base_image(registry=local_target["registry"], repository=repo, tag="3.11",
                                        cache_dir=built["cache_dir"])
    assert again["action"] == "none"
    assert again["digest"] == built["digest"]
    assert again["bytes_uploaded"] == 0
    assert "already built from this recipe" in again["message"]


def test_the_same_packages_assembled_again_in_an_empty_cache_give_the_same_digest(built, tmp_path):
    # the same resolution and .deb files (the mirror may move on between two resolutions),
    # but nothing else: unpacking, bytecode, layer, config and manifests are all made again
    first = baseimage.Cache(built["cache_dir"])
    second = baseimage.Cache(tmp_path / "cache")
    shutil.copytree(first.root / "locks", second.root / "locks")
    (second.root / "debs").symlink_to(first.debs)
    assert not (second.root / "blobs").exists() and not (second.root / "images").exists()
    index, _ = baseimage.build_index(baseimage.load_recipe(), second)
    assert index.digest == built["digest"]


def test_when_the_registry_lost_the_image_it_is_pushed_again_from_the_cache(built, local_target, repo, client):
    assert client.delete_manifest(repo, built["digest"])
    assert not client.manifest_exists(repo, "3.11")
    again = baseimage.ensure_base_image(registry=local_target["registry"], repository=repo, tag="3.11",
                                        cache_dir=built["cache_dir"])
    assert again["action"] == "pushed"
    assert again["digest"] == built["digest"]
    assert client.manifest_exists(repo, "3.11")


def _run(docker_cli, ref: str, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*docker_cli, "run", "--rm", "--network", "host", ref, *argv],
                          capture_output=True, text=True, timeout=timeout)


def test_the_amd64_image_runs_python_with_ssl_and_sqlite_as_uid_65532(built, local_target, repo, docker_cli):
    ref = f"{local_target['registry']}/{repo}@{built['digest']}"
    r = _run(docker_cli, ref, "python3", "-c",
             "import ssl, sqlite3, json, venv, zoneinfo, os, locale; "
             "ctx = ssl.create_default_context(); "
             "print('ok', os.getuid(), os.getgid(), len(ctx.get_ca_certs()) > 100, "
             "locale.setlocale(locale.LC_ALL, ''), zoneinfo.ZoneInfo('Europe/Paris'))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", "65532", "65532", "True", "C.UTF-8", "Europe/Paris"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_flask_app_serves_through_gunicorn_on_the_image(built, local_target, repo, docker_cli, tmp_path):
    deps = tmp_path / "deps"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(deps),
                          "--platform", "manylinux2014_x86_64", "--python-version", "3.11",
                          "--implementation", "cp", "--only-binary=:all:", "flask", "gunicorn"],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    app = tmp_path / "app"
    app.mkdir()
    (app / "web.py").write_text("from flask import Flask\napp = Flask(__name__)\n\n"
                                "@app.get('/')\ndef index():\n    return 'hello from the base image'\n")
    for p in (deps, app):  # readable by uid 65532 inside the container
        for f in [p, *p.rglob("*")]:
            f.chmod(0o755 if f.is_dir() else 0o644)
    port = _free_port()
    name = f"ferrytest-base-{uuid.uuid4().hex[:8]}"
    ref = f"{local_target['registry']}/{repo}@{built['digest']}"
    start = subprocess.run([*docker_cli, "run", "-d", "--rm", "--name", name, "--network", "host",
                            "-v", f"{deps}:/deps:ro", "-v", f"{app}:/app:ro", "-e", "PYTHONPATH=/deps",
                            ref, "python3", "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
                            "--workers", "1", "web:app"], capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr
    try:
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/", timeout=2, trust_env=False)
                if r.status_code == 200:
                    body = r.text
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        logs = subprocess.run([*docker_cli, "logs", name], capture_output=True, text=True).stderr
        assert body == "hello from the base image", logs
    finally:
        subprocess.run([*docker_cli, "rm", "-f", name], capture_output=True, timeout=60)
        shutil.rmtree(tmp_path, ignore_errors=True)

"""Publishing without a registry: an OCI layout directory (skopeo, umoci), a docker-archive
tar (skopeo, `docker load`), and the local target's Docker daemon through the SDK. Base
layers the build machine never downloaded are fetched from their registry on the way."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ferry.images.oci import ImageIndex, Platform
from ferry.images.publish import DockerPublisher, OCILayoutPublisher, RegistryPublisher, TarPublisher
from ferry.images.registry import RegistryClient
from ferry.images.remote import fetch_image
try:  # tests/ is a package tree; without __init__.py files the folder itself is on sys.path
    from .registry_servers import make_image, shared, skopeo, unique_name
except ImportError:
    from registry_servers import make_image, shared, skopeo, unique_name

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app_on_remote_base():
    """(app image whose base layers live only in a registry, the base as pushed, sources)."""
    reg = shared("anon")
    c = RegistryClient(reg.address)
    base = make_image([{"bin/hello": b"#!/bin/sh\necho hello\n"}, {"etc/base-release": os.urandom(40000)}])
    repo = unique_name("targets/base")
    RegistryPublisher(c, repo).publish(base, ["1"])
    remote = fetch_image(c, f"{reg.address}/{repo}:1")
    assert all(b.data is None for b in remote.layers)
    app = make_image([{"app/main.py": b"print('hello from ferry')\n"}], base=remote,
                     base_diff_ids=remote.config_json()["rootfs"]["diff_ids"])
    return app, base, {reg.address: c}.__getitem__


def test_oci_layout_is_readable_by_skopeo_and_unpacked_by_umoci(app_on_remote_base, tmp_path):
    app, base, sources = app_on_remote_base
    out = tmp_path / "layout"
    res = OCILayoutPublisher(out, source_clients=sources).publish(app, ["v1"])
    assert res.reference == f"oci:{out}:v1" and res.digest == app.digest
    assert res.bytes_uploaded == sum(b.size for b in app.blobs())  # base layers fetched and written

    r = skopeo("inspect", f"oci:{out}:v1")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["Digest"] == app.digest and info["Layers"] == [b.digest for b in app.layers]

    bundle = tmp_path / "bundle"
    r = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{out}:v1", str(bundle)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (bundle / "rootfs" / "app" / "main.py").read_bytes() == b"print('hello from ferry')\n"
    assert (bundle / "rootfs" / "bin" / "hello").exists()
    r = subprocess.run(["umoci", "stat", "--image", f"{out}:v1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr

    # a second tag shares the blobs; nothing is written again
    again = OCILayoutPublisher(out, source_clients=sources).publish(app, ["latest"])
    assert again.bytes_uploaded == 0
    tags = {m["annotations"]["org.opencontainers.image.ref.name"]
            for m in json.loads((out / "index.json").read_text())["manifests"]}
    assert tags == {"v1", "latest"}


def test_oci_layout_holds_a_multi_platform_index(tmp_path):
    amd = make_image([{"bin/hello": b"amd64"}])
    arm = make_image([{"bin/hello": b"arm64"}], platform=Platform("linux", "arm64"))
    index = ImageIndex((amd, arm))
    out = tmp_path / "multi"
    OCILayoutPublisher(out).publish(index, ["v1"])
    raw = json.loads(skopeo("inspect", "--raw", f"oci:{out}:v1").stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    r = skopeo("--override-arch", "arm64", "inspect", f"oci:{out}:v1")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["Digest"] == index.digest  # skopeo names the index it started from
    assert info["Architecture"] == "arm64" and info["Layers"] == [b.digest for b in arm.layers]


def test_a_directory_that_is_not_a_layout_is_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    from ferry.errors import ConfigError

    with pytest.raises(ConfigError, match="is not an OCI layout"):
        OCILayoutPublisher(tmp_path).publish(make_image([{"a": b"b"}]), ["v1"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_tar_is_a_reproducible_docker_archive_and_oci_archive(app_on_remote_base, tmp_path):
    app, _, sources = app_on_remote_base
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    res = TarPublisher(first, "ferry-tests/hello", source_clients=sources).publish(app, ["v1"])
    TarPublisher(second, "ferry-tests/hello", source_clients=sources).publish(app, ["v1"])
    assert first.read_bytes() == second.read_bytes()
    assert res.digest == app.digest and res.target == "tar"

    # skopeo finds the image by its RepoTag in manifest.json
    r = skopeo("inspect", f"docker-archive:{first}:ferry-tests/hello:v1")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert len(info["Layers"]) == len(app.layers) and info["Env"] == ["PATH=/bin"]
    assert skopeo("inspect", f"docker-archive:{first}:ferry-tests/hello:v2").returncode != 0
    r = skopeo("inspect", f"oci-archive:{first}:v1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["Digest"] == app.digest


# --- the local target's Docker engine ----------------------------------------------------------

@pytest.fixture(scope="module")
def docker_client(local_target):
    import docker

    c = docker.DockerClient(base_url=local_target["docker_host"])
    yield c
    c.close()


def _remove(docker_cli, ref):
    subprocess.run([*docker_cli, "image", "rm", "-f", ref], capture_output=True, timeout=60)


def test_docker_archive_tar_loads_with_the_docker_cli(app_on_remote_base, tmp_path, docker_cli):
    app, _, sources = app_on_remote_base
    name = unique_name("ferry-tests/tarload")
    path = tmp_path / "img.tar"
    TarPublisher(path, name, source_clients=sources).publish(app, ["v1"])
    r = subprocess.run([*docker_cli, "load", "-i", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    try:
        r = subprocess.run([*docker_cli, "image", "inspect", f"{name}:v1"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)[0]["Id"] == app.config.digest
    finally:
        _remove(docker_cli, f"{name}:v1")


def test_docker_publisher_loads_an_image_on_the_real_base_that_then_runs(local_target, docker_client, docker_cli):
    """ferry's Python base from the local registry (layers streamed, never stored) plus an
    app layer, loaded through the SDK and run."""
    base_ref = local_target["base_image"]
    base_client = RegistryClient(base_ref.split("/", 1)[0])
    base = fetch_image(base_client, base_ref, "linux/amd64")
    base_cfg = base.config_json()
    app = make_image([{"app/hello.py": b"import sys; print('loaded by ferry', sys.version_info[:2])\n"}],
                     base=base, base_diff_ids=base_cfg["rootfs"]["diff_ids"], cmd=("/usr/bin/python3", "/app/hello.py"))
    name = unique_name("ferry-tests/dockerload")
    res = DockerPublisher(docker_client, name, source_clients=lambda r: base_client).publish(app, ["v1"])
    try:
        assert res.digest == app.config.digest and res.reference == f"{name}:v1" and res.target == "docker"
        r = subprocess.run([*docker_cli, "image", "inspect", f"{name}:v1"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)[0]
        assert info["Id"] == app.config.digest
        assert info["RootFS"]["Layers"] == base_cfg["rootfs"]["diff_ids"] + [app.config_json()["rootfs"]["diff_ids"][-1]]
        r = subprocess.run([*docker_cli, "run", "--rm", "--network", "host", f"{name}:v1"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("loaded by ferry (3, ")
        # the daemon has it now: a second publish only adds the tag
        again = DockerPublisher(docker_client, name, source_clients=lambda r: base_client).publish(app, ["v2"])
        assert again.bytes_uploaded == 0 and again.digest == app.config.digest
        r = subprocess.run([*docker_cli, "image", "inspect", f"{name}:v2"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and json.loads(r.stdout)[0]["Id"] == app.config.digest
    finally:
        _remove(docker_cli, f"{name}:v1")
        _remove(docker_cli, f"{name}:v2")

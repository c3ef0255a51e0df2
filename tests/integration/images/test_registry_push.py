"""Pushing to real docker-registry 2.8 processes: what skopeo sees, what a second push sends,
cross-repository mounts, streaming from another registry, chunked uploads, retries through a
proxy that fails on purpose, interrupted pushes, unreachable and read-only registries, base
images read without their layers, and the SBOM attached as a referrer."""

from __future__ import annotations

import io
import json
import os

import pytest

from ferry.errors import RegistryError
from ferry.images.auth import basic
from ferry.images.oci import (DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, Blob, ImageIndex, Platform,
                              Reference)
from ferry.images.publish import RegistryPublisher
from ferry.images.registry import RegistryClient
from ferry.images.remote import as_oci, fetch_image, fetch_index, resolve_image
from ferry.progress import Progress
try:  # tests/ is a package tree; without __init__.py files the folder itself is on sys.path
    from .registry_servers import FlakyProxy, free_port, make_image, shared, skopeo, unique_name
except ImportError:
    from registry_servers import FlakyProxy, free_port, make_image, shared, skopeo, unique_name

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def anon():
    return shared("anon")


@pytest.fixture
def proxy(anon):
    p = FlakyProxy(anon.address)
    yield p
    p.stop()


def client(address: str, **kw) -> RegistryClient:
    return RegistryClient(address, **kw)


def small_image(tag: str = "x", size: int = 20000):
    return make_image([{"bin/hello": b"#!/bin/sh\necho hello\n"}, {f"app/{tag}.bin": os.urandom(size)}])


def test_pushed_image_is_readable_by_skopeo_and_copies_to_an_oci_layout(anon, tmp_path):
    repo = unique_name("push/skopeo")
    image = small_image()
    res = RegistryPublisher(client(anon.address), repo).publish(image, ["v1"])
    assert res.reference == f"{anon.address}/{repo}@{image.digest}"
    assert res.bytes_uploaded == sum(b.size for b in image.blobs())
    assert all(layer["uploaded"] and not layer["mounted"] for layer in res.layers)

    r = skopeo("inspect", "--tls-verify=false", f"docker://{anon.address}/{repo}:v1")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["Digest"] == image.digest
    assert info["Layers"] == [b.digest for b in image.layers]
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")

    out = tmp_path / "layout"
    r = skopeo("copy", "--src-tls-verify=false", f"docker://{anon.address}/{repo}:v1", f"oci:{out}:v1")
    assert r.returncode == 0, r.stderr
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.digest  # copied as is: nothing to convert
    for b in image.blobs():
        assert (out / "blobs" / "sha256" / b.digest[7:]).read_bytes() == b.data


def test_second_push_of_the_same_image_uploads_zero_bytes(anon):
    repo = unique_name("push/again")
    image = small_image()
    p = RegistryPublisher(client(anon.address), repo)
    assert p.publish(image, ["v1"]).bytes_uploaded > 0
    again = p.publish(image, ["v1"])
    assert again.bytes_uploaded == 0
    assert not any(layer["uploaded"] for layer in again.layers) and not again.config["uploaded"]
    assert again.digest == image.digest


def test_base_layers_are_mounted_from_the_base_repository_not_uploaded(anon, proxy):
    base_repo, app_repo = unique_name("mount/base"), unique_name("mount/app")
    c = client(anon.address)
    base = small_image("base", 50000)
    RegistryPublisher(c, base_repo).publish(base, ["1"])

    via = client(proxy.address)  # same registry, seen through the recording proxy
    remote = resolve_image(via, f"{proxy.address}/{base_repo}:1")
    assert all(b.data is None and b.source == f"{proxy.address}/{base_repo}" for b in remote.image.layers)
    app = make_image([{"app/main.py": b"print('hi')\n"}], base=remote.image,
                     base_diff_ids=remote.image.config_json()["rootfs"]["diff_ids"])
    res = RegistryPublisher(via, app_repo).publish(app, ["v1"])

    base_digests = {b.digest for b in base.layers}
    rows = {row["digest"]: row for row in res.layers}
    assert all(rows[d]["mounted"] and not rows[d]["uploaded"] for d in base_digests)
    assert res.bytes_uploaded == app.layers[-1].size + app.config.size
    mounts = [p for m, p, s in proxy.seen if m == "POST" and "mount=" in p and s == 201]
    assert len(mounts) == len(base_digests)
    assert not any(m in ("PUT", "PATCH") and "/blobs/uploads/" in p and any(d in p for d in base_digests)
                   for m, p, _ in proxy.seen)
    r = skopeo("inspect", "--tls-verify=false", f"docker://{anon.address}/{app_repo}:v1")
    assert r.returncode == 0 and json.loads(r.stdout)["Digest"] == app.digest


def test_copying_an_image_to_another_repository_of_the_same_registry_sends_no_bytes(anon):
    c = client(anon.address)
    src_repo, dst_repo = unique_name("copy/src"), unique_name("copy/dst")
    image = small_image("copy")
    RegistryPublisher(c, src_repo).publish(image, ["v1"])
    remote = fetch_image(c, f"{anon.address}/{src_repo}:v1")
    res = RegistryPublisher(c, dst_repo).publish(remote, ["v1"])
    assert res.bytes_uploaded == 0 and res.config["mounted"] and all(row["mounted"] for row in res.layers)
    assert res.digest == image.digest  # canonical JSON: the same manifest bytes


def test_base_layers_on_another_registry_are_streamed_without_touching_the_disk(anon):
    """The production case: base in one registry (e.g. python:slim mirrored to ECR), target in another."""
    basic_reg = shared("basic")
    base_repo = unique_name("stream/base")
    base = small_image("base", 80000)
    RegistryPublisher(client(anon.address), base_repo).publish(base, ["1"])
    src = client(anon.address)
    remote = fetch_image(src, f"{anon.address}/{base_repo}:1")
    app = make_image([{"app/main.py": b"x"}], base=remote, base_diff_ids=remote.config_json()["rootfs"]["diff_ids"])

    target = client(basic_reg.address, auth=basic(basic_reg.user, basic_reg.password))
    sources = {anon.address: src}
    res = RegistryPublisher(target, "stream/app", source_clients=sources.__getitem__).publish(app, ["v1"])
    assert all(row["uploaded"] for row in res.layers)
    assert res.bytes_uploaded == sum(b.size for b in app.blobs())
    for b in base.layers:
        assert target.get_blob("stream/app", b.digest) == b.data


def test_chunked_upload_sends_content_range_patches(anon, proxy):
    repo = unique_name("chunked/app")
    image = small_image("big", 300000)
    big = max(image.layers, key=lambda b: b.size)
    res = RegistryPublisher(client(proxy.address), repo, chunk_size=64 * 1024).publish(image, ["v1"])
    patches = [p for m, p, s in proxy.seen if m == "PATCH"]
    assert len(patches) == -(-big.size // (64 * 1024))
    assert res.bytes_uploaded == sum(b.size for b in image.blobs())
    r = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{anon.address}/{repo}:v1")
    assert json.loads(r.stdout)["layers"][1]["digest"] == big.digest
    assert client(anon.address).get_blob(repo, big.digest) == big.data


def test_registry_failing_twice_with_500_then_succeeding_gets_the_push_through(anon, proxy):
    repo = unique_name("retry/app")
    proxy.fail("POST", r"/blobs/uploads/$", 2)
    proxy.fail("PATCH", r"/blobs/uploads/", 1, status=503)
    proxy.fail("PUT", r"/manifests/", 2)
    proxy.fail("HEAD", r"/blobs/", 2, status=502)
    log = io.StringIO()
    c = client(proxy.address, progress=Progress(log), backoff=0.05)
    image = small_image("retry", 200000)
    res = RegistryPublisher(c, repo, chunk_size=64 * 1024, jobs=1).publish(image, ["v1"])
    assert res.digest == image.digest
    assert all(rule.hits == rule.times for rule in proxy.rules)
    assert log.getvalue().count("retrying") == 7, log.getvalue()
    r = skopeo("inspect", "--tls-verify=false", f"docker://{anon.address}/{repo}:v1")
    assert r.returncode == 0 and json.loads(r.stdout)["Digest"] == image.digest


def test_interrupted_push_leaves_no_tag_and_the_next_run_finishes_it(anon, proxy):
    repo = unique_name("interrupted/app")
    image = small_image("int")
    proxy.fail("PUT", r"/manifests/", 100)
    with pytest.raises(RegistryError) as e:
        RegistryPublisher(client(proxy.address, retries=2, backoff=0.01), repo).publish(image, ["v1"])
    assert "HTTP 500" in str(e.value) and "after 3 attempts" in str(e.value) and repo in str(e.value)
    c = client(anon.address)
    assert "v1" not in c.list_tags(repo)  # nothing half-published under a name
    proxy.rules.clear()
    res = RegistryPublisher(client(proxy.address), repo).publish(image, ["v1"])
    assert res.bytes_uploaded == 0  # the blobs made it the first time
    assert c.list_tags(repo) == ["v1"]


def test_unreachable_registry_gives_a_clear_error_after_one_quick_retry():
    port = free_port()  # bound then closed: nothing listens there
    log = io.StringIO()
    c = client(f"127.0.0.1:{port}", progress=Progress(log))
    with pytest.raises(RegistryError) as e:
        RegistryPublisher(c, "app").publish(small_image(), ["v1"])
    msg = str(e.value)
    assert f"cannot reach registry 127.0.0.1:{port}" in msg and "is the registry running?" in msg
    assert "ferry local up" in msg
    assert log.getvalue().count("retrying") <= 3  # one per blob checked in parallel, never the full backoff


def test_read_only_registry_refuses_the_push_clearly_and_nothing_is_tagged():
    ro = shared("readonly")
    with pytest.raises(RegistryError) as e:
        RegistryPublisher(client(ro.address), "ro/app").publish(small_image(), ["v1"])
    msg = str(e.value)
    assert "HTTP 405" in msg and ro.address in msg and "ro/app" in msg and "read-only" in msg
    assert e.value.status == 405


def test_missing_base_image_is_no_such_image(anon):
    with pytest.raises(RegistryError) as e:
        fetch_image(client(anon.address), f"{anon.address}/nothing/here:3.11")
    assert f"no such image {anon.address}/nothing/here:3.11" in str(e.value)
    assert e.value.status == 404


def test_base_read_from_an_index_picks_the_platform_and_never_downloads_layers(anon, proxy):
    repo = unique_name("index/base")
    amd = small_image("amd")
    arm = make_image([{"bin/hello": b"arm64 binary"}], platform=Platform("linux", "arm64"))
    res = RegistryPublisher(client(anon.address), repo).publish(ImageIndex((amd, arm)), ["3.11"])
    assert res.media_type == "application/vnd.oci.image.index.v1+json"
    assert [row["platforms"] for row in res.layers][-1] == ["linux/arm64"]

    via = client(proxy.address)
    got = resolve_image(via, f"{proxy.address}/{repo}:3.11", "linux/arm64")
    assert got.digest == arm.digest and got.index_digest == res.digest
    assert got.image.platform == Platform("linux", "arm64")
    assert all(b.data is None for b in got.image.layers)
    fetched = [p for m, p, _ in proxy.seen if m == "GET" and "/blobs/" in p]
    assert fetched == [f"/v2/{repo}/blobs/{arm.config.digest}"]  # the config only
    idx = fetch_index(via, f"{proxy.address}/{repo}:3.11")
    assert idx.digest == res.digest and [str(i.platform) for i in idx.manifests] == ["linux/amd64", "linux/arm64"]
    with pytest.raises(Exception, match="has no image for linux/s390x"):
        fetch_image(via, f"{proxy.address}/{repo}:3.11", "linux/s390x")


def test_docker_v2_base_image_is_read_and_can_be_extended_as_oci(anon):
    repo = unique_name("docker/base")
    base = small_image("docker")
    docker_style = type(base)(
        config=Blob.from_bytes(base.config.data, DOCKER_CONFIG),
        layers=tuple(Blob.from_bytes(b.data, DOCKER_LAYER_GZIP) for b in base.layers),
        media_type=DOCKER_MANIFEST)
    c = client(anon.address)
    RegistryPublisher(c, repo).publish(docker_style, ["slim"])
    r = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{anon.address}/{repo}:slim")
    assert json.loads(r.stdout)["mediaType"] == DOCKER_MANIFEST

    got = resolve_image(c, Reference.parse(f"{anon.address}/{repo}:slim"))
    assert got.media_type == DOCKER_MANIFEST and got.digest == docker_style.digest
    oci = as_oci(got.image)
    assert [b.digest for b in oci.layers] == [b.digest for b in base.layers]
    app = make_image([{"app/main.py": b"y"}], base=oci, base_diff_ids=oci.config_json()["rootfs"]["diff_ids"])
    res = RegistryPublisher(c, unique_name("docker/app")).publish(app, ["v1"])
    assert sum(row["mounted"] for row in res.layers) == len(base.layers)


def test_sbom_is_attached_as_a_referrer_and_found_through_the_tag_scheme(anon):
    repo = unique_name("sbom/app")
    c = client(anon.address)
    image = small_image("sbom")
    p = RegistryPublisher(c, repo)
    p.publish(image, ["v1"])
    sbom = Blob.from_bytes(json.dumps({"spdxVersion": "SPDX-2.3", "name": repo}).encode(), "application/spdx+json")
    a = p.attach(image.digest, "application/spdx+json", sbom)
    assert a.referrers_api is False  # registry 2.8 has none
    hexd = image.digest[7:]
    assert a.tags == (f"sha256-{hexd}.sbom", f"sha256-{hexd}")

    r = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{anon.address}/{repo}:sha256-{hexd}.sbom")
    art = json.loads(r.stdout)
    assert art["artifactType"] == "application/spdx+json" and art["subject"]["digest"] == image.digest
    assert c.get_blob(repo, art["layers"][0]["digest"]) == sbom.data

    again = p.attach(image.digest, "application/spdx+json", sbom)  # idempotent
    assert again.digest == a.digest and again.bytes_uploaded == 0
    found = p.referrers(image.digest, "application/spdx+json")
    assert [d["digest"] for d in found] == [a.digest]


def test_list_tags_and_delete(anon):
    repo = unique_name("tags/app")
    c = client(anon.address)
    image = small_image("tags")
    RegistryPublisher(c, repo).publish(image, ["a", "b"])
    assert sorted(c.list_tags(repo)) == ["a", "b"]
    assert c.delete_manifest(repo, "a") is True
    assert c.manifest_exists(repo, image.digest) is False
    assert c.delete_manifest(repo, image.digest) is False
    assert c.list_tags("never/pushed") == []

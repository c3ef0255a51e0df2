"""ctypes.util.find_library in ferry's images: the base ships ldconfig and an /etc/ld.so.cache
made by each tree's own ldconfig (arm64's through qemu-user), and the packages layer carries
the cache over the base and its Debian packages, so plain psycopg (no [binary]) finds libpq.

A base of its own is built from an empty cache into a repository of its own (the shared
ferry/python:3.11 is never touched: this module asks `ferry local status` for the target
rather than running `ferry local up`, which would rebuild the shared base from this tree's
recipe). Caches are read back from the registry and listed by the build machine's
`ldconfig -p -C` (its reader is the same for every architecture); the amd64 images are run by
the local target's dockerd."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from ferry.images import baseimage
from ferry.images.registry import RegistryClient
from ferry.progress import Progress

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
FERRY = [sys.executable, "-m", "ferry"]
PSYCOPG = "psycopg==3.3.9"  # the pure-Python package: libpq through ctypes.util.find_library


@pytest.fixture(scope="module")
def target() -> dict:
    r = subprocess.run([*FERRY, "local", "status", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    info = json.loads(r.stdout or "{}")
    if r.returncode != 0 or not info.get("registry"):
        pytest.fail(f"the local target is not up (ferry local up):\n{r.stderr[-2000:]}")
    return info


@pytest.fixture(scope="module")
def docker(target) -> list[str]:
    return ["/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker", "-H", target["docker_host"]]


@pytest.fixture(scope="module")
def client(target):
    with RegistryClient(target["registry"]) as c:
        yield c


@pytest.fixture(scope="module")
def base(target, client, tmp_path_factory) -> dict:
    """A cold build of the 3.11 base: an empty cache, so apt resolves and downloads everything."""
    repo = f"ferrytest/ldcache-base-{uuid.uuid4().hex[:8]}"
    cache = tmp_path_factory.mktemp("ld-base-cache")
    result = baseimage.ensure_base_image(registry=target["registry"], repository=repo, tag="3.11",
                                         cache_dir=cache, progress=Progress())
    result.update(cache_dir=cache, repo=repo, ref=f"{target['registry']}/{repo}:3.11")
    yield result
    for img in result.get("images", []):
        client.delete_manifest(repo, img["digest"])
    client.delete_manifest(repo, result["digest"])


def _manifest(client, repo: str, ref: str, arch: str) -> dict:
    index = json.loads(client.get_manifest(repo, ref)[0])
    (desc,) = [m for m in index["manifests"] if m["platform"]["architecture"] == arch]
    return json.loads(client.get_manifest(repo, desc["digest"])[0])


def _files(client, repo: str, digest: str, *names: str) -> dict:
    out: dict = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(client.get_blob(repo, digest)))) as t:
        for m in t.getmembers():
            if m.name in names:
                out[m.name] = t.extractfile(m).read() if m.isfile() else m
    return out


def _listing(cache: bytes, tmp_path: Path) -> dict[str, list[tuple[str, str]]]:
    """`ldconfig -p` of a cache file: {soname: [(flags, path), ...]}."""
    path = tmp_path / f"ld.so.cache.{uuid.uuid4().hex[:6]}"
    path.write_bytes(cache)
    r = subprocess.run(["/sbin/ldconfig", "-p", "-C", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out: dict[str, list[tuple[str, str]]] = {}
    for name, flags, where in re.findall(r"^\s+(\S+) \(([^)]*)\) => (\S+)$", r.stdout, re.M):
        out.setdefault(name, []).append((flags, where))
    return out


def _run(docker, ref: str, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([*docker, "run", "--rm", "--network", "host", "--platform", "linux/amd64",
                           "--entrypoint", "python3", ref, "-c", code], capture_output=True, text=True, timeout=300)


def test_find_library_finds_the_c_library_on_the_bare_base(base, docker):
    r = _run(docker, base["ref"], "import ctypes.util as u, os; "
             "print(u.find_library('c'), u.find_library('stdc++'), u.find_library('ssl'), os.getuid())")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["libc.so.6", "libstdc++.so.6", "libssl.so.3", "65532"]


@pytest.mark.parametrize("arch, flags, triplet", [("amd64", "libc6,x86-64", "x86_64-linux-gnu"),
                                                  ("arm64", "libc6,AArch64", "aarch64-linux-gnu")])
def test_each_architecture_s_cache_lists_its_own_libraries(base, client, tmp_path, arch, flags, triplet):
    m = _manifest(client, base["repo"], "3.11", arch)
    (layer,) = m["layers"]
    files = _files(client, base["repo"], layer["digest"], "etc/ld.so.cache", "usr/sbin/ldconfig", "sbin")
    assert files["sbin"].linkname == "usr/sbin"
    assert files["usr/sbin/ldconfig"][:4] == b"\x7fELF"
    listing = _listing(files["etc/ld.so.cache"], tmp_path)
    assert listing["libc.so.6"] == [(flags, f"/lib/{triplet}/libc.so.6")]
    assert (flags, f"/lib/{triplet}/libstdc++.so.6") in listing["libstdc++.so.6"]
    # every library the tree's own ldconfig saw is of its architecture
    assert {f for entries in listing.values() for f, _ in entries} == {flags}
    assert len(listing) > 30


def test_the_base_with_its_caches_assembled_again_in_an_empty_cache_is_the_same_digest(base, tmp_path):
    first = baseimage.Cache(base["cache_dir"])
    second = baseimage.Cache(tmp_path / "cache")
    shutil.copytree(first.root / "locks", second.root / "locks")
    (second.root / "debs").symlink_to(first.debs)
    index, _ = baseimage.build_index(baseimage.load_recipe(), second)
    assert index.digest == base["digest"]


def _build_app(target, base_ref: str, root: Path, cache: Path, uv: Path) -> dict:
    if not (root / "hello").exists():
        shutil.copytree(ROOT / "examples" / "hello", root / "hello", ignore=shutil.ignore_patterns("__pycache__"))
        with open(root / "hello" / "requirements.txt", "a") as f:
            f.write(f"{PSYCOPG}\n")
        (root / "ferry.toml").write_text(f"""
[app]
name = "ldcache-pq"
[image]
repository = "{target['registry']}/ferrytest/ldcache-pq-{uuid.uuid4().hex[:8]}"
base = "{base_ref}"
source = "hello"
requirements = "hello/requirements.txt"
entrypoint = ["python3", "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", "127.0.0.1:{{port}}", "hello:app"]
platforms = ["linux/amd64", "linux/arm64"]
packages = ["libpq5"]
""")
    env = {**os.environ, "FERRY_CACHE_DIR": str(cache), "UV_CACHE_DIR": str(uv)}
    r = subprocess.run([*FERRY, "-c", str(root / "ferry.toml"), "build", "--push", "--json"], cwd=root, env=env,
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.fail(f"ferry build failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def pq_app(target, base, docker, client, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ld-pq")
    doc = _build_app(target, base["ref"], root / "app", root / "cache", root / "uv")
    doc["root"] = root
    yield doc
    repo = doc["image"].split("/", 1)[1].split("@")[0]
    for tag in client.list_tags(repo):
        info = client.manifest_info(repo, tag)
        if info is not None:
            client.delete_manifest(repo, info.digest)
    subprocess.run([*docker, "rmi", "-f", doc["image"]], capture_output=True, timeout=60)


def test_plain_psycopg_finds_libpq_from_image_packages(pq_app, docker):
    assert "libpq5" in {p.split("=")[0] for p in pq_app["debian_packages"]}
    r = _run(docker, pq_app["image"], "import ctypes.util as u, psycopg; "
             "print(u.find_library('pq'), u.find_library('c'), psycopg.pq.__impl__, psycopg.pq.version())")
    assert r.returncode == 0, r.stderr
    pq, c, impl, version = r.stdout.split()
    assert (pq, c, impl) == ("libpq.so.5", "libc.so.6", "python")
    assert int(version) >= 150000


def test_the_arm64_packages_layer_s_cache_lists_arm64_libpq_and_the_base_s_libraries(pq_app, client, tmp_path):
    repo = pq_app["image"].split("/", 1)[1].split("@")[0]
    (layer,) = [x for x in pq_app["layers"] if x["role"] == "packages" and x["platforms"] == ["linux/arm64/v8"]]
    files = _files(client, repo, layer["digest"], "etc/ld.so.cache")
    listing = _listing(files["etc/ld.so.cache"], tmp_path)
    assert listing["libpq.so.5"] == [("libc6,AArch64", "/lib/aarch64-linux-gnu/libpq.so.5")]
    assert listing["libc.so.6"] == [("libc6,AArch64", "/lib/aarch64-linux-gnu/libc.so.6")]
    assert {f for entries in listing.values() for f, _ in entries} == {"libc6,AArch64"}


def test_a_second_machine_makes_the_same_packages_layers(pq_app, target, base, tmp_path):
    # a fresh cache: apt, the unpacking and both ldconfig runs again, the same bytes
    again = _build_app(target, base["ref"], pq_app["root"] / "app", tmp_path / "cache", pq_app["root"] / "uv")
    layers = lambda doc: sorted((x["platforms"][0], x["digest"]) for x in doc["layers"] if x["role"] == "packages")
    assert layers(again) == layers(pq_app)
    assert again["digest"] == pq_app["digest"]

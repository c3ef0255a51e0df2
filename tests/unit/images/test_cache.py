"""The local cache: a layer is found by its input key, never half-written, never recompressed."""

from __future__ import annotations

from pathlib import Path

from ferry.images.cache import Cache, default_root
from ferry.images.layers import Entry, write_layer


def layer(tmp_path: Path, name: str, data: bytes):
    return write_layer([Entry("app/x", data=data)], tmp_path / name, 1)


def test_put_then_get_by_key(tmp_path):
    c = Cache(tmp_path / "c")
    lf = layer(tmp_path, "l.tgz", b"1")
    stored = c.put("source", "k1", lf.path, lf.digest, lf.diff_id, lf.size, {"n": 1})
    assert stored.path == c.blob_path(lf.digest) and stored.path.is_file() and not lf.path.exists()
    hit = c.get("source", "k1")
    assert (hit.digest, hit.diff_id, hit.size, hit.extra) == (lf.digest, lf.diff_id, lf.size, {"n": 1})
    assert hit.blob().read() == stored.path.read_bytes()
    assert c.get("source", "other") is None and c.get("deps", "k1") is None


def test_two_keys_with_the_same_bytes_share_one_blob(tmp_path):
    c = Cache(tmp_path / "c")
    a = layer(tmp_path, "a.tgz", b"same")
    b = layer(tmp_path, "b.tgz", b"same")
    c.put("source", "k1", a.path, a.digest, a.diff_id, a.size)
    c.put("source", "k2", b.path, b.digest, b.diff_id, b.size)
    assert len(list((c.root / "blobs" / "sha256").iterdir())) == 1
    assert c.get("source", "k2").digest == a.digest


def test_a_record_whose_blob_is_gone_or_truncated_is_a_miss(tmp_path):
    c = Cache(tmp_path / "c")
    lf = layer(tmp_path, "l.tgz", b"1" * 1000)
    stored = c.put("deps", "k", lf.path, lf.digest, lf.diff_id, lf.size)
    stored.path.write_bytes(b"half")
    assert c.get("deps", "k") is None
    stored.path.unlink()
    assert c.get("deps", "k") is None


def test_a_corrupt_record_is_a_miss(tmp_path):
    c = Cache(tmp_path / "c")
    rec = c.root / "layers" / "deps" / "k.json"
    rec.parent.mkdir(parents=True)
    rec.write_text("{not json")
    assert c.get("deps", "k") is None


def test_cache_location_follows_the_environment(tmp_path):
    assert default_root({"FERRY_CACHE_DIR": "/x/y"}) == Path("/x/y")
    assert default_root({"XDG_CACHE_HOME": "/xdg"}) == Path("/xdg/ferry")
    assert default_root({}) == Path.home() / ".cache" / "ferry"
    assert Cache(tmp_path / "c").uv_dir == tmp_path / "c" / "uv"


def test_pushed_layers_are_remembered_per_registry(tmp_path):
    c = Cache(tmp_path / "c")
    assert c.pushed_to("sha256:aa", "127.0.0.1:5000") is None
    c.note_pushed(["sha256:aa"], "127.0.0.1:5000/team/one")
    c.note_pushed(["sha256:aa"], "registry.example/team/one")
    c.note_pushed(["sha256:aa"], "127.0.0.1:5000/team/two")
    assert c.pushed_to("sha256:aa", "127.0.0.1:5000") == "127.0.0.1:5000/team/two"
    assert c.pushed_to("sha256:aa", "registry.example") == "registry.example/team/one"

"""Layers unpacked into a tree: OCI whiteouts, opaque directories, hard links, and never a
write outside the tree, whatever the layer's symlinks say."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from ferry.errors import BuildError
from ferry.images.cache import Cache
from ferry.images.layers import gzip_bytes
from ferry.images.oci import OCI_LAYER_GZIP, Blob, sha256
from ferry.images.trees import Trees, chain_id, reader, resolve, unpack


def tar_of(*members) -> bytes:
    """members: (name, kind, data_or_target, mode)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, kind, payload, mode in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                t.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, payload
                t.addfile(info)
            else:
                info.size = len(payload)
                t.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def apply(root: Path, data: bytes) -> None:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        unpack(t, root)


def test_whiteouts_delete_and_opaque_directories_hide_the_lower_layers(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    apply(root, tar_of(("etc", "dir", b"", 0o755), ("etc/keep", "file", b"k", 0o644), ("etc/gone", "file", b"g", 0o644),
                       ("var/cache/x/a", "file", b"a", 0o644), ("var/cache/x/b", "file", b"b", 0o644)))
    apply(root, tar_of(("etc/.wh.gone", "file", b"", 0o644),
                       ("var/cache/x/.wh..wh..opq", "file", b"", 0o644), ("var/cache/x/new", "file", b"n", 0o600)))
    assert sorted(os.listdir(root / "etc")) == ["keep"]
    assert sorted(os.listdir(root / "var/cache/x")) == ["new"]  # the layer's own file stays
    assert (root / "var/cache/x/new").stat().st_mode & 0o777 == 0o600
    # the layer's times are kept: bytecode is checked against its source's mtime
    assert (root / "etc/keep").stat().st_mtime == 0 and os.lstat(root / "var/cache/x/new").st_mtime == 0


def test_a_file_replaces_a_directory_and_a_directory_a_file(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    apply(root, tar_of(("a/x", "file", b"1", 0o644), ("b", "file", b"2", 0o644)))
    apply(root, tar_of(("a", "file", b"now a file", 0o644), ("b", "dir", b"", 0o755), ("b/c", "file", b"3", 0o644)))
    assert (root / "a").read_bytes() == b"now a file" and (root / "b/c").read_bytes() == b"3"


def test_symlinks_in_a_layer_never_lead_writes_out_of_the_tree(tmp_path):
    outside = tmp_path / "host-etc"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    # an absolute link to the host's directory, then a file "through" it
    apply(root, tar_of(("etc", "symlink", str(outside), 0o777), ("up", "symlink", "../../..", 0o777)))
    apply(root, tar_of(("etc/passwd", "file", b"root::0:0\n", 0o644), ("up/escaped", "file", b"x", 0o644)))
    assert not (outside / "passwd").exists() and list(outside.iterdir()) == []
    # resolved as a chroot would: under the tree's root
    assert (root / str(outside).lstrip("/") / "passwd").read_bytes() == b"root::0:0\n"
    assert (root / "escaped").read_bytes() == b"x" and not (tmp_path / "escaped").exists()


def test_a_path_climbing_out_of_the_root_is_refused(tmp_path):
    with pytest.raises(BuildError, match="leaves the root"):
        apply(tmp_path, tar_of(("../evil", "file", b"x", 0o644)))


def test_hard_links_point_inside_the_tree(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    apply(root, tar_of(("usr/bin/python3.11", "file", b"\x7fELF", 0o755), ("usr/bin/python3", "hardlink", "usr/bin/python3.11", 0o755)))
    assert os.path.samefile(root / "usr/bin/python3", root / "usr/bin/python3.11")
    with pytest.raises(BuildError, match="hard link"):
        apply(root, tar_of(("x", "hardlink", "not/there", 0o644)))


def test_resolve_follows_links_inside_the_root(tmp_path):
    root = tmp_path / "r"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text("ID=debian\n")
    (root / "etc").mkdir()
    os.symlink("../usr/lib/os-release", root / "etc/os-release")
    os.symlink("/usr/lib", root / "lib")
    assert resolve(root, "etc/os-release", follow_last=True) == root / "usr/lib/os-release"
    assert resolve(root, "lib/os-release") == root / "usr/lib/os-release"
    read, listdir = reader(root)
    assert read("etc/os-release") == b"ID=debian\n" and read("nothing") is None
    assert listdir("lib") == ["os-release"]


def test_a_base_tree_is_made_once_from_its_layers_in_order(tmp_path):
    cache = Cache(tmp_path / "cache")
    layers = [tar_of(("etc/a", "file", b"1", 0o644), ("etc/b", "file", b"1", 0o644)),
              tar_of(("etc/.wh.b", "file", b"", 0o644), ("etc/c", "file", b"2", 0o644))]
    blobs = []
    for i, raw in enumerate(layers):
        gz = gzip_bytes(raw)
        (tmp_path / f"l{i}").write_bytes(gz)
        blobs.append(Blob(sha256(gz), len(gz), OCI_LAYER_GZIP, path=tmp_path / f"l{i}"))
    diff_ids = tuple(sha256(raw) for raw in layers)
    trees = Trees(cache, fetch_blob=None)
    tree = trees.base(tuple(blobs), diff_ids)
    assert tree.name == "base-" + chain_id(diff_ids)[7:]
    assert sorted(os.listdir(tree / "etc")) == ["a", "c"]
    (tmp_path / "l0").unlink()  # made already: its layers are not read again
    assert trees.base(tuple(blobs), diff_ids) == tree


def test_a_layer_known_only_by_digest_is_fetched_once(tmp_path):
    cache = Cache(tmp_path / "cache")
    gz = gzip_bytes(tar_of(("app/x", "file", b"x", 0o644)))
    fetched = []

    def fetch(blob):
        fetched.append(blob.digest)
        dest = cache.blob_path(blob.digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(gz)
        return dest
    blob = Blob(sha256(gz), len(gz), OCI_LAYER_GZIP, source="127.0.0.1:5000/app")
    trees = Trees(cache, fetch)
    assert (trees.layer(blob, "sha256:" + "d" * 64) / "app/x").read_bytes() == b"x"
    assert trees.blob_file(blob) == cache.blob_path(blob.digest) and fetched == [blob.digest]
    with pytest.raises(BuildError, match="no registry to fetch it from"):
        Trees(Cache(tmp_path / "other"), None).blob_file(blob)


def test_chain_id_is_the_oci_one():
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert chain_id([a]) == a
    assert chain_id([a, b]) == sha256(f"{a} {b}".encode())

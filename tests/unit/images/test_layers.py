"""Layer tars are reproducible to the byte: what the host did to the files must not matter."""

from __future__ import annotations

import gzip
import io
import os
import tarfile

import pytest

from ferry.errors import BuildError
from ferry.images.layers import (Entry, complete, content_key, epoch, gzip_bytes, normalise_mode, tar_bytes,
                                 tree_entries, write_layer)
from ferry.images.oci import sha256


def make_tree(root, mtime: int, umask_mode: int = 0o644):
    (root / "pkg" / "sub").mkdir(parents=True)
    files = {"pkg/__init__.py": b"x = 1\n", "pkg/sub/mod.py": b"y = 2\n", "run.sh": b"#!/bin/sh\necho hi\n",
             "a.txt": b"a", "pkg.txt": b"p"}
    for rel, data in files.items():
        p = root / rel
        p.write_bytes(data)
        os.chmod(p, umask_mode | (0o111 if rel.endswith(".sh") else 0))
        os.utime(p, (mtime, mtime))
    for d in (root / "pkg", root / "pkg" / "sub"):
        os.chmod(d, 0o700 if umask_mode == 0o600 else 0o775)
        os.utime(d, (mtime, mtime))
    os.symlink("pkg/__init__.py", root / "link.py")
    return root


def test_same_files_give_same_bytes_whatever_their_times_modes_and_folder(tmp_path):
    a = make_tree(tmp_path / "checkout-one", mtime=1_600_000_000, umask_mode=0o644)
    b = make_tree(tmp_path / "elsewhere" / "checkout-two", mtime=1_700_000_123, umask_mode=0o600)
    ta = tar_bytes(tree_entries(a, "app"), mtime=1)
    tb = tar_bytes(tree_entries(b, "app"), mtime=1)
    assert ta == tb
    la = write_layer(tree_entries(a, "app"), tmp_path / "a.tgz", 1)
    lb = write_layer(tree_entries(b, "app"), tmp_path / "b.tgz", 1)
    assert (la.digest, la.diff_id, la.size) == (lb.digest, lb.diff_id, lb.size)
    assert (tmp_path / "a.tgz").read_bytes() == (tmp_path / "b.tgz").read_bytes()


def test_tar_members_are_sorted_with_parents_fixed_owner_time_and_modes(tmp_path):
    root = make_tree(tmp_path / "src", mtime=1_650_000_000, umask_mode=0o600)
    data = tar_bytes(tree_entries(root, "app"), mtime=42)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        members = t.getmembers()
    assert [m.name for m in members] == [
        "app", "app/a.txt", "app/link.py", "app/pkg", "app/pkg/__init__.py", "app/pkg/sub", "app/pkg/sub/mod.py",
        "app/pkg.txt", "app/run.sh"]
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 42)
        assert m.pax_headers == {}
    modes = {m.name: (m.type, m.mode) for m in members}
    assert modes["app"] == (tarfile.DIRTYPE, 0o755)
    assert modes["app/pkg/sub"] == (tarfile.DIRTYPE, 0o755)
    assert modes["app/pkg/__init__.py"] == (tarfile.REGTYPE, 0o644)
    assert modes["app/run.sh"] == (tarfile.REGTYPE, 0o755)
    assert modes["app/link.py"][0] == tarfile.SYMTYPE
    assert len(data) % tarfile.RECORDSIZE == 0


def test_missing_parent_directories_are_added():
    entries = complete([Entry("app/deps/flask/__init__.py", data=b"")])
    assert [(e.path, e.kind) for e in entries] == [
        ("app", "dir"), ("app/deps", "dir"), ("app/deps/flask", "dir"), ("app/deps/flask/__init__.py", "file")]


def test_long_paths_use_a_pax_path_header_and_nothing_else():
    long = "app/deps/" + "/".join(["averyveryverylongdirectoryname"] * 8) + "/module.py"
    data = tar_bytes([Entry(long, data=b"z")], mtime=1)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        member = t.getmember(long)
    assert set(member.pax_headers) == {"path"}
    assert member.mtime == 1


def test_exact_bytes_of_a_one_file_layer_are_stable():
    data = tar_bytes([Entry("app/hello.py", data=b"print('hi')\n")], mtime=1)
    assert sha256(data) == sha256(tar_bytes([Entry("app/hello.py", data=b"print('hi')\n")], mtime=1))
    # the header of the first member, byte for byte: name, mode, uid, gid, size, mtime
    hdr = data[:512]
    assert hdr[:4] == b"app/"
    assert hdr[100:108] == b"0000755\x00"
    assert hdr[108:116] == b"0000000\x00" and hdr[116:124] == b"0000000\x00"
    assert hdr[136:148] == b"00000000001\x00"
    assert hdr[257:265] == b"ustar\x0000"
    # pinned digest: a change in how tars are written must be deliberate (and bump recipe versions)
    assert sha256(data) == "sha256:42d98147562eb3bd5c1d0f640fed0df04e5604a254efbc4de3e0d093a7944d76"
    # the compressed digest depends on zlib's output (stable for zlib 1.2.x at this level)
    assert sha256(gzip_bytes(data)) == "sha256:0ec3733923469b5ce564ab139e9eab387bcab90421866247967fb2f17f06c0f4"


def test_gzip_header_has_no_time_no_name_and_is_repeatable():
    a = gzip_bytes(b"x" * 10000)
    assert a == gzip_bytes(b"x" * 10000)
    assert a[:4] == b"\x1f\x8b\x08\x00"  # no FNAME flag
    assert a[4:8] == b"\x00\x00\x00\x00"  # mtime 0
    assert a[9] == 255  # OS unknown: the same on every host
    assert gzip.decompress(a) == b"x" * 10000


def test_write_layer_digests_match_the_bytes(tmp_path):
    entries = [Entry("app/a", data=b"1"), Entry("app/b", data=b"2" * 5000)]
    lf = write_layer(entries, tmp_path / "l.tgz", 1)
    raw = (tmp_path / "l.tgz").read_bytes()
    assert lf.digest == sha256(raw) and lf.size == len(raw)
    assert lf.diff_id == sha256(gzip.decompress(raw)) == sha256(tar_bytes(entries, 1))


def test_content_key_changes_with_content_and_mode_but_not_mtime(tmp_path):
    root = make_tree(tmp_path / "s", mtime=1_600_000_000)
    k1 = content_key(tree_entries(root, "app"))
    os.utime(root / "a.txt", (1_700_000_000, 1_700_000_000))
    assert content_key(tree_entries(root, "app")) == k1
    (root / "a.txt").write_bytes(b"b")
    k2 = content_key(tree_entries(root, "app"))
    assert k2 != k1
    os.chmod(root / "a.txt", 0o755)
    assert content_key(tree_entries(root, "app")) != k2


def test_modes_are_normalised():
    assert normalise_mode(0o100600) == 0o644
    assert normalise_mode(0o100700) == 0o755
    assert normalise_mode(0o100664) == 0o644
    assert normalise_mode(0o040700) == 0o755


def test_epoch_comes_from_source_date_epoch_or_is_one():
    assert epoch({}) == 1
    assert epoch({"SOURCE_DATE_EPOCH": "1700000000"}) == 1700000000
    with pytest.raises(BuildError, match="SOURCE_DATE_EPOCH"):
        epoch({"SOURCE_DATE_EPOCH": "yesterday"})


def test_same_path_twice_is_refused():
    with pytest.raises(ValueError, match="two layer entries"):
        complete([Entry("app/x", data=b"1"), Entry("app/x", data=b"2")])


def test_special_files_are_left_out(tmp_path):
    (tmp_path / "f").write_text("x")
    os.mkfifo(tmp_path / "pipe")
    assert [e.path for e in tree_entries(tmp_path, "app")] == ["app", "app/f"]

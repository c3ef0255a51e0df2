"""The root filesystem steps: usrmerge, trimming, users, CA bundle, bytecode, tar bytes."""

from __future__ import annotations

import io
import struct
import sys
import tarfile

import pytest

from ferry.errors import BuildError
from ferry.images import rootfs
from ferry.images.rootfs import DIR, FILE, SYMLINK, Entry, User


def _deb_tar(members: list[tarfile.TarInfo], data: dict[str, bytes]) -> tarfile.TarFile:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for m in members:
            t.addfile(m, io.BytesIO(data[m.name]) if m.name in data else None)
    buf.seek(0)
    return tarfile.open(fileobj=buf, mode="r:")


def _info(name: str, kind=tarfile.REGTYPE, size=0, mode=0o644, link="") -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type, i.size, i.mode, i.linkname = kind, size, mode, link
    return i


@pytest.mark.parametrize("path,merged", [
    ("bin/bash", "usr/bin/bash"),
    ("lib/x86_64-linux-gnu/libc.so.6", "usr/lib/x86_64-linux-gnu/libc.so.6"),
    ("lib64/ld-linux-x86-64.so.2", "usr/lib64/ld-linux-x86-64.so.2"),
    ("sbin", "usr/sbin"),
    ("usr/bin/python3", "usr/bin/python3"),
    ("etc/passwd", "etc/passwd"),
    ("library/x", "library/x"),
])
def test_usrmerge_moves_top_level_binary_and_library_dirs_into_usr(path, merged):
    assert rootfs.usrmerge(path) == merged


def test_archive_names_are_normalised():
    assert rootfs.normalise("./usr/bin/") == "usr/bin"
    assert rootfs.normalise("./") == ""
    assert rootfs.normalise("./.hidden") == ".hidden"


def test_usrmerge_links_exist_for_bin_sbin_lib_and_lib64_only_where_used():
    tree = {"usr/lib64/ld-linux-x86-64.so.2": Entry.file("usr/lib64/ld-linux-x86-64.so.2", b"")}
    linked = rootfs.add_usrmerge_links(tree)
    links = {p: e.target for p, e in linked.items() if e.kind == SYMLINK}
    assert links == {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
    arm = rootfs.add_usrmerge_links({})
    assert "lib64" not in arm and arm["lib"].target == "usr/lib"
    assert arm["usr/bin"].kind == DIR


def test_package_files_land_under_usr_and_hard_links_become_copies():
    tar = _deb_tar([
        _info("./", tarfile.DIRTYPE, mode=0o755),
        _info("./lib", tarfile.DIRTYPE, mode=0o755),
        _info("./lib/libz.so.1.2", size=3),
        _info("./lib/libz.so.1", tarfile.SYMTYPE, link="libz.so.1.2"),
        _info("./usr/bin/python3.11", size=4, mode=0o755),
        _info("./usr/bin/python3.11-again", tarfile.LNKTYPE, link="./usr/bin/python3.11"),
    ], {"./lib/libz.so.1.2": b"zzz", "./usr/bin/python3.11": b"\x7fELF"})
    entries = {e.path: e for e in rootfs.entries_from_tar(tar, "zlib1g")}
    assert set(entries) == {"usr/lib", "usr/lib/libz.so.1.2", "usr/lib/libz.so.1",
                            "usr/bin/python3.11", "usr/bin/python3.11-again"}
    assert entries["usr/lib/libz.so.1"].target == "libz.so.1.2"
    assert entries["usr/bin/python3.11-again"].kind == FILE
    assert entries["usr/bin/python3.11-again"].data == b"\x7fELF"
    assert entries["usr/bin/python3.11-again"].mode == 0o755


def test_merge_keeps_the_first_directory_and_reports_a_file_two_packages_ship():
    a = [Entry("etc", DIR, 0o755, package="a"), Entry("etc/x", FILE, 0o644, data=b"a", package="a")]
    b = [Entry("etc", DIR, 0o700, package="b"), Entry("etc/x", FILE, 0o644, data=b"b", package="b")]
    tree, _ = rootfs.merge({}, a)
    tree, overwritten = rootfs.merge(tree, b)
    assert tree["etc"].mode == 0o755
    assert tree["etc/x"].data == b"b"
    assert overwritten == ["etc/x"]


def test_trim_drops_docs_but_keeps_copyright_files_and_their_directories():
    tree = {p: Entry.file(p, b"x") for p in (
        "usr/share/doc/libc6/changelog.gz", "usr/share/doc/libc6/copyright",
        "usr/share/man/man1/python3.1.gz", "usr/lib/x86_64-linux-gnu/gconv/UTF-16.so",
        "usr/bin/python3.11")}
    tree["usr/share/doc"] = Entry.dir("usr/share/doc")
    tree["usr/share/doc/libc6"] = Entry.dir("usr/share/doc/libc6", 0o750)
    out = rootfs.trim(tree, ["usr/share/doc/", "usr/share/man/", "usr/lib/*/gconv/"],
                      ["usr/share/doc/*/copyright"])
    assert sorted(out) == ["usr/bin/python3.11", "usr/share/doc", "usr/share/doc/libc6",
                           "usr/share/doc/libc6/copyright"]
    assert out["usr/share/doc/libc6"].mode == 0o750  # the package's own directory, not a made-up one


def test_only_keeps_matching_paths_with_their_parent_directories():
    entries = [Entry.dir("usr"), Entry.dir("usr/bin"), Entry.file("usr/bin/locale", b"x"),
               Entry.dir("usr/lib"), Entry.dir("usr/lib/locale"),
               Entry.dir("usr/lib/locale/C.utf8"), Entry.file("usr/lib/locale/C.utf8/LC_CTYPE", b"c")]
    kept = sorted(e.path for e in rootfs.only(entries, ["usr/lib/locale/C.utf8/"]))
    assert kept == ["usr", "usr/lib", "usr/lib/locale", "usr/lib/locale/C.utf8",
                    "usr/lib/locale/C.utf8/LC_CTYPE"]


def test_passwd_and_group_have_root_the_app_user_and_nobody():
    user = User("app", 65532, 65532, "/home/app")
    assert rootfs.passwd(user) == (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        "app:x:65532:65532:app:/home/app:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    assert rootfs.group(user) == "root:x:0:\napp:x:65532:\nnogroup:x:65534:\n"


def test_ca_bundle_concatenates_certificates_in_sorted_order_each_ending_in_newline():
    tree = {
        "usr/share/ca-certificates/mozilla/B.crt": Entry.file("usr/share/ca-certificates/mozilla/B.crt", b"B"),
        "usr/share/ca-certificates/mozilla/A.crt": Entry.file("usr/share/ca-certificates/mozilla/A.crt", b"A\n"),
        "usr/share/ca-certificates/mozilla/README": Entry.file("usr/share/ca-certificates/mozilla/README", b"no"),
    }
    assert rootfs.ca_bundle(tree) == b"A\nB\n"


def test_no_certificates_is_an_error_naming_the_package():
    with pytest.raises(BuildError, match="ca-certificates"):
        rootfs.ca_bundle({})


def test_dpkg_status_entry_marks_the_package_installed():
    text = "Package: libc6\nVersion: 2.36-9\nArchitecture: arm64\nDescription: GNU C\n more\n"
    assert rootfs.dpkg_status_entry(text) == (
        b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\nArchitecture: arm64\n"
        b"Description: GNU C\n more\n")


def test_tar_is_sorted_with_fixed_times_numeric_owners_and_parents_first():
    tree = {
        "usr/bin/python3": Entry.symlink("usr/bin/python3", "python3.11"),
        "home/app": Entry.dir("home/app", 0o750, 65532, 65532),
        "usr": Entry.dir("usr"), "usr/bin": Entry.dir("usr/bin"), "home": Entry.dir("home"),
        "usr/bin/python3.11": Entry.file("usr/bin/python3.11", b"\x7fELF", 0o755),
        "usr-local": Entry.file("usr-local", b"x"),
    }
    data = rootfs.tar_bytes(tree, mtime=1)
    assert data == rootfs.tar_bytes(dict(reversed(list(tree.items()))), mtime=1)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        members = t.getmembers()
    assert [m.name for m in members] == ["home", "home/app", "usr", "usr/bin", "usr/bin/python3",
                                         "usr/bin/python3.11", "usr-local"]
    assert {m.mtime for m in members} == {1}
    assert {(m.uname, m.gname) for m in members} == {("", "")}
    home = members[1]
    assert (home.uid, home.gid, home.mode) == (65532, 65532, 0o750)


def _compile(tmp_path, items):
    """The bytecode script as the sandbox runs it, here with this machine's Python."""
    import subprocess

    io_dir = tmp_path / rootfs.BYTECODE_DIR
    io_dir.mkdir(parents=True)
    (io_dir / "compile.py").write_text(rootfs.BYTECODE_SCRIPT)
    (io_dir / "in").write_bytes(rootfs.marshal_sources(items))
    subprocess.run([sys.executable, "-I", "-S", "-B", str(io_dir / "compile.py"), str(io_dir)], check=True,
                   env={"PYTHONHASHSEED": "0"})
    return rootfs.unmarshal_pycs((io_dir / "out").read_bytes(), len(items))


def test_the_bytecode_script_writes_hash_checked_pyc_and_skips_what_does_not_compile(tmp_path):
    import importlib.util
    import marshal

    src = b"X = {'a', 'b'}\nY = [1, 2][1:]\n"
    pyc, py2 = _compile(tmp_path, [("/usr/lib/python3.11/json/__init__.py", src),
                                   ("/usr/lib/python3.11/lib2to3/py2.py", b"print 'python 2'\n")])
    assert py2 is None
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
    assert struct.unpack("<I", pyc[4:8])[0] == 0b11  # hash-based, checked against the source
    assert pyc[8:16] == importlib.util.source_hash(src)
    code = marshal.loads(pyc[16:])
    assert code.co_filename == "/usr/lib/python3.11/json/__init__.py"
    # the same source in another order and company gives the same bytes
    assert _compile(tmp_path / "again", [("/x.py", b"Z = 2\n"), ("/usr/lib/python3.11/json/__init__.py", src)])[1] == pyc


def test_bytecode_goes_next_to_each_module_of_the_standard_library_only():
    src = b"X = 1\n"
    tree = {"usr/lib/python3.13/json/__init__.py": Entry.file("usr/lib/python3.13/json/__init__.py", src),
            "usr/lib/python3.13/lib2to3/py2.py": Entry.file("usr/lib/python3.13/lib2to3/py2.py", b"print 'x'\n"),
            "etc/python3.13/sitecustomize.py": Entry.file("etc/python3.13/sitecustomize.py", src)}
    sources = rootfs.python_sources([tree])
    assert sorted(path for path, _ in sources) == ["/usr/lib/python3.13/json/__init__.py",
                                                   "/usr/lib/python3.13/lib2to3/py2.py"]
    key = next(k for k in sources if k[0].endswith("json/__init__.py"))
    out = rootfs.add_bytecode(tree, {key: b"PYC"}, "3.13")
    assert out["usr/lib/python3.13/json/__pycache__/__init__.cpython-313.pyc"].data == b"PYC"
    assert out["usr/lib/python3.13/json/__pycache__"].kind == DIR
    assert len([p for p in out if p.endswith(".pyc")]) == 1  # none for what did not compile


def test_one_module_in_two_architectures_trees_is_compiled_once_unless_it_differs():
    a = {"usr/lib/python3.13/os.py": Entry.file("usr/lib/python3.13/os.py", b"A"),
         "usr/lib/python3.13/_sysconfigdata__x86_64-linux-gnu.py": Entry.file("x", b"amd")}
    b = {"usr/lib/python3.13/os.py": Entry.file("usr/lib/python3.13/os.py", b"A"),
         "usr/lib/python3.13/_sysconfigdata__aarch64-linux-gnu.py": Entry.file("y", b"arm")}
    assert len(rootfs.python_sources([a, b])) == 3


def test_a_tree_is_written_to_disk_but_never_through_a_link_that_leaves_it(tmp_path):
    tree = {"usr": Entry.dir("usr"), "usr/bin": Entry.dir("usr/bin"),
            "usr/bin/python3": Entry.file("usr/bin/python3", b"#!", 0o755), "bin": Entry.symlink("bin", "usr/bin")}
    rootfs.write_tree(tree, tmp_path / "root")
    assert (tmp_path / "root/bin/python3").read_bytes() == b"#!"
    assert (tmp_path / "root/usr/bin/python3").stat().st_mode & 0o755 == 0o755
    (tmp_path / "outside").mkdir()
    bad = {"etc": Entry.symlink("etc", str(tmp_path / "outside")), "etc/passwd": Entry.file("etc/passwd", b"x")}
    with pytest.raises(BuildError, match="under a link that leaves it"):
        rootfs.write_tree(bad, tmp_path / "root2")
    assert not (tmp_path / "outside/passwd").exists()

"""The dynamic linker's cache: which ldconfig runs how (pure), the exact sandbox argv, what
of a tree is written for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.errors import BuildError
from ferry.images import ldcache, sandbox
from ferry.images.packages import resolution_key
from ferry.images.rootfs import Entry

BINFMT_F = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\n"


def test_its_own_architecture_runs_ldconfig_directly():
    assert ldcache.emulator("amd64", "amd64", {}, None) is None
    assert ldcache._argv(None) == ("/sbin/ldconfig", "-X", "-i")


def test_qemu_registered_with_binfmt_runs_it_directly_too():
    assert ldcache.emulator("arm64", "amd64", {"qemu-aarch64": BINFMT_F}, "/usr/bin/qemu-aarch64-static") is None


def test_without_binfmt_the_arm64_ldconfig_runs_through_qemu_user_copied_into_the_root():
    emu = ldcache.emulator("arm64", "amd64", {}, "/usr/bin/qemu-aarch64-static")
    assert emu == "/usr/bin/qemu-aarch64-static"
    assert ldcache._argv(emu) == ("/.ferry-ldconfig/qemu-aarch64-static", "/sbin/ldconfig", "-X", "-i")


def test_no_way_to_run_another_architecture_is_an_error_not_a_wrong_cache():
    # an x86-64 ldconfig skips aarch64 libraries: its cache for an arm64 tree would be empty
    with pytest.raises(BuildError) as e:
        ldcache.emulator("arm64", "amd64", {"qemu-aarch64": "disabled\nflags: F\n"}, None)
    assert "qemu-aarch64-static not found" in e.value.message
    assert "apt-get install qemu-user-static" in e.value.hint


def test_find_qemu_looks_for_the_static_binary_of_the_architecture():
    assert ldcache.find_qemu("arm64", {"qemu-aarch64-static": "/usr/bin/qemu-aarch64-static"}.get) == \
        "/usr/bin/qemu-aarch64-static"
    assert ldcache.find_qemu("amd64", {}.get) is None
    assert ldcache.find_qemu("riscv64", {"x": "y"}.get) is None


def test_the_sandbox_argv_is_bwrap_as_root_without_network_or_environment():
    argv = sandbox.ldconfig_argv("/usr/bin/bwrap", Path("/cache/ldconfig-arm64"),
                                 ("/.ferry-ldconfig/qemu-aarch64-static", "/sbin/ldconfig", "-X", "-i"))
    assert argv == ["/usr/bin/bwrap", "--bind", "/cache/ldconfig-arm64", "/", "--proc", "/proc", "--dev", "/dev",
                    "--tmpfs", "/tmp", "--unshare-all", "--unshare-user", "--uid", "0", "--gid", "0",
                    "--hostname", "ferry-build", "--die-with-parent", "--new-session", "--clearenv",
                    "--setenv", "LC_ALL", "C", "--chdir", "/", "--",
                    "/.ferry-ldconfig/qemu-aarch64-static", "/sbin/ldconfig", "-X", "-i"]


def test_the_tree_written_for_ldconfig_leaves_out_what_it_never_reads():
    tree = {p: Entry.file(p, b"x") for p in (
        "usr/sbin/ldconfig", "etc/ld.so.conf", "etc/ld.so.conf.d/x86_64-linux-gnu.conf",
        "usr/lib/x86_64-linux-gnu/libc.so.6", "usr/lib/python3.11/os.py", "usr/lib/python3/dist-packages/a.py",
        "usr/share/zoneinfo/UTC", "var/lib/dpkg/status.d/libc6")}
    tree["usr/share"] = Entry.dir("usr/share")
    tree["lib"] = Entry.symlink("lib", "usr/lib")
    assert sorted(ldcache.subset(tree)) == ["etc/ld.so.conf", "etc/ld.so.conf.d/x86_64-linux-gnu.conf", "lib",
                                             "usr/lib/x86_64-linux-gnu/libc.so.6", "usr/sbin/ldconfig"]


def test_a_tree_has_ldconfig_only_as_a_file():
    assert ldcache.has_ldconfig({"usr/sbin/ldconfig": Entry.file("usr/sbin/ldconfig", b"\x7fELF", 0o755)})
    assert ldcache.has_ldconfig({"sbin/ldconfig": Entry.file("sbin/ldconfig", b"\x7fELF", 0o755)})
    assert not ldcache.has_ldconfig({"usr/sbin/ldconfig": Entry.symlink("usr/sbin/ldconfig", "x")})
    assert not ldcache.has_ldconfig({})


def test_the_cache_is_added_world_readable():
    tree = ldcache.with_cache({}, b"glibc-ld.so.cache1.1")
    assert tree["etc/ld.so.cache"] == Entry.file("etc/ld.so.cache", b"glibc-ld.so.cache1.1", 0o644)


def test_the_shared_packages_layer_is_keyed_by_the_base_whose_libraries_its_cache_lists():
    assert resolution_key("bookworm", "amd64", [], 1, "sha256:a") != resolution_key("bookworm", "amd64", [], 1, "sha256:b")
    assert resolution_key("bookworm", "amd64", [], 1, "sha256:a") == resolution_key("bookworm", "amd64", [], 1, "sha256:a")


def test_a_recipe_without_ldconfig_gets_no_cache_and_runs_nothing(tmp_path):
    from ferry.images import baseimage

    tree = {"usr/lib/x86_64-linux-gnu/libc.so.6": Entry.file("usr/lib/x86_64-linux-gnu/libc.so.6", b"\x7fELF")}
    prepared = baseimage.PlatformTree("linux/amd64", [], "3.11.2", tree, 0)
    assert baseimage.add_ld_cache(prepared, baseimage.Cache(tmp_path / "cache")) == tree
    assert not (tmp_path / "cache").exists()


def test_the_shipped_recipes_keep_ldconfig_and_its_configuration():
    from ferry.images import baseimage, rootfs

    for python in baseimage.available_pythons():
        only = dict(baseimage.load_recipe(python=python).only)["libc-bin"]
        for path in ("usr/sbin/ldconfig", "etc/ld.so.conf", "etc/ld.so.conf.d/libc.conf", "usr/lib/locale/C.utf8/LC_CTYPE"):
            assert any(rootfs._matches(path, p) for p in only), (python, path)

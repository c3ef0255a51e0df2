"""The base image recipe, its hash, the image config and the assembly of a root filesystem."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ferry.errors import BuildError, ConfigError
from ferry.images import baseimage, rootfs
from ferry.images.baseimage import Unpacked
from ferry.images.debian import Package
from ferry.images.oci import OCI_CONFIG, OCI_LAYER_GZIP, Blob, Image, ImageIndex, Platform
from ferry.images.rootfs import Entry

MINOR = f"{sys.version_info.major}.{sys.version_info.minor}"

SMALL = f"""
[image]
repository = "ferry/python"
tag = "{MINOR}"
platforms = ["linux/amd64", "linux/arm64"]
distribution = "bookworm"
python = "{MINOR}"

[packages]
install = ["python3", "ca-certificates"]
assume_installed = ["dpkg"]

[packages.only]
libc-bin = ["usr/lib/locale/C.utf8/"]

[trim]
drop = ["usr/share/doc/", "usr/share/ca-certificates/"]
keep = ["usr/share/doc/*/copyright"]

[user]
name = "app"
uid = 65532
gid = 65532
home = "/home/app"

[config]
workdir = "/app"
cmd = ["python3"]
timezone = "Etc/UTC"
env = {{ LANG = "C.UTF-8" }}
"""


def test_the_shipped_recipe_is_valid_multi_arch_and_non_root():
    r = baseimage.load_recipe()
    assert r.platforms == ("linux/amd64", "linux/arm64")
    assert (r.repository, r.tag, r.distribution) == ("ferry/python", "3.11", "bookworm")
    assert r.user.uid == 65532 and r.user.gid == 65532 and r.user.name == "app"
    assert "python3" in r.install and "ca-certificates" in r.install


@pytest.mark.parametrize("python, suite", [("3.11", "bookworm"), ("3.13", "trixie"), ("3.14", "forky")])
def test_each_python_has_a_recipe_from_its_debian_suite_with_what_manylinux_wheels_need(python, suite):
    r = baseimage.load_recipe(python=python)
    assert (r.repository, r.tag, r.python, r.distribution) == ("ferry/python", python, python, suite)
    assert r.platforms == ("linux/amd64", "linux/arm64") and r.bytecode
    assert (r.user.uid, r.user.gid) == (65532, 65532)
    assert "libstdc++6" in r.install  # pulls libgcc-s1
    assert r.source == f"ferry/assets/base/python-{python}.toml"


def test_the_recipes_are_package_data_and_differ_only_in_what_they_are_for():
    assert baseimage.available_pythons() == ("3.11", "3.13", "3.14")
    one, other = baseimage.load_recipe(python="3.11").to_json(), baseimage.load_recipe(python="3.13").to_json()
    assert one["packages"] == other["packages"] and one["trim"] == other["trim"] and one["config"] == other["config"]
    assert "testing" in baseimage.load_recipe(python="3.14").title
    hashes = {baseimage.load_recipe(python=p).hash for p in baseimage.available_pythons()}
    assert len(hashes) == 3


def test_a_python_without_a_recipe_names_the_ones_there_are():
    with pytest.raises(ConfigError) as e:
        baseimage.load_recipe(python="3.12")
    assert (e.value.message, e.value.hint) == ("ferry has no base image recipe for Python 3.12", "use one of 3.11, 3.13, 3.14")


def test_the_recipes_are_listed_in_the_package_data_of_the_wheel():
    import tomllib

    doc = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())
    assert doc["tool"]["setuptools"]["package-data"]["ferry.assets"] == ["**/*"]  # base/*.toml among them
    from importlib.resources import files

    assert files("ferry.assets").joinpath("base", "python-3.13.toml").is_file()


def test_a_base_without_the_manylinux_libraries_is_refused():
    with pytest.raises(BuildError, match="lacks libstdc\\+\\+6: manylinux wheels"):
        baseimage.check_manylinux([Package("libgcc-s1", "14", "amd64"), Package("libc6", "2.41", "amd64")], "x")
    baseimage.check_manylinux([Package("libgcc-s1", "14", "amd64"), Package("libstdc++6", "14", "amd64")], "x")


def test_recipe_hash_is_stable_and_ignores_comments_and_layout():
    a = baseimage.parse_recipe(SMALL)
    b = baseimage.parse_recipe("# a comment\n" + SMALL.replace('cmd = ["python3"]', 'cmd = [ "python3" ]'))
    assert a.hash == b.hash == baseimage.parse_recipe(SMALL).hash
    assert a.hash.startswith("sha256:") and len(a.hash) == 71


def test_recipe_hash_changes_with_the_packages_and_the_assembler(monkeypatch):
    before = baseimage.parse_recipe(SMALL).hash
    more = baseimage.parse_recipe(SMALL.replace('"ca-certificates"]', '"ca-certificates", "tzdata"]'))
    assert more.hash != before
    monkeypatch.setattr(baseimage, "ASSEMBLER_VERSION", "999")
    assert baseimage.parse_recipe(SMALL).hash != before


@pytest.mark.parametrize("change,message", [
    (("[trim]", "[trim]\nkeeep = []"), "unknown key trim.keeep"),
    (("[user]", "[users]"), "unknown section [users]"),
    (("uid = 65532", "uid = 0"), "must not be 0"),
    (("uid = 65532", 'uid = "65532"'), "user.uid must be a int"),
    (('env = { LANG = "C.UTF-8" }', 'env = { PATH = "/bin" }'), "config.env.PATH is set by the assembler"),
    (('platforms = ["linux/amd64", "linux/arm64"]', 'platforms = ["windows/amd64"]'), "not a Debian architecture"),
    (('workdir = "/app"', 'workdir = "app"'), "config.workdir must be an absolute path"),
])
def test_bad_recipes_name_the_file_and_the_key(change, message):
    text = SMALL.replace(*change)
    with pytest.raises(ConfigError) as e:
        baseimage.parse_recipe(text, "ferry/assets/base/python-3.11.toml")
    assert message in str(e.value)
    assert str(e.value).startswith("ferry/assets/base/python-3.11.toml: ")


def test_a_missing_recipe_file_says_how_to_restore_it(tmp_path: Path):
    with pytest.raises(ConfigError, match="restore it from git"):
        baseimage.load_recipe(tmp_path / "nope.toml")


def test_image_config_runs_as_the_app_user_with_the_real_python_version():
    r = baseimage.parse_recipe(SMALL)
    cfg = baseimage.image_config(r, Platform("linux", "arm64", "v8"), "3.11.2", ["sha256:" + "0" * 64],
                                 [Package("python3.11", "3.11.2-6", "arm64")])
    assert cfg["architecture"] == "arm64" and cfg["variant"] == "v8" and cfg["os"] == "linux"
    assert cfg["created"] == "1970-01-01T00:00:00Z"
    c = cfg["config"]
    assert c["User"] == "65532:65532"
    assert c["WorkingDir"] == "/app"
    assert c["Cmd"] == ["python3"]
    assert c["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "LANG=C.UTF-8", "PYTHON_VERSION=3.11.2"]
    assert c["Labels"][baseimage.ANNOTATION_RECIPE] == r.hash
    assert {k: v for k, v in c["Labels"].items() if k.startswith("dev.ferry.base.") and k != baseimage.ANNOTATION_RECIPE} == {
        "dev.ferry.base.suite": "bookworm", "dev.ferry.base.python": "3.11.2", "dev.ferry.base.interpreter": "/usr/bin/python3"}
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}


def test_arm64_is_published_with_the_v8_variant_as_official_images_are():
    assert str(baseimage.oci_platform("linux/arm64")) == "linux/arm64/v8"
    assert str(baseimage.oci_platform("linux/amd64")) == "linux/amd64"


def test_python_version_comes_from_the_interpreter_package():
    pkgs = [Package("python3", "3.11.2-1+b1", "amd64"), Package("python3.11", "3.11.2-6+deb12u9", "amd64")]
    assert baseimage.python_version(pkgs, "3.11") == "3.11.2"
    with pytest.raises(BuildError, match="image.python must match"):
        baseimage.python_version(pkgs, "3.12")


def test_package_list_annotation_is_sorted_name_equals_version():
    pkgs = [Package("zlib1g", "1:1.2.13", "arm64"), Package("libc6", "2.36-9", "arm64")]
    assert baseimage.package_list(pkgs) == "libc6=2.36-9,zlib1g=1:1.2.13"


def _pkg(name: str, files: dict[str, bytes], dirs=(), links=None) -> Unpacked:
    entries = [Entry(d, rootfs.DIR, 0o755, package=name) for d in dirs]
    entries += [Entry(p, rootfs.FILE, 0o644, data=d, package=name) for p, d in files.items()]
    entries += [Entry(p, rootfs.SYMLINK, 0o777, target=t, package=name) for p, t in (links or {}).items()]
    return Unpacked(Package(name, "1.0-1", "amd64"), tuple(entries),
                    f"Package: {name}\nVersion: 1.0-1\nArchitecture: amd64\n")


def _assembled() -> rootfs.Tree:
    r = baseimage.parse_recipe(SMALL)
    return baseimage.assemble(r, [
        _pkg("base-files", {"usr/lib/os-release": b'ID=debian\nVERSION_ID="12"\n',
                            "usr/share/doc/base-files/README": b"readme",
                            "usr/share/doc/base-files/copyright": b"(c)"},
             dirs=("usr/bin", "tmp"), links={"etc/os-release": "../usr/lib/os-release"}),
        _pkg("ca-certificates", {"usr/share/ca-certificates/mozilla/A.crt": b"-----A-----",
                                 "usr/share/ca-certificates/mozilla/B.crt": b"-----B-----\n"}),
        _pkg("libc6", {"usr/lib64/ld-linux-x86-64.so.2": b"\x7fELF"}),
        _pkg("libc-bin", {"usr/bin/ldconfig": b"\x7fELF", "usr/lib/locale/C.utf8/LC_CTYPE": b"c"}),
        _pkg("tzdata", {"usr/share/zoneinfo/Etc/UTC": b"TZif"}),
        _pkg("python3.11", {"usr/lib/python3.11/json/__init__.py": b"X = 1\n"}),
    ])


def test_assembled_rootfs_has_users_os_release_and_the_ca_bundle():
    tree = _assembled()
    assert tree["etc/passwd"].data.decode().splitlines()[1] == "app:x:65532:65532:app:/home/app:/usr/sbin/nologin"
    assert tree["etc/group"].data == b"root:x:0:\napp:x:65532:\nnogroup:x:65534:\n"
    assert tree["etc/os-release"].target == "../usr/lib/os-release"
    assert tree["usr/lib/os-release"].data.startswith(b"ID=debian")
    assert tree["etc/ssl/certs/ca-certificates.crt"].data == b"-----A-----\n-----B-----\n"
    assert tree["usr/lib/ssl/cert.pem"].target == "../../../etc/ssl/certs/ca-certificates.crt"
    assert tree["etc/localtime"].target == "/usr/share/zoneinfo/Etc/UTC"
    assert b"hosts:          files dns" in tree["etc/nsswitch.conf"].data


def test_assembled_rootfs_is_usr_merged_and_has_non_root_home_and_sticky_tmp():
    tree = _assembled()
    assert {p: tree[p].target for p in ("bin", "sbin", "lib", "lib64")} == {
        "bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
    home = tree["home/app"]
    assert (home.kind, home.uid, home.gid) == (rootfs.DIR, 65532, 65532)
    assert tree["tmp"].mode == 0o1777
    assert tree["root"].mode == 0o700
    assert tree["app"].kind == rootfs.DIR


def test_assembled_rootfs_drops_docs_and_unwanted_files_but_keeps_licences_and_records_packages():
    tree = _assembled()
    assert "usr/share/doc/base-files/README" not in tree
    assert tree["usr/share/doc/base-files/copyright"].data == b"(c)"
    assert not any(p.startswith("usr/share/ca-certificates") for p in tree)
    assert "usr/bin/ldconfig" not in tree  # libc-bin: only its C.UTF-8 locale
    assert "usr/lib/locale/C.utf8/LC_CTYPE" in tree
    status = tree["var/lib/dpkg/status.d/libc6"].data
    assert status.startswith(b"Package: libc6\nStatus: install ok installed\nVersion: 1.0-1\n")
    # the bytecode is added later, by the base's own interpreter (compile_bytecode)
    assert not any("__pycache__" in p for p in tree)


def test_assembly_is_the_same_tar_whatever_the_package_order():
    r = baseimage.parse_recipe(SMALL)
    pkgs = [_pkg("a", {"etc/a": b"a"}), _pkg("b", {"etc/b": b"b"}),
            _pkg("ca-certificates", {"usr/share/ca-certificates/x/A.crt": b"A"})]
    one = rootfs.tar_bytes(baseimage.assemble(r, pkgs))
    two = rootfs.tar_bytes(baseimage.assemble(r, list(reversed(pkgs))))
    assert one == two


def test_a_cached_build_record_rebuilds_the_same_index_and_only_with_all_blobs(tmp_path: Path):
    cache = baseimage.Cache(tmp_path)
    layer = b"layer-bytes"
    lp = cache.put_blob(layer)
    cfg = json.dumps({"architecture": "amd64"}).encode()
    cache.put_blob(cfg)
    img = Image(Blob.from_bytes(cfg, OCI_CONFIG), (Blob.from_bytes(layer, OCI_LAYER_GZIP),),
                Platform("linux", "amd64"), annotations={"a": "b"})
    index = ImageIndex((img,), annotations={baseimage.ANNOTATION_RECIPE: "sha256:" + "1" * 64})
    baseimage.save_index(cache, "sha256:" + "1" * 64, index)
    again = baseimage.load_index(cache, "sha256:" + "1" * 64)
    assert again is not None and again.digest == index.digest
    assert again.manifests[0].layers[0].read() == layer
    lp.unlink()
    assert baseimage.load_index(cache, "sha256:" + "1" * 64) is None
    assert baseimage.load_index(cache, "sha256:" + "2" * 64) is None


def test_bytecode_needs_a_platform_this_machine_runs(monkeypatch, tmp_path: Path):
    from ferry.images import sandbox

    monkeypatch.setattr(sandbox, "machine_architecture", lambda machine=None: "riscv64")
    monkeypatch.setattr(sandbox, "read_binfmt", lambda root=None: {})
    with pytest.raises(BuildError) as e:
        baseimage.compile_bytecode(baseimage.parse_recipe(SMALL), {"linux/amd64": {}, "linux/arm64": {}}, tmp_path)
    assert e.value.message == ("the base's bytecode is compiled by its own Python, and this riscv64 machine runs none of "
                               "linux/amd64, linux/arm64")
    assert "bytecode = false" in e.value.hint


def test_bytecode_without_bubblewrap_is_a_clear_error(monkeypatch, tmp_path: Path):
    from ferry.images import sandbox

    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    monkeypatch.setattr(sandbox.os.path, "exists", lambda path: False)
    with pytest.raises(BuildError) as e:
        baseimage.compile_bytecode(baseimage.parse_recipe(SMALL), {f"linux/{sandbox.machine_architecture()}": {}}, tmp_path)
    assert "bubblewrap (bwrap) is not installed" in e.value.message
    assert e.value.hint.startswith("apt-get install bubblewrap")

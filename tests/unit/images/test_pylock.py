"""PEP 751 selection for the image's platform, and the one-wheel-per-package lock ferry writes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ferry.errors import BuildError
from ferry.images import pylock
from ferry.images.pylock import Pick, Target

H = {"sha256": "a" * 64}


def wheel(fn: str, h: str = "a") -> dict:
    return {"url": f"https://files.example.test/{fn}", "hashes": {"sha256": h * 64}}


def lock(*packages: dict, **top) -> dict:
    return {"lock-version": "1.0", "created-by": "test", **top, "packages": list(packages)}


NUMPY = {"name": "numpy", "version": "2.1.3", "wheels": [
    wheel("numpy-2.1.3-cp311-cp311-macosx_14_0_arm64.whl", "1"),
    wheel("numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "2"),
    wheel("numpy-2.1.3-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", "3"),
    wheel("numpy-2.1.3-cp311-cp311-musllinux_1_2_x86_64.whl", "4"),
    wheel("numpy-2.1.3-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "5"),
]}


def names(sel) -> list[tuple[str, str, str]]:
    return [(p.name, p.kind, p.filename) for p in sel.picks]


def test_target_tags_rank_the_image_wheels_first():
    t = Target("3.11", "x86_64", "manylinux_2_28")
    tags = [str(x) for x in t.tags()]
    assert tags[0] == "cp311-cp311-manylinux_2_28_x86_64"
    assert "cp311-abi3-manylinux2014_x86_64" in tags and "cp39-abi3-manylinux_2_17_x86_64" in tags
    assert tags[-1] == "py30-none-any" and "py3-none-any" in tags
    assert not any("musllinux" in x or "macosx" in x or "linux_x86_64" == x.split("-")[-1] for x in tags)
    assert not any("manylinux_2_31" in x for x in tags)  # newer than the base's glibc
    assert t.platforms()[:3] == ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_26_x86_64"]
    assert Target("3.12", "aarch64", "manylinux_2_17").platforms() == [
        "manylinux_2_17_aarch64", "manylinux2014_aarch64", *[f"manylinux_2_{m}_aarch64" for m in range(16, 4, -1)]]


def test_each_package_gets_its_wheel_for_the_image_platform():
    doc = lock(NUMPY, {"name": "six", "version": "1.16.0", "wheels": [wheel("six-1.16.0-py2.py3-none-any.whl")]})
    amd = pylock.select(doc, Target("3.11", "x86_64"), "pylock.toml")
    assert names(amd) == [("numpy", "wheel", "numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"),
                          ("six", "wheel", "six-1.16.0-py2.py3-none-any.whl")]
    assert amd.picks[0].hashes == {"sha256": "2" * 64} and amd.picks[0].url.endswith("x86_64.whl")
    arm = pylock.select(doc, Target("3.11", "aarch64"), "pylock.toml")
    assert arm.picks[0].filename.endswith("manylinux2014_aarch64.whl")


def test_the_most_specific_wheel_wins():
    doc = lock({"name": "bcrypt", "version": "5.0.0", "wheels": [
        wheel("bcrypt-5.0.0-py3-none-any.whl"), wheel("bcrypt-5.0.0-cp39-abi3-manylinux_2_28_x86_64.whl"),
        wheel("bcrypt-5.0.0-cp39-abi3-manylinux_2_17_x86_64.whl"), wheel("bcrypt-5.0.0-cp39-abi3-manylinux_2_34_x86_64.whl")]})
    (p,) = pylock.select(doc, Target("3.11", "x86_64"), "x").picks
    assert p.filename == "bcrypt-5.0.0-cp39-abi3-manylinux_2_28_x86_64.whl"


def test_markers_are_evaluated_for_the_image_not_the_build_machine():
    doc = lock({"name": "uvloop", "version": "0.21.0", "marker": "sys_platform != 'win32' and platform_machine == 'aarch64'",
                "wheels": [wheel("uvloop-0.21.0-cp311-cp311-manylinux_2_17_aarch64.whl")]},
               {"name": "pywin32", "version": "306", "marker": "sys_platform == 'win32'",
                "wheels": [wheel("pywin32-306-cp311-cp311-win_amd64.whl")]},
               {"name": "tomli", "version": "2.0.1", "marker": "python_full_version < '3.11'",
                "wheels": [wheel("tomli-2.0.1-py3-none-any.whl")]},
               {"name": "dev-only", "version": "1", "marker": "'dev' in dependency_groups",
                "wheels": [wheel("dev_only-1-py3-none-any.whl")]})
    assert [p.name for p in pylock.select(doc, Target("3.11", "aarch64"), "x").picks] == ["uvloop"]
    assert [p.name for p in pylock.select(doc, Target("3.10", "x86_64"), "x").picks] == ["tomli"]


def test_a_package_with_only_an_sdist_is_picked_for_building():
    doc = lock({"name": "dkimpy", "version": "1.1.8", "sdist": {"url": "https://files.example.test/dkimpy-1.1.8.tar.gz",
                                                                 "hashes": H}},
               {"name": "six", "version": "1.16.0", "sdist": {"path": "vendor/six-1.16.0.tar.gz", "hashes": H},
                "wheels": [wheel("six-1.16.0-py2.py3-none-any.whl")]})
    sel = pylock.select(doc, Target("3.11", "x86_64"), "x")
    assert names(sel) == [("dkimpy", "sdist", "dkimpy-1.1.8.tar.gz"), ("six", "wheel", "six-1.16.0-py2.py3-none-any.whl")]
    assert [p.name for p in sel.sdists] == ["dkimpy"]


def test_a_lock_for_another_platform_names_every_package_it_lacks():
    doc = lock({"name": "numpy", "version": "2.1.3", "wheels": [wheel("numpy-2.1.3-cp311-cp311-macosx_14_0_arm64.whl")]},
               {"name": "orjson", "version": "3.10.16", "wheels": [
                   wheel("orjson-3.10.16-cp311-cp311-manylinux_2_17_x86_64.whl")]},
               {"name": "six", "version": "1.16.0", "wheels": [wheel("six-1.16.0-py2.py3-none-any.whl")]})
    with pytest.raises(BuildError) as e:
        pylock.select(doc, Target("3.11", "aarch64"), "pylock.toml")
    msg = str(e.value)
    assert msg.startswith("pylock.toml: no wheel (and no sdist) for linux/arm64 (CPython 3.11, manylinux_2_28_aarch64 "
                          "wheels) in the lock for: numpy 2.1.3 (wheels: cp311-cp311-macosx_14_0_arm64); orjson 3.10.16 "
                          "(wheels: cp311-cp311-manylinux_2_17_x86_64); it was locked for another platform")
    assert "uv lock" in e.value.hint and "pip lock" in e.value.hint


def test_lock_environments_and_python_are_checked():
    mac = lock(NUMPY, environments=["sys_platform == 'darwin'"])
    with pytest.raises(BuildError, match=r"pylock.toml: the lock was made for other environments \(sys_platform == \"darwin\"\), "
                                         r"not for linux/amd64"):
        pylock.select(mac, Target("3.11", "x86_64"), "pylock.toml")
    new = lock(NUMPY, **{"requires-python": ">=3.12"})
    with pytest.raises(BuildError, match=r"pylock.toml: the lock needs Python >=3.12, the image has 3.11") as e:
        pylock.select(new, Target("3.11", "x86_64"), "pylock.toml")
    assert "image.python" in e.value.hint
    pkg = lock({**NUMPY, "requires-python": ">=3.12"})
    with pytest.raises(BuildError, match="numpy 2.1.3 needs Python >=3.12"):
        pylock.select(pkg, Target("3.11", "x86_64"), "pylock.toml")


def test_an_invalid_lock_and_sources_ferry_cannot_install_are_named():
    with pytest.raises(BuildError, match="pylock.toml: not a valid pylock.toml"):
        pylock.select({"lock-version": "1.0", "created-by": "x", "packages": [{"name": "x", "wheels": [{"url": "u"}]}]},
                      Target("3.11", "x86_64"), "pylock.toml")
    with pytest.raises(BuildError, match="lock-version is not supported"):
        pylock.select({"lock-version": "2.0", "created-by": "x", "packages": []}, Target("3.11", "x86_64"), "pylock.toml")
    vcs = lock({"name": "lib", "vcs": {"type": "git", "url": "https://git.example.test/lib", "commit-id": "abc"}})
    with pytest.raises(BuildError, match=r"pylock.toml: lib comes from version control"):
        pylock.select(vcs, Target("3.11", "x86_64"), "pylock.toml")
    folder = lock({"name": "lib", "directory": {"path": "../lib"}})
    with pytest.raises(BuildError, match=r"lib is a local folder \(../lib\)") as e:
        pylock.select(folder, Target("3.11", "x86_64"), "pylock.toml")
    assert "workspace member" in e.value.hint


def test_render_writes_exactly_one_wheel_per_package(tmp_path):
    picks = [Pick("numpy", "2.1.3", "wheel", "numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.whl",
                  url="https://files.example.test/numpy.whl", hashes={"sha256": "2" * 64}),
             Pick("dkimpy", "1.1.8", "wheel", "dkimpy-1.1.8-py3-none-any.whl", path="built/dkimpy.whl",
                  hashes={"sha256": "3" * 64})]
    text = pylock.render(picks, tmp_path)
    assert text == (
        'lock-version = "1.0"\ncreated-by = "ferry"\n\n'
        '[[packages]]\nname = "numpy"\nversion = "2.1.3"\nwheels = [{ name = "numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.whl", '
        f'url = "https://files.example.test/numpy.whl", hashes = {{ sha256 = "{"2" * 64}" }} }}]\n\n'
        '[[packages]]\nname = "dkimpy"\nversion = "1.1.8"\nwheels = [{ name = "dkimpy-1.1.8-py3-none-any.whl", '
        f'path = "{tmp_path / "built" / "dkimpy.whl"}", hashes = {{ sha256 = "{"3" * 64}" }} }}]\n')
    doc = tomllib.loads(text)  # and it is a valid lock that selects the same files
    assert names(pylock.select(doc, Target("3.11", "x86_64"), "x")) == [
        ("dkimpy", "wheel", "dkimpy-1.1.8-py3-none-any.whl"),
        ("numpy", "wheel", "numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.whl")]
    with pytest.raises(ValueError):
        pylock.render([Pick("x", "1", "sdist", "x-1.tar.gz", url="u", hashes=H)])


def test_only_hashes_keeps_the_files_a_hashed_requirements_file_pins():
    doc = lock(NUMPY, {"name": "dkimpy", "version": "1.1.8", "sdist": {"url": "https://x/dkimpy-1.1.8.tar.gz",
                                                                       "hashes": {"sha256": "d" * 64}}})
    kept = pylock.only_hashes(doc, {"numpy": {"3" * 64}, "dkimpy": {"d" * 64}}, "requirements.txt")
    assert [w["hashes"]["sha256"] for w in kept["packages"][0]["wheels"]] == ["3" * 64]
    assert kept["packages"][1]["sdist"]["hashes"]["sha256"] == "d" * 64
    with pytest.raises(BuildError, match="requirements.txt: no file of numpy 2.1.3 the index serves matches its --hash"):
        pylock.only_hashes(doc, {"numpy": {"f" * 64}}, "requirements.txt")


def test_pure_wheels_are_told_apart_from_compiled_ones():
    assert pylock.is_pure("dkimpy-1.1.8-py3-none-any.whl")
    assert pylock.is_pure("six-1.16.0-py2.py3-none-any.whl")
    assert not pylock.is_pure("fastcext-1.0-cp311-cp311-linux_x86_64.whl")
    assert not pylock.is_pure("x-1-py3-none-manylinux_2_17_x86_64.whl")
    assert pylock.is_pylock(Path("pylock.toml")) and pylock.is_pylock(Path("pylock.prod.toml"))
    assert not pylock.is_pylock(Path("pylock.a.b.toml")) and not pylock.is_pylock(Path("uv.lock"))

"""What the builder reads about a base (ferry's, an official python image, distroless, a plain
Debian one) and the Python check that runs before anything is resolved."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.errors import BuildError
from ferry.images import basefacts
from ferry.images.basefacts import BaseFacts, PythonRequest, check_python, from_config, with_files

FERRY_CONFIG = {"config": {"Env": ["PATH=/usr/bin", "PYTHON_VERSION=3.11.2"],
                           "Labels": {"dev.ferry.base.recipe": "sha256:r", "org.opencontainers.image.version": "3.11.2"}}}
FERRY_ANNOTATIONS = {"dev.ferry.base.recipe": "sha256:r", "dev.ferry.debian.suite": "bookworm",
                     "dev.ferry.debian.packages": "libc6=2.36-9+deb12u14,python3.11=3.11.2-6+deb12u9"}
OFFICIAL = {"config": {"Env": ["PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin", "LANG=C.UTF-8",
                                "GPG_KEY=A035", "PYTHON_VERSION=3.12.7"], "Cmd": ["python3"]}}
DISTROLESS = {"config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                         "Entrypoint": ["/usr/bin/python3.11"]}}

STATUS = """\
Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u9

Package: python3.11-minimal
Status: install ok installed
Architecture: amd64
Version: 3.11.2-6+deb12u6

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1
"""


def test_ferry_base_says_everything_in_its_config_and_annotations():
    f = from_config(FERRY_CONFIG, FERRY_ANNOTATIONS)
    assert (f.suite, f.python, f.interpreter, f.debian, f.ferry) == ("bookworm", "3.11.2", "/usr/bin/python3", True, True)
    assert [(r["Package"], r["Version"]) for r in f.installed] == [("libc6", "2.36-9+deb12u14"), ("python3.11", "3.11.2-6+deb12u9")]


def test_ferry_base_labels_say_suite_python_and_interpreter():
    config = {"config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHON_VERSION=3.13.5"],
                         "Labels": {"dev.ferry.base.recipe": "sha256:r", "dev.ferry.base.suite": "trixie",
                                    "dev.ferry.base.python": "3.13.5", "dev.ferry.base.interpreter": "/usr/bin/python3.13"}}}
    f = from_config(config)
    assert (f.suite, f.python, f.interpreter, f.debian, f.ferry) == ("trixie", "3.13.5", "/usr/bin/python3.13", True, True)
    assert f.path == ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def test_the_labels_baseimage_writes_are_the_ones_basefacts_reads():
    from ferry.images import baseimage
    from ferry.images.oci import Platform

    r = baseimage.load_recipe(python="3.14")
    config = baseimage.image_config(r, Platform("linux", "amd64"), "3.14.8", ["sha256:" + "0" * 64], [])
    f = from_config(config)
    assert (f.suite, f.python, f.interpreter, f.ferry) == ("forky", "3.14.8", "/usr/bin/python3", True)


def test_an_official_like_base_is_found_on_its_path_with_its_site_packages():
    config = {"config": {"Env": ["PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHON_VERSION=3.13.5"]}}
    have = {"usr/local/bin/python3": b"\x7fELF", "usr/bin/python3": None}
    dirs = {"usr/local/lib": ["pkgconfig", "python3.13"], "usr/local/lib/python3.13": ["os.py", "site-packages"]}
    f = with_files(from_config(config), lambda p: have.get(p), lambda p: dirs.get(p, []))
    assert (f.python, f.python_path, f.site_packages) == ("3.13.5", "/usr/local/bin/python3",
                                                         "/usr/local/lib/python3.13/site-packages")
    # Debian's own python3 on /usr/bin: its dist-packages
    debian = {"usr/lib": ["python3", "python3.13"], "usr/lib/python3.13": ["os.py"], "usr/lib/python3": ["dist-packages"]}
    f = with_files(from_config({"config": {"Env": ["PATH=/usr/bin"]}}), lambda p: b"x" if p == "usr/bin/python3" else None,
                   lambda p: debian.get(p, []))
    assert (f.python_path, f.site_packages) == ("/usr/bin/python3", "/usr/lib/python3/dist-packages")


def test_older_and_hand_made_labels_are_read_too():
    f = from_config({"config": {"Labels": {"dev.ferry.debian.suite": "trixie", "dev.ferry.python": "3.13.5"}}})
    assert (f.suite, f.python, f.debian) == ("trixie", "3.13.5", True)
    # an older image's dev.ferry.python named the interpreter
    assert from_config({"config": {"Labels": {"dev.ferry.python": "/opt/py/bin/python3"}}}).interpreter == "/opt/py/bin/python3"


def test_an_official_python_image_tells_its_python_but_not_its_debian_release():
    f = from_config(OFFICIAL)
    assert (f.python, f.suite, f.debian, f.interpreter) == ("3.12.7", None, None, None)


def test_distroless_runs_its_python_directly():
    assert from_config(DISTROLESS).interpreter == "/usr/bin/python3.11"


def files(**content: bytes):
    def read(path):
        return content.get(path.replace("/", "__").replace(".", "_").replace("-", "_"))
    return read


def test_a_debian_base_is_read_from_os_release_and_its_dpkg_status():
    read = files(etc__os_release=b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n',
                 var__lib__dpkg__status=STATUS.encode(), usr__bin__python3=b"\x7fELF")
    f = with_files(from_config({"config": {}}), read)
    assert (f.debian, f.suite, f.python) == (True, "bookworm", "3.11.2")
    assert f.installed_names() == {"libc6", "python3.11-minimal"}  # "deinstall" is not installed
    assert f.interpreter == "/usr/bin/python3"  # no coreutils: no /usr/bin/env


def test_distroless_status_d_is_read_as_a_status_file():
    parts = {"libc6": STATUS.split("\n\n")[0].encode(), "python3.11-minimal": STATUS.split("\n\n")[1].encode()}

    def read(path):
        return parts.get(path.rsplit("/", 1)[-1]) if path.startswith("var/lib/dpkg/status.d/") else None
    f = with_files(from_config(DISTROLESS), read, lambda path: list(parts))
    assert f.debian is True and f.installed_names() == {"libc6", "python3.11-minimal"} and f.python == "3.11.2"


def test_an_alpine_base_is_not_debian():
    f = with_files(from_config(OFFICIAL), files(etc__os_release=b"ID=alpine\nVERSION_ID=3.20.0\n"))
    assert (f.debian, f.suite, f.python) == (False, None, "3.12.7")


@pytest.mark.parametrize("request_, ok", [
    (PythonRequest("image.python", "3.11"), True),
    (PythonRequest("image.python", "3.12"), False),
    (PythonRequest("pyproject.toml requires-python", ">=3.10,<3.12"), True),
    (PythonRequest("pyproject.toml requires-python", ">=3.12"), False),
    (PythonRequest(".python-version", "3.11"), True),
    (PythonRequest(".python-version", "3.11.2"), True),
    (PythonRequest(".python-version", "cpython-3.11.9"), True),  # the minor version decides
    (PythonRequest(".python-version", "3.12.1"), False),
    (PythonRequest(".python-version", "3.1"), False),
])
def test_requests_accept_the_bases_python_or_not(request_, ok):
    assert request_.accepts("3.11.2") is ok


def test_a_mismatch_names_who_asks_what_the_base_has_and_that_no_ferry_base_fits():
    base = BaseFacts(python="3.11.2")
    with pytest.raises(BuildError) as e:
        check_python([PythonRequest("image.python", "3.11"), PythonRequest(".python-version", "3.12")], base,
                     "127.0.0.1:5000/ferry/python:3.11")
    assert e.value.message == (".python-version asks for Python 3.12, but the base image "
                               "127.0.0.1:5000/ferry/python:3.11 has Python 3.11.2")
    assert e.value.hint == ("ferry has bases for Python 3.11, 3.13, 3.14 and none of them fits; set image.base to an "
                            "image with a Python .python-version accepts, or change .python-version")
    with pytest.raises(BuildError) as e:
        check_python([PythonRequest("image.python", "3.12")], base, "registry.example.com/python:3.11-slim")
    assert e.value.hint == ('set image.python = "3.11" to build for the base\'s Python, or use a base with '
                            'Python 3.12 (e.g. python:3.12-slim mirrored to your registry)')


def test_requires_python_on_the_local_3_11_base_names_every_ferry_base_that_fits_and_its_command():
    base = BaseFacts(python="3.11.2")
    with pytest.raises(BuildError) as e:
        check_python([PythonRequest("image.python", "3.11"), PythonRequest("pyproject.toml requires-python", ">=3.12")],
                     base, "127.0.0.1:5000/ferry/python:3.11")
    # the file is named, not image.python: it is what the app needs
    assert e.value.message == ("pyproject.toml requires-python asks for Python >=3.12, but the base image "
                               "127.0.0.1:5000/ferry/python:3.11 has Python 3.11.2")
    assert e.value.hint == ('set image.base = "127.0.0.1:5000/ferry/python:3.13" and image.python = "3.13"; '
                            "`ferry local up --python 3.13` makes that base (bases that fit: "
                            "127.0.0.1:5000/ferry/python:3.13, or :3.14), or change pyproject.toml requires-python")
    with pytest.raises(BuildError) as e:
        check_python([PythonRequest(".python-version", "3.14.1")], base, "127.0.0.1:5000/ferry/python:3.11")
    assert e.value.hint.startswith('set image.base = "127.0.0.1:5000/ferry/python:3.14" and image.python = "3.14"; '
                                   "`ferry local up --python 3.14` makes that base, or change .python-version")


def test_image_python_for_another_ferry_base_names_that_base_and_its_command():
    with pytest.raises(BuildError) as e:
        check_python([PythonRequest("image.python", "3.13")], BaseFacts(python="3.11.2"), "127.0.0.1:5000/ferry/python:3.11")
    assert e.value.hint == ('set image.python = "3.11" to build for the base\'s Python, or set image.base = '
                            '"127.0.0.1:5000/ferry/python:3.13" and image.python = "3.13"; `ferry local up --python 3.13` '
                            "makes that base")
    with pytest.raises(BuildError) as e:
        check_python([PythonRequest("image.python", "3.12")], BaseFacts(python="3.13.5"), "127.0.0.1:5000/ferry/python:3.13")
    assert e.value.hint == ('set image.python = "3.13" to build for the base\'s Python, or use one of ferry\'s bases '
                            "(Python 3.11, 3.13, 3.14; there is none for 3.12)")


def test_the_3_13_base_takes_an_app_that_needs_3_12_or_later():
    assert check_python([PythonRequest("image.python", "3.13"), PythonRequest("pyproject.toml requires-python", ">=3.12"),
                         PythonRequest(".python-version", "3.13")], BaseFacts(python="3.13.5"),
                        "127.0.0.1:5000/ferry/python:3.13") == []


def test_a_foreign_base_names_the_official_images_that_fit():
    with pytest.raises(BuildError) as e:
        check_python([PythonRequest("image.python", "3.11"), PythonRequest("pyproject.toml requires-python", ">=3.12,<3.14")],
                     BaseFacts(python="3.11.9"), "registry.example.com/python:3.11-slim")
    assert e.value.hint == ("use a base with Python 3.12 or 3.13 (e.g. python:3.13-slim mirrored to your registry), "
                            "or change pyproject.toml requires-python")


def test_the_local_base_hint_names_only_bases_ferry_can_make():
    assert basefacts.local_base_hint("127.0.0.1:5000/ferry/python:3.11", "3.13").endswith(
        "`ferry local up --python 3.13` makes that base")
    assert basefacts.local_base_hint("127.0.0.1:5000/ferry/python:3.11", "3.12") is None
    assert basefacts.local_base_hint("registry.example.com/ferry/python:3.11", "3.13") is None
    assert basefacts.ferry_pythons() == ("3.11", "3.13", "3.14")


def test_an_unknown_base_python_is_a_warning_not_an_error():
    warnings = check_python([PythonRequest("image.python", "3.11")], BaseFacts(), "example/scratch")
    assert len(warnings) == 1 and "cannot tell which Python example/scratch has" in warnings[0]
    assert check_python([PythonRequest("image.python", "3.11")], BaseFacts(python="3.11.9"), "b") == []


def test_a_bad_requires_python_is_a_clear_error():
    with pytest.raises(BuildError, match="is not a version specifier"):
        check_python([PythonRequest("pyproject.toml requires-python", "three eleven")], BaseFacts(python="3.11.2"), "b")


def test_the_app_s_python_requests_are_read_from_its_files(tmp_path: Path):
    from ferry.config import parse
    from ferry.images.builder import BuildSpec

    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text('[project]\nname = "x"\nrequires-python = ">=3.12"\n')
    (tmp_path / ".python-version").write_text("# pinned\n3.12\n")
    cfg = parse({"app": {"name": "x"}, "image": {"repository": "r/x", "base": "b", "source": "src",
                                                 "entrypoint": ["python3", "-m", "x"], "python": "3.12"}},
                tmp_path / "ferry.toml")
    spec = BuildSpec.from_config(cfg)
    assert spec.python_checks() == (PythonRequest("image.python", "3.12"),
                                    PythonRequest("pyproject.toml requires-python", ">=3.12"),
                                    PythonRequest(".python-version", "3.12"))


def test_local_base_python():
    assert basefacts.local_base_python("127.0.0.1:5000/ferry/python:3.13") == "3.13"
    assert basefacts.local_base_python("registry.example.com/ferry/python:3.13") is None


def test_a_missing_local_base_names_the_command_that_makes_it():
    assert basefacts.missing_local_base("127.0.0.1:5000/ferry/python:3.13") == (
        "the base image 127.0.0.1:5000/ferry/python:3.13 (Python 3.13) is not in the local registry",
        "`ferry local up --python 3.13` makes it")
    assert basefacts.missing_local_base("127.0.0.1:5000/ferry/python:3.11")[1] == "`ferry local up` makes it"
    assert basefacts.missing_local_base("127.0.0.1:5000/ferry/python:3.12") == (
        "the base image 127.0.0.1:5000/ferry/python:3.12 does not exist: ferry has no base for Python 3.12",
        "use one of 127.0.0.1:5000/ferry/python:3.11, 127.0.0.1:5000/ferry/python:3.13, "
        "127.0.0.1:5000/ferry/python:3.14 (image.base)")
    assert basefacts.missing_local_base("registry.example.com/python:3.13-slim") is None


def test_a_minor_fits_when_one_of_its_releases_may():
    asked = [PythonRequest("pyproject.toml requires-python", ">=3.12.3"), PythonRequest(".python-version", "3.13")]
    assert basefacts.fitting(asked, ("3.11", "3.12", "3.13", "3.14")) == ["3.13"]
    assert basefacts.fitting([PythonRequest("pyproject.toml requires-python", "<3.13")], ("3.11", "3.13")) == ["3.11"]
    assert basefacts.fitting([PythonRequest("image.python", "3.11")], ("3.13",)) == ["3.13"]  # image.python follows

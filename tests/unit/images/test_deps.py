"""The dependency layer's inputs, installer command lines and post-processing (no network)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ferry.errors import BuildError
from ferry.images import deps
from ferry.images.deps import DepsSpec, Distribution, read_requirements
from ferry.images.oci import Platform


def write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def spec(req, arch="amd64", **kw) -> DepsSpec:
    return DepsSpec(req, Platform("linux", arch), "3.11", **kw)


def test_pinned_requirements_are_reproducible(tmp_path):
    r = read_requirements(write(tmp_path / "requirements.txt", "# c\nflask==3.0.3\ngunicorn == 22.0.0  # server\n"))
    assert r.kind == "requirements" and r.unpinned == () and r.reproducible and not r.hashed


def test_unpinned_requirements_are_named(tmp_path):
    r = read_requirements(write(tmp_path / "requirements.txt", "flask>=3\nrequests\nclick==8.*\nitsdangerous==2.2.0\n"))
    assert r.unpinned == ("flask", "requests", "click")


def test_hashes_make_the_install_require_hashes(tmp_path):
    r = read_requirements(write(tmp_path / "requirements.txt",
                                "flask==3.0.3 \\\n    --hash=sha256:aa\nclick==8.1.7 --hash=sha256:bb\n"))
    assert r.hashed and r.reproducible
    cmd = deps.uv_command("uv", spec(r), Path("/t"), r.path)
    assert cmd[-1] == "--require-hashes"
    r2 = read_requirements(write(tmp_path / "r2.txt", "flask==3.0.3 --hash=sha256:aa\nclick==8.1.7\n"))
    assert not r2.hashed


def test_included_files_are_part_of_the_key(tmp_path):
    base = write(tmp_path / "base.txt", "flask==3.0.3\n")
    top = write(tmp_path / "requirements.txt", "-r base.txt\ngunicorn==22.0.0\n")
    k1 = read_requirements(top).digest
    base.write_text("flask==3.0.2\n")
    assert read_requirements(top).digest != k1


def test_line_endings_do_not_change_the_key(tmp_path):
    a = write(tmp_path / "a" / "requirements.txt", "flask==3.0.3\n")
    b = tmp_path / "b" / "requirements.txt"
    b.parent.mkdir()
    b.write_bytes(b"flask==3.0.3\r\n")
    assert read_requirements(a).digest == read_requirements(b).digest


def test_editable_and_local_requirements_are_refused_with_the_fix(tmp_path):
    with pytest.raises(BuildError, match=r"requirements.txt:2: editable requirement '\.' cannot go into an image") as e:
        read_requirements(write(tmp_path / "requirements.txt", "flask==3.0.3\n-e .\n"))
    assert "source layer" in e.value.hint
    with pytest.raises(BuildError, match="local path requirement"):
        read_requirements(write(tmp_path / "r.txt", "./vendor/pkg\n"))


def test_missing_requirements_file_is_a_clear_error(tmp_path):
    with pytest.raises(BuildError, match="does not exist") as e:
        read_requirements(tmp_path / "nope.txt")
    assert "image.requirements" in e.value.hint


def test_pyproject_with_uv_lock_is_locked_and_keyed_by_both(tmp_path):
    py = write(tmp_path / "pyproject.toml", '[project]\nname = "svc"\nversion = "1"\ndependencies = ["flask>=3"]\n')
    lock = write(tmp_path / "uv.lock", "version = 1\n")
    r = read_requirements(py)
    assert r.kind == "uv.lock" and r.reproducible and r.hashed
    lock.write_text("version = 1\n# changed\n")
    assert read_requirements(py).digest != r.digest


def test_pyproject_without_lock_warns_about_ranges(tmp_path):
    py = write(tmp_path / "pyproject.toml", '[project]\nname = "s"\nversion = "1"\ndependencies = ["flask>=3", "click==8.1.7"]\n')
    r = read_requirements(py)
    assert r.kind == "pyproject" and r.unpinned == ("flask",)


def test_key_depends_on_every_input(tmp_path):
    r = read_requirements(write(tmp_path / "requirements.txt", "flask==3.0.3\n"))
    base = spec(r).key()
    assert base == spec(r).key()
    assert spec(r, arch="arm64").key() != base
    assert DepsSpec(r, Platform(), "3.12").key() != base
    assert spec(r, manylinux="manylinux_2_36").key() != base
    assert spec(r, shebang="/usr/bin/python3").key() != base
    assert spec(r, mtime=1700000000).key() != base
    r2 = read_requirements(write(tmp_path / "other" / "requirements.txt", "flask==3.0.2\n"))
    assert spec(r2).key() != base
    # the file's location does not matter, only its content
    r3 = read_requirements(write(tmp_path / "x" / "requirements.txt", "flask==3.0.3\n"))
    assert spec(r3).key() == base


def test_uv_command_targets_the_image_platform(tmp_path):
    r = read_requirements(write(tmp_path / "requirements.txt", "flask==3.0.3\n"))
    assert deps.uv_command("/bin/uv", spec(r, arch="arm64"), Path("/w/site"), Path("/w/req.txt")) == [
        "/bin/uv", "pip", "install", "--target", "/w/site", "--python-platform", "aarch64-manylinux_2_28",
        "--python-version", "3.11", "--only-binary", ":all:", "--link-mode", "copy", "--no-progress",
        "-r", "/w/req.txt"]


def test_pip_command_targets_the_image_platform(tmp_path):
    r = read_requirements(write(tmp_path / "requirements.txt", "flask==3.0.3\n"))
    platforms = [a for m in range(28, 16, -1) for a in ("--platform", f"manylinux_2_{m}_x86_64")]
    assert deps.pip_command("/py", spec(r), Path("/w/site"), Path("/w/req.txt")) == [
        "/py", "-m", "pip", "install", "--target", "/w/site", *platforms, "--platform", "manylinux2014_x86_64",
        "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none",
        "--only-binary=:all:", "--no-compile", "--no-warn-script-location", "--disable-pip-version-check", "--quiet",
        "-r", "/w/req.txt"]


def test_pip_settings_are_passed_to_uv_without_overriding_its_own():
    env = deps.installer_env({"PIP_INDEX_URL": "https://idx/simple", "PIP_CERT": "/ca.pem",
                              "PIP_EXTRA_INDEX_URL": "https://x/simple", "VIRTUAL_ENV": "/v"}, Path("/c/uv"))
    assert env["UV_DEFAULT_INDEX"] == "https://idx/simple"
    assert env["UV_INDEX"] == "https://x/simple"
    assert env["SSL_CERT_FILE"] == "/ca.pem"
    assert env["UV_CACHE_DIR"] == "/c/uv"
    assert "VIRTUAL_ENV" not in env
    own = deps.installer_env({"PIP_INDEX_URL": "https://idx", "UV_DEFAULT_INDEX": "https://mine",
                              "SSL_CERT_FILE": "/mine.pem", "PIP_CERT": "/ca.pem", "UV_CACHE_DIR": "/u"}, Path("/c"))
    assert (own["UV_DEFAULT_INDEX"], own["SSL_CERT_FILE"], own["UV_CACHE_DIR"]) == ("https://mine", "/mine.pem", "/u")


def test_console_scripts_get_the_image_python_and_bytecode_is_dropped(tmp_path):
    site = tmp_path / "site"
    write(site / "bin" / "gunicorn", "#!/root/.pyenv/versions/3.11.7/bin/python\nimport sys\n")
    write(site / "bin" / "tool.sh", "#!/bin/sh\necho\n")
    write(site / "pkg" / "__pycache__" / "m.cpython-311.pyc", "x")
    write(site / "pkg" / "m.py", "")
    write(site / ".lock", "")
    assert deps.finalise(site, "/usr/bin/env python3") == ("gunicorn", "tool.sh")
    assert (site / "bin" / "gunicorn").read_text() == "#!/usr/bin/env python3\nimport sys\n"
    assert (site / "bin" / "tool.sh").read_text() == "#!/bin/sh\necho\n"
    assert not (site / "pkg" / "__pycache__").exists() and not (site / ".lock").exists()
    assert (site / "bin" / "gunicorn").stat().st_mode & 0o111


def test_inventory_reads_dist_info_metadata(tmp_path):
    write(tmp_path / "Flask-3.0.3.dist-info" / "METADATA",
          "Metadata-Version: 2.1\nName: Flask\nVersion: 3.0.3\nSummary: A web framework\n"
          "Classifier: License :: OSI Approved :: BSD License\nProject-URL: Source, https://github.com/pallets/flask/\n")
    write(tmp_path / "gunicorn-22.0.0.dist-info" / "METADATA",
          "Metadata-Version: 2.1\nName: gunicorn\nVersion: 22.0.0\nLicense: MIT\nHome-page: https://gunicorn.org\n")
    write(tmp_path / "new-1.0.dist-info" / "METADATA",
          "Metadata-Version: 2.4\nName: new\nVersion: 1.0\nLicense-Expression: Apache-2.0 OR MIT\n")
    write(tmp_path / "flask" / "__init__.py", "")
    write(tmp_path / "bin" / "gunicorn", "")
    write(tmp_path / "six.py", "")
    assert deps.inventory(tmp_path) == (
        Distribution("Flask", "3.0.3", "BSD-3-Clause", "A web framework", "https://github.com/pallets/flask/"),
        Distribution("gunicorn", "22.0.0", "MIT", "", "https://gunicorn.org"),
        Distribution("new", "1.0", "Apache-2.0 OR MIT"),
    )
    assert deps.top_level_modules(tmp_path) == ("flask", "six")


class FakeRun:
    def __init__(self, rc=0, stdout="", stderr=""):
        self.calls = []
        self.result = subprocess.CompletedProcess([], rc, stdout, stderr)

    def __call__(self, cmd, **kw):
        self.calls.append((cmd, kw))
        return self.result


def test_a_requirement_without_a_wheel_for_the_platform_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("FERRY_INSTALLER", raising=False)
    r = read_requirements(write(tmp_path / "requirements.txt", "uwsgi==2.0.26\n"))
    run = FakeRun(1, stderr="  x No solution found when resolving dependencies:\n  `-> Because uwsgi==2.0.26 has no "
                            "usable wheels and you require uwsgi==2.0.26, we can conclude that your requirements "
                            "are unsatisfiable.\n  hint: Wheels are available for `uwsgi` (v2.0.26) from "
                            "https://pypi.example.test/simple\n")
    with pytest.raises(BuildError) as e:
        deps.install(spec(r, arch="arm64"), tmp_path / "t", tmp_path, None, {}, runner=run)
    msg = str(e.value)
    assert msg.startswith("requirements.txt cannot be installed for linux/arm64 (CPython 3.11, manylinux_2_28_aarch64 wheels)")
    assert "uwsgi==2.0.26 has no usable wheels" in msg
    assert "pypi.example.test" not in msg  # the index host is never repeated
    assert "wheel for this platform" in e.value.hint


def test_an_unreachable_index_is_reported_as_such(tmp_path):
    r = read_requirements(write(tmp_path / "requirements.txt", "flask==3.0.3\n"))
    run = FakeRun(2, stderr="error: Failed to fetch: `https://idx.test/simple/flask/`\n  Caused by: dns error\n")
    with pytest.raises(BuildError, match="package index could not be reached") as e:
        deps.install(spec(r), tmp_path / "t", tmp_path, None, {}, runner=run)
    assert "SSL_CERT_FILE" in e.value.hint and "idx.test" not in str(e.value)


def test_install_passes_the_environment_through(tmp_path, monkeypatch):
    monkeypatch.delenv("FERRY_INSTALLER", raising=False)
    r = read_requirements(write(tmp_path / "requirements.txt", "flask==3.0.3\n"))
    run = FakeRun(0)
    deps.install(spec(r), tmp_path / "t", tmp_path, tmp_path / "uvc", {"PIP_INDEX_URL": "https://i/simple"}, runner=run)
    cmd, kw = run.calls[0]
    assert cmd[1:3] == ["pip", "install"] and kw["env"]["UV_DEFAULT_INDEX"] == "https://i/simple"
    assert kw["env"]["UV_CACHE_DIR"] == str(tmp_path / "uvc")


def test_inventory_reads_metadata_with_non_ascii_header_bytes(tmp_path):
    # pydantic, SQLAlchemy, psycopg, grpcio and celery ship METADATA like this: read as bytes
    # with compat32 these headers came back as email.header.Header objects, not str
    d = tmp_path / "x-1.0.dist-info"
    d.mkdir()
    (d / "METADATA").write_bytes("Metadata-Version: 2.1\nName: x\nVersion: 1.0\n"
                                 "Author: Jörg Müller\nLicense: MIT — see LICENSE\n"
                                 "Summary: Ünïcode\n\nbody\n".encode())
    (dist,) = deps.inventory(tmp_path)
    assert (dist.name, dist.version, dist.author, dist.license, dist.summary) == \
        ("x", "1.0", "Jörg Müller", "MIT — see LICENSE", "Ünïcode")


def test_console_scripts_lose_uvs_note_of_a_local_wheels_time(tmp_path):
    info = tmp_path / "dkimpy-1.1.8.dist-info"
    write(info / "uv_cache.json", '{"timestamp":{"secs_since_epoch":1796248701}}')
    write(info / "RECORD", "dkim/__init__.py,sha256=x,1\ndkimpy-1.1.8.dist-info/RECORD,,\n"
                           "dkimpy-1.1.8.dist-info/uv_cache.json,sha256=y,127\n")
    deps.finalise(tmp_path, "/usr/bin/python3")
    assert not (info / "uv_cache.json").exists()
    assert (info / "RECORD").read_text() == "dkim/__init__.py,sha256=x,1\ndkimpy-1.1.8.dist-info/RECORD,,\n"


# --- locks: the installer's steps, with a fake runner (no network) ------------------------------

SIX = "https://files.example.test/six-1.16.0-py2.py3-none-any.whl"
NUMPY_ARM = "https://files.example.test/numpy-2.1.3-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"
PYLOCK = f"""lock-version = "1.0"
created-by = "uv"
requires-python = ">=3.11"

[[packages]]
name = "numpy"
version = "2.1.3"
wheels = [
  {{ url = "https://files.example.test/numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", hashes = {{ sha256 = "{'1' * 64}" }} }},
  {{ url = "{NUMPY_ARM}", hashes = {{ sha256 = "{'2' * 64}" }} }},
]

[[packages]]
name = "six"
version = "1.16.0"
wheels = [{{ url = "{SIX}", hashes = {{ sha256 = "{'3' * 64}" }} }}]
"""


class Scripted:
    """Runs nothing; answers each command by its verb and records the argv (and, for the
    final install, the lock it was given)."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []
        self.installed = []

    def __call__(self, cmd, **kw):
        verb = "export" if cmd[1] == "export" else "compile" if cmd[2] == "compile" else "install"
        self.calls.append(verb)
        rc, out, write_to = self.answers[verb].pop(0) if isinstance(self.answers[verb], list) else self.answers[verb]
        if write_to:
            Path(cmd[cmd.index("-o") + 1]).write_text(write_to)
        if verb == "install" and rc == 0:
            self.installed.append(Path(cmd[cmd.index("-r") + 1]).read_text())
        return subprocess.CompletedProcess(cmd, rc, "", out)


def test_a_pylock_installs_the_wheel_ferry_chose_for_the_platform(tmp_path, monkeypatch):
    monkeypatch.delenv("FERRY_INSTALLER", raising=False)
    r = read_requirements(write(tmp_path / "pylock.toml", PYLOCK))
    assert (r.kind, r.hashed, r.lock, r.inputs) == ("pylock", True, r.path, (r.path,))
    run = Scripted({"install": (0, "", None)})
    assert deps.install(spec(r, arch="arm64"), tmp_path / "t", tmp_path, None, {}, runner=run) == "uv"
    (lock,) = run.installed
    assert NUMPY_ARM in lock and SIX in lock and "x86_64" not in lock


def test_a_uv_lock_is_exported_for_the_member_then_installed_as_a_lock(tmp_path, monkeypatch):
    monkeypatch.delenv("FERRY_INSTALLER", raising=False)
    write(tmp_path / "pyproject.toml", '[tool.uv.workspace]\nmembers = ["backend"]\n')
    write(tmp_path / "uv.lock", "version = 1\n")
    member = write(tmp_path / "backend" / "pyproject.toml", '[project]\nname = "app"\nversion = "0.1.0"\n')
    r = read_requirements(member)
    cmds = []
    run = Scripted({"export": (0, "", PYLOCK), "install": (0, "", None)})
    orig = run.__call__
    deps.install(spec(r), tmp_path / "t", tmp_path / "w", None, {}, runner=lambda c, **kw: (cmds.append(c), orig(c, **kw))[1])
    assert run.calls == ["export", "install"]
    assert cmds[0][cmds[0].index("--package") + 1] == "app" and cmds[0][cmds[0].index("--project") + 1] == str(tmp_path)
    assert "--require-hashes" in cmds[1] and "--only-binary" in cmds[1]
    assert "x86_64" in run.installed[0] and NUMPY_ARM not in run.installed[0]


def test_a_stale_uv_lock_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("FERRY_INSTALLER", raising=False)
    py = write(tmp_path / "pyproject.toml", '[project]\nname = "svc"\nversion = "1"\n')
    write(tmp_path / "uv.lock", "version = 1\n")
    run = Scripted({"export": (2, "error: Failed to parse `uv.lock`", None)})
    with pytest.raises(BuildError, match=r"uv.lock could not be exported: error: Failed to parse") as e:
        deps.install(spec(read_requirements(py)), tmp_path / "t", tmp_path, None, {}, runner=run)
    assert "uv lock" in e.value.hint


def test_installing_a_lock_needs_uv(tmp_path, monkeypatch):
    monkeypatch.setenv("FERRY_INSTALLER", "pip")
    r = read_requirements(write(tmp_path / "pylock.toml", PYLOCK))
    with pytest.raises(BuildError, match="pylock.toml: installing from a lock needs uv"):
        deps.install(spec(r), tmp_path / "t", tmp_path, None, {}, runner=Scripted({}))


def test_a_requirement_with_only_an_sdist_is_resolved_to_a_lock_keeping_its_hashes(tmp_path, monkeypatch):
    monkeypatch.delenv("FERRY_INSTALLER", raising=False)
    r = read_requirements(write(tmp_path / "requirements.txt",
                                f"numpy==2.1.3 --hash=sha256:{'2' * 64}\nsix==1.16.0 --hash=sha256:{'3' * 64}\n"))
    no_wheel = "  x No solution found\n  Because dkimpy==1.1.8 has no usable wheels and you require dkimpy==1.1.8"
    run = Scripted({"install": [(1, no_wheel, None), (0, "", None)], "compile": (0, "", PYLOCK)})
    deps.install(spec(r, arch="arm64"), tmp_path / "t", tmp_path, None, {}, runner=run)
    assert run.calls == ["install", "compile", "install"]
    assert NUMPY_ARM in run.installed[0]
    # a hash the requirements do not allow is never installed
    r2 = read_requirements(write(tmp_path / "r2.txt", f"numpy==2.1.3 --hash=sha256:{'9' * 64}\nsix==1.16.0 --hash=sha256:{'3' * 64}\n"))
    run = Scripted({"install": [(1, no_wheel, None)], "compile": (0, "", PYLOCK)})
    with pytest.raises(BuildError, match="r2.txt: no file of numpy 2.1.3 the index serves matches its --hash"):
        deps.install(spec(r2, arch="arm64"), tmp_path / "t", tmp_path, None, {}, runner=run)


def test_uv_compile_command_resolves_for_the_image():
    r = deps.Requirements(Path("/s/requirements.txt"), "requirements", "d", hashed=True)
    assert deps.uv_compile_command("uv", spec(r, arch="arm64"), Path("/s/requirements.txt"), Path("/w/pylock.c.toml")) == [
        "uv", "pip", "compile", "/s/requirements.txt", "--format", "pylock.toml", "-o", "/w/pylock.c.toml",
        "--python-platform", "aarch64-manylinux_2_28", "--python-version", "3.11", "--no-header", "--quiet", "--no-deps"]

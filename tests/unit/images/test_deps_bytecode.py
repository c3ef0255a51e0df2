"""The dependency layer's bytecode: the decision (pure), the sandbox's exact argv, and the
runner's fallback (a fake runner: no interpreter is started here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ferry.images import deps, sandbox
from ferry.images.deps import Bytecode, DepsSpec, Requirements
from ferry.images.oci import Platform

from .test_builder import app  # noqa: F401  (the fixture: a fake installer and a fake base)

QEMU_ARM = "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: OCF\n"


def test_the_compile_step_binds_the_base_read_only_and_only_the_dependency_folder_writable():
    top = [("usr", None), ("lib", "usr/lib"), ("etc", None), ("proc", None), ("tmp", None), ("bin", "usr/bin")]
    argv = sandbox.deps_bytecode_argv("/usr/bin/bwrap", Path("/cache/trees/base-ab"), top, "/usr/bin/python3.11",
                                      Path("/cache/tmp/deps-1/site"), "app/deps", "CHECKED_HASH", 0)
    assert argv == [
        "/usr/bin/bwrap",
        "--symlink", "usr/bin", "/bin",
        "--ro-bind", "/cache/trees/base-ab/etc", "/etc",
        "--symlink", "usr/lib", "/lib",
        "--ro-bind", "/cache/trees/base-ab/usr", "/usr",
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind", "/cache/tmp/deps-1/site", "/tmp/ferry-deps",
        "--unshare-all", "--unshare-user", "--uid", "0", "--gid", "0", "--hostname", "ferry-build",
        "--die-with-parent", "--new-session", "--clearenv",
        "--setenv", "PYTHONHASHSEED", "0", "--setenv", "SOURCE_DATE_EPOCH", "1", "--setenv", "LC_ALL", "C.UTF-8",
        "--chdir", "/", "--", "/usr/bin/python3.11", "-S", "-s", "-B", "-c", sandbox.DEPS_BYTECODE_SCRIPT,
        "/tmp/ferry-deps", "/app/deps", "CHECKED_HASH", "0"]


def test_the_compile_script_is_compileall_with_the_image_path_and_the_given_mode():
    assert sandbox.DEPS_BYTECODE_SCRIPT == (
        "import compileall, py_compile, sys; src, ddir, mode, workers = sys.argv[1:5]; "
        "compileall.compile_dir(src, ddir=ddir, force=True, quiet=2, workers=int(workers), "
        "invalidation_mode=py_compile.PycInvalidationMode[mode])")


def test_bytecode_is_compiled_by_the_base_s_python_named_by_its_full_version():
    assert deps.bytecode_plan("3.11.2", "sha256:abc", "amd64", "amd64", {}, "/usr/bin/bwrap") == \
        Bytecode("cpython-3.11.2")


def test_a_base_whose_python_version_is_unknown_is_named_by_its_chain_id():
    assert deps.bytecode_plan(None, "sha256:abc", "amd64", "amd64", {}, "/usr/bin/bwrap") == Bytecode("base-abc")


def test_a_foreign_platform_without_qemu_gets_no_bytecode_and_says_why():
    b = deps.bytecode_plan("3.11.2", "sha256:abc", "arm64", "amd64", {}, "/usr/bin/bwrap")
    assert b.compiler is None
    assert "cannot run the base's linux/arm64 Python" in b.reason and "qemu-user" in b.reason


def test_a_foreign_platform_borrows_another_platform_s_python_of_the_same_version():
    b = deps.bytecode_plan("3.11.2", "sha256:abc", "arm64", "amd64", {}, "/usr/bin/bwrap",
                           others={"amd64": "3.11.2"})
    assert b == Bytecode("cpython-3.11.2", via="amd64")


def test_another_platform_with_another_python_version_is_not_borrowed():
    b = deps.bytecode_plan("3.11.2", "sha256:abc", "arm64", "amd64", {}, "/usr/bin/bwrap",
                           others={"amd64": "3.11.4"})
    assert b.compiler is None and b.via is None
    unknown = deps.bytecode_plan(None, "sha256:abc", "arm64", "amd64", {}, "/usr/bin/bwrap", others={"amd64": None})
    assert unknown.compiler is None


def test_a_foreign_platform_with_qemu_registered_is_compiled_through_it():
    b = deps.bytecode_plan("3.11.2", "sha256:abc", "arm64", "amd64", {"qemu-aarch64": QEMU_ARM}, "/usr/bin/bwrap")
    assert b == Bytecode("cpython-3.11.2")


def test_no_bubblewrap_means_no_bytecode():
    b = deps.bytecode_plan("3.11.2", "sha256:abc", "amd64", "amd64", {}, None)
    assert b.compiler is None and "apt-get install bubblewrap" in b.reason


def _spec(tmp_path: Path, bytecode: str | None) -> DepsSpec:
    req = Requirements(tmp_path / "requirements.txt", "requirements", "d" * 64)
    return DepsSpec(req, Platform("linux", "amd64"), "3.11", bytecode=bytecode)


def test_the_key_names_the_compiler_and_the_recipe_is_bumped(tmp_path):
    assert deps.RECIPE_VERSION == "3"
    keys = {_spec(tmp_path, b).key() for b in (None, "cpython-3.11.2", "cpython-3.11.9")}
    assert len(keys) == 3
    assert _spec(tmp_path, "cpython-3.11.2").key() == _spec(tmp_path, "cpython-3.11.2").key()


def _base(tmp_path: Path, where: str = "usr/bin") -> Path:
    base = tmp_path / "base"
    (base / where).mkdir(parents=True)
    (base / where / "python3.11").write_bytes(b"\x7fELF")
    (base / "etc").mkdir()
    (base / "bin").symlink_to("usr/bin")
    return base


def test_the_interpreter_is_found_where_the_path_would_find_it_first(tmp_path):
    base = _base(tmp_path, "usr/local/bin")
    (base / "usr/bin").mkdir()
    (base / "usr/bin/python3.11").symlink_to("/usr/local/bin/python3.11")  # absolute: inside the tree
    assert deps.find_interpreter(base, "3.11") == "/usr/local/bin/python3.11"
    assert deps.find_interpreter(base, "3.12") is None


def test_tree_top_lists_directories_and_symlinks(tmp_path):
    assert deps.tree_top(_base(tmp_path)) == [("bin", "usr/bin"), ("etc", None), ("usr", None)]


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    (site / "pkg/__pycache__").mkdir(parents=True)
    (site / "pkg/__init__.py").write_text("x = 1\n")
    return site


def test_a_failing_compile_leaves_no_bytecode_at_all(tmp_path):
    site, base = _site(tmp_path), _base(tmp_path)
    seen = []

    def runner(argv, **kw):
        seen.append(argv)
        (site / "pkg/__pycache__/__init__.cpython-311.pyc").write_bytes(b"partial")
        return subprocess.CompletedProcess(argv, 1, "", "bwrap: No permissions to creating new namespace\n")

    n, why = deps.compile_bytecode(site, base, "3.11", runner=runner, bwrap="/usr/bin/bwrap")
    assert n == 0 and "exit 1" in why and "No permissions" in why
    assert not list(site.rglob("*.pyc")) and not list(site.rglob("__pycache__"))
    assert seen[0][-10:] == ["/usr/bin/python3.11", "-S", "-s", "-B", "-c", sandbox.DEPS_BYTECODE_SCRIPT,
                             "/tmp/ferry-deps", "/app/deps", deps.BYTECODE_MODE, "0"]


def test_a_compile_that_succeeds_counts_the_pyc_it_wrote(tmp_path):
    site, base = _site(tmp_path), _base(tmp_path)

    def runner(argv, **kw):
        (site / "pkg/__pycache__/__init__.cpython-311.pyc").write_bytes(b"pyc")
        return subprocess.CompletedProcess(argv, 0, "", "")

    assert deps.compile_bytecode(site, base, "3.11", runner=runner, bwrap="/usr/bin/bwrap") == (1, "")
    assert [e.path for e in deps.entries(site)][-1] == "app/deps/pkg/__pycache__/__init__.cpython-311.pyc"


def test_a_base_without_the_interpreter_gets_no_bytecode_and_nothing_runs(tmp_path):
    site, base = _site(tmp_path), _base(tmp_path)

    def runner(argv, **kw):
        raise AssertionError("nothing to run")

    n, why = deps.compile_bytecode(site, base, "3.12", runner=runner)
    assert n == 0 and "python3.12" in why


def test_a_base_whose_files_cannot_be_had_gets_no_bytecode():
    b = deps.bytecode_plan("3.11.2", "sha256:abc", "amd64", "amd64", {}, "/usr/bin/bwrap", base_files=False)
    assert b.compiler is None and "base's layers are not on this machine" in b.reason


def test_a_build_whose_base_files_cannot_be_had_warns_and_has_no_bytecode(app):  # noqa: F811
    import io

    from ferry.progress import Progress

    from .test_builder import run

    spec, calls, tmp = app
    out = io.StringIO()
    r = run(spec, tmp, progress=Progress(out))
    assert "dependency layer linux/amd64: no bytecode: the base's layers are not on this machine" in out.getvalue()
    assert r.builds[0].layer("deps").meta["bytecode"] == 0

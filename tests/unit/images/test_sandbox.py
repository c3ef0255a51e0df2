"""The build step's sandbox as exact argv (bubblewrap and the unshare fallback), the overlay's
options, who the step runs as, where it can run; the build step's key and its diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ferry.errors import BuildError
from ferry.images import sandbox
from ferry.images.buildstep import BuildStep, diff_entries, scaffold
from ferry.images.cache import Cache
from ferry.images.oci import OCI_LAYER_GZIP, Blob, Platform
from ferry.images.sandbox import Step, Tools
from ferry.images.steps import Layer, StepContext

TOOLS = Tools("/usr/bin/unshare", "/bin/sh", "/usr/bin/mount", "/usr/bin/bwrap")
STEP = Step(("python3", "manage.py", "collectstatic", "--noinput"), 65532, 65532,
            {"PATH": "/app/deps/bin:/usr/bin", "DJANGO_SETTINGS_MODULE": "mysite.settings"}, "/app")
L = [Path("/c/trees/layer-src"), Path("/c/trees/base-b"), Path("/c/w/scaffold")]


def test_bwrap_runs_the_step_as_the_image_user_without_network_in_the_workdir():
    cmd, env = sandbox.command(TOOLS, L, Path("/c/w/upper"), Path("/c/w/ovl"), Path("/c/w/root"), STEP)
    assert cmd == [
        "/usr/bin/unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-ec", sandbox.SCRIPT, "sh",
        "lowerdir=/c/trees/layer-src:/c/trees/base-b:/c/w/scaffold,upperdir=/c/w/upper,workdir=/c/w/ovl,"
        "redirect_dir=off,metacopy=off,index=off,xino=off",
        "/c/w/root", "bwrap", "0", "/usr/bin/mount",
        "/usr/bin/bwrap", "--bind", "/c/w/root", "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        "--unshare-all", "--unshare-user", "--uid", "65532", "--gid", "65532", "--hostname", "ferry-build",
        "--die-with-parent", "--new-session", "--clearenv",
        "--setenv", "PATH", "/app/deps/bin:/usr/bin", "--setenv", "DJANGO_SETTINGS_MODULE", "mysite.settings",
        "--chdir", "/app", "--", "python3", "manage.py", "collectstatic", "--noinput"]
    assert env == {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # the step's own comes through --setenv only


def test_network_on_shares_the_hosts_and_its_resolver():
    step = Step(("pip", "download", "x"), 1000, 1000, {}, "/srv", network=True)
    argv = sandbox.bwrap_argv("/usr/bin/bwrap", Path("/r"), step)
    i = argv.index("--new-session")
    assert argv[i + 1:i + 6] == ["--share-net", "--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf", "--clearenv"]


def test_without_bwrap_unshare_does_the_same_and_the_env_is_the_steps():
    tools = Tools("/usr/bin/unshare", "/bin/sh", "/usr/bin/mount", None)
    cmd, env = sandbox.command(tools, L, Path("/u"), Path("/o"), Path("/r"), STEP)
    assert cmd[cmd.index("/r") + 1:] == [
        "unshare", "0", "/usr/bin/mount",
        "/usr/bin/unshare", "--user", "--map-user=65532", "--map-group=65532", "--mount", "--net", "--pid", "--ipc",
        "--uts", "--fork", "--kill-child", "--mount-proc", "--root=/r", "--wd=/app",
        "--", "python3", "manage.py", "collectstatic", "--noinput"]
    assert env == STEP.env
    with_net = sandbox.unshare_argv("/usr/bin/unshare", Path("/r"), Step(("x",), 1, 1, network=True))
    assert "--net" not in with_net


def test_not_root_maps_root_in_a_user_namespace_for_the_overlay():
    cmd, _ = sandbox.command(TOOLS, L, Path("/u"), Path("/o"), Path("/r"), STEP, as_root=False)
    assert cmd[:5] == ["/usr/bin/unshare", "--map-root-user", "--mount", "--propagation", "private"]


def test_paths_overlayfs_cannot_take_are_refused():
    with pytest.raises(BuildError, match="overlayfs cannot take"):
        sandbox.overlay_options([Path("/a,b")], Path("/u"), Path("/w"))


@pytest.mark.parametrize("arch, machine, binfmt, ok", [
    ("amd64", "amd64", {}, True),
    ("arm64", "amd64", {}, False),
    ("arm64", "amd64", {"qemu-aarch64": "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\n"}, True),
    ("arm64", "amd64", {"qemu-aarch64": "enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: P\n"}, False),  # not in the sandbox
    ("arm64", "amd64", {"qemu-aarch64": "disabled\nflags: F\n"}, False),
])
def test_steps_run_where_the_images_binaries_run(arch, machine, binfmt, ok):
    assert sandbox.can_run(arch, machine, binfmt) is ok
    assert sandbox.machine_architecture("x86_64") == "amd64" and sandbox.machine_architecture("aarch64") == "arm64"


def test_the_image_user_by_number_or_by_the_images_own_names():
    passwd = "root:x:0:0:root:/root:/usr/sbin/nologin\napp:x:65532:65532:app:/home/app:/usr/sbin/nologin\n"
    group = "root:x:0:\napp:x:65532:\nwww:x:33:\n"
    assert sandbox.parse_user("65532:65532") == (65532, 65532)
    assert sandbox.parse_user("1000") == (1000, 1000)
    assert sandbox.parse_user("app", passwd, group) == (65532, 65532)
    assert sandbox.parse_user("app:www", passwd, group) == (65532, 33)
    with pytest.raises(BuildError, match="'nobody' is not a user of the image"):
        sandbox.parse_user("nobody", passwd, group)


# --- the build step ------------------------------------------------------------------------------

def layer(kind: str, diff_id: str) -> Layer:
    return Layer(kind, kind, Blob("sha256:" + kind, 1, OCI_LAYER_GZIP), diff_id, "built", kind)


def build_step(**kw) -> BuildStep:
    args = dict(steps=[["python3", "manage.py", "collectstatic"]], env_for=lambda below: {"A": "1"},
                user="65532:65532", workdir="/app", network=False, mtime=1, architecture="amd64",
                base_diff_ids=["sha256:b"])
    args.update(kw)
    return BuildStep(**args)


def test_the_build_key_is_every_layer_under_it_the_steps_the_env_and_the_network():
    below = [layer("deps", "sha256:d"), layer("source", "sha256:s")]
    key = build_step().key(below)
    assert key == build_step().key(below)
    for other in (build_step(steps=[["python3", "manage.py", "compress"]]), build_step(env_for=lambda b: {"A": "2"}),
                  build_step(network=True), build_step(base_diff_ids=["sha256:b2"]), build_step(user="0:0")):
        assert other.key(below) != key
    assert build_step().key([layer("deps", "sha256:d"), layer("source", "sha256:s2")]) != key


def test_with_build_inputs_their_content_stands_for_the_source_layer_in_the_key():
    below = [layer("deps", "sha256:d"), layer("source", "sha256:s")]
    key = build_step(inputs_key="i1").key(below)
    # another source layer (an edit of a view): the same key; other inputs: another
    assert build_step(inputs_key="i1").key([layer("deps", "sha256:d"), layer("source", "sha256:s2")]) == key
    assert build_step(inputs_key="i2").key(below) != key
    # what is under the source still counts (a new dependency, new Debian packages)
    assert build_step(inputs_key="i1").key([layer("deps", "sha256:d2"), layer("source", "sha256:s")]) != key
    assert build_step(inputs_key="i1").key([layer("packages", "sha256:p"), *below]) != key
    # and the steps, their env, the network
    assert build_step(inputs_key="i1", network=True).key(below) != key
    assert build_step(inputs_key="i1", env_for=lambda b: {"A": "2"}).key(below) != key
    # without build_inputs, the key is what it was (images built before keep their build layer)
    assert build_step().key(below) != key and build_step(inputs_key=None).key(below) == build_step().key(below)


def test_with_build_inputs_the_steps_bytecode_of_the_apps_modules_is_left_out():
    from ferry.images.buildstep import stale_bytecode

    assert stale_bytecode("app/mysite/__pycache__/settings.cpython-311.pyc", "/app")
    assert stale_bytecode("app/__pycache__/manage.cpython-311.pyc", "/app")
    assert not stale_bytecode("app/staticfiles/staticfiles.json", "/app")
    assert not stale_bytecode("app/staticfiles/admin/js/core.js", "/app")
    assert not stale_bytecode("opt/venv/__pycache__/x.cpython-311.pyc", "/app")  # not the app's own


def test_another_architecture_without_qemu_is_refused_before_anything_is_fetched(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "machine_architecture", lambda machine=None: "amd64")
    monkeypatch.setattr(sandbox, "read_binfmt", lambda root=None: {})
    step = build_step(architecture="arm64")
    ctx = StepContext(Platform("linux", "arm64"), Cache(tmp_path / "c"), "r")  # no base: would fail if asked
    with pytest.raises(BuildError) as e:
        step.make(ctx, "k", (), tmp_path)
    assert e.value.message == "image.build runs the image's own programs, and this amd64 machine cannot run linux/arm64 ones"
    assert "qemu-user-static" in e.value.hint and "image.platforms" in e.value.hint


def test_the_upper_directory_becomes_entries_with_oci_whiteouts(tmp_path):
    up = tmp_path / "upper"
    (up / "app/static").mkdir(parents=True)
    (up / "app/static/app.css").write_text("body{}")
    (up / "app/run.sh").write_text("#!/bin/sh\n")
    os.chmod(up / "app/run.sh", 0o700)
    os.mknod(up / "app/old.txt", 0o600 | 0o020000, os.makedev(0, 0))  # overlayfs' whiteout (as root, as builds run)
    (up / "app/cache").mkdir()
    os.setxattr(up / "app/cache", "trusted.overlay.opaque", b"y")
    os.symlink("static/app.css", up / "app/latest.css")
    got = [(e.path, e.kind, e.mode) for e in diff_entries(up)]
    assert got == [("app", "dir", 0o755), ("app/cache", "dir", 0o755), ("app/cache/.wh..wh..opq", "file", 0o644),
                   ("app/static", "dir", 0o755), ("app/latest.css", "symlink", 0o777),
                   ("app/.wh.old.txt", "file", 0o644), ("app/run.sh", "file", 0o755),
                   ("app/static/app.css", "file", 0o644)]


def test_the_scaffold_has_the_sandboxs_mount_points(tmp_path):
    root = scaffold(tmp_path / "s")
    assert all((root / d).is_dir() for d in ("proc", "dev", "tmp", "etc"))
    assert (root / "etc/resolv.conf").is_file() and (root / "etc/hosts").is_file()


def test_a_base_s_bytecode_is_compiled_by_its_own_python_with_the_tree_as_root_and_no_network():
    argv = sandbox.bytecode_argv("/usr/bin/bwrap", Path("/cache/bytecode-root"), "/usr/bin/python3.13", ".ferry-bytecode")
    assert argv == ["/usr/bin/bwrap", "--bind", "/cache/bytecode-root", "/", "--proc", "/proc", "--dev", "/dev",
                    "--tmpfs", "/tmp", "--unshare-all", "--unshare-user", "--uid", "0", "--gid", "0",
                    "--hostname", "ferry-build", "--die-with-parent", "--new-session", "--clearenv",
                    "--setenv", "PYTHONHASHSEED", "0", "--setenv", "SOURCE_DATE_EPOCH", "1", "--setenv", "LC_ALL", "C.UTF-8",
                    "--chdir", "/", "--", "/usr/bin/python3.13", "-I", "-S", "-B", "/.ferry-bytecode/compile.py",
                    "/.ferry-bytecode"]

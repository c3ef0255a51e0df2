"""The fleet layer's host commands as exact argv (Kamal's test/commands style)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ferry.config import parse
from ferry.errors import ConfigError
from ferry.fleet import argv as A

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ["docker", "-H", "unix:///var/lib/ferry-local/docker.sock"]
IMAGE = "127.0.0.1:5000/hello@sha256:" + "a" * 64


def cfg(**deploy):
    doc = tomllib.loads((ROOT / "tests" / "unit" / "fleet" / "ferry.toml").read_text())
    doc["deploy"].update(deploy)
    return parse(doc, ROOT / "ferry.toml")


# --- pull ---------------------------------------------------------------------------------------

def test_an_anonymous_pull_is_a_plain_docker_pull():
    assert A.pull_argv(DOCKER, IMAGE) == [*DOCKER, "pull", "--quiet", IMAGE]


def test_a_pull_with_credentials_logs_in_to_a_private_config_that_is_removed_after():
    argv = A.pull_argv(["docker"], IMAGE, "ci-bot")
    assert argv == ["sh", "-c",
                    "set -e; d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT; chmod 700 \"$d\"; "
                    "docker --config \"$d\" login --username ci-bot --password-stdin 127.0.0.1:5000 >/dev/null; "
                    f"docker --config \"$d\" pull --quiet {IMAGE} >/dev/null"]


def test_the_password_is_never_in_argv_and_odd_names_are_quoted():
    argv = A.pull_argv(["docker"], "evil;rm -rf /x/app:1", "a b")
    script = argv[2]
    assert "--password-stdin 'evil;rm -rf '" in script and "--username 'a b'" in script
    assert "pull --quiet 'evil;rm -rf /x/app:1'" in script


def test_a_pinned_pull_is_skipped_when_the_image_is_there_and_then_runs_after():
    inspect = ["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", IMAGE]
    argv = A.pull_argv(["docker"], IMAGE, if_missing=True, then=inspect)
    assert argv == ["sh", "-c",
                    f"set -e; docker image inspect {IMAGE} >/dev/null 2>&1 || docker pull --quiet {IMAGE} >/dev/null; "
                    f"docker image inspect --format '{{{{json .RepoDigests}}}}' {IMAGE}"]


# --- logs ---------------------------------------------------------------------------------------

def test_logs_argv():
    c = cfg()
    assert A.logs_argv(c, "hello-blue") == [*DOCKER, "logs", "hello-blue"]
    assert A.logs_argv(c, "hello-worker-1", follow=True, since="10m", tail=50) == [
        *DOCKER, "logs", "--follow", "--since", "10m", "--tail", "50", "hello-worker-1"]


@pytest.mark.parametrize("since", ["10m", "1h30m", "45s", "1.5h", "1733220000", "2026-12-03",
                                   "2026-12-03T10:00:00Z", "2026-12-03T10:00:00+01:00"])
def test_since_accepts_what_docker_logs_accepts(since):
    assert A.check_since(since) == since


@pytest.mark.parametrize("since", ["10 minutes", "yesterday", "-5m", "10m; rm -rf /", ""])
def test_since_refuses_anything_else_before_a_host_is_touched(since):
    with pytest.raises(ConfigError, match="--since"):
        A.check_since(since)


# --- exec ---------------------------------------------------------------------------------------

RELEASE = {"release": "20261203-120000-aaaaaaa", "version": "v1", "digest": "sha256:" + "a" * 64}


def test_a_one_off_container_has_the_apps_env_volumes_host_network_and_is_removed_after():
    argv = A.exec_run_argv(cfg(), IMAGE, ["python3", "manage.py", "shell"], name="hello-exec-1", release=RELEASE)
    assert argv == [
        *DOCKER, "run", "--rm", "--name", "hello-exec-1", "--network", "host",
        "--env-file", "/opt/ferry/hello/env", "--label", "dev.ferry.exec=hello",
        "--env", "FERRY_APP=hello", "--env", "FERRY_DIGEST=sha256:" + "a" * 64,
        "--env", "FERRY_RELEASE=20261203-120000-aaaaaaa", "--env", "FERRY_VERSION=v1", "--env", "GREETING=hi",
        "--volume", "/opt/ferry/hello/volumes/data:/data", "--volume", "/opt/ferry/hello/volumes/media:/app/media",
        # the image's entrypoint is the app server: the command replaces it
        "--entrypoint", "python3", IMAGE, "manage.py", "shell"]
    # no dev.ferry.app label: deploy, status and monitoring never take it for a colour
    assert not any(a.startswith("dev.ferry.app=") for a in argv)


def test_an_interactive_one_off_keeps_stdin_and_a_terminal_when_there_is_one():
    argv = A.exec_run_argv(cfg(volumes={}), IMAGE, ["sh"], name="n", release={}, interactive=True, tty=True)
    assert argv[argv.index("--label") + 2:argv.index("--label") + 4] == ["--interactive", "--tty"]
    assert argv[-3:] == ["--entrypoint", "sh", IMAGE] and "--volume" not in argv


def test_live_exec_runs_inside_the_live_container():
    assert A.exec_live_argv(cfg(), "hello-green", ["python3", "-V"]) == [*DOCKER, "exec", "hello-green", "python3", "-V"]
    assert A.exec_live_argv(cfg(), "hello-green", ["sh"], interactive=True, tty=True) == [
        *DOCKER, "exec", "--interactive", "--tty", "hello-green", "sh"]

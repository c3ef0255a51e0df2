"""The exact host commands of the fleet layer (as Kamal's commands/*): pure, no I/O.

- ``pull_argv``: the one docker login + pull, used by the deploy and the monitoring stack:
  credentials live in a private temp DOCKER_CONFIG for that pull only, the password on stdin;
- ``logs_argv``: `docker logs` of one container (``ferry logs``);
- ``exec_run_argv`` / ``exec_live_argv``: a one-off container of the live release, or a command
  inside the live container (``ferry exec``).
"""

from __future__ import annotations

import re
import shlex
from typing import Mapping, Sequence

from ..config import Config
from ..deploy import docker as D
from ..errors import ConfigError

# `docker logs --since`: a duration (10m, 1h30m, 45s), a Unix time or an RFC 3339 date
_SINCE_RE = re.compile(r"^(\d+(\.\d+)?[smh])+$|^\d+(\.\d+)?$|^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$")


def pull_argv(docker: Sequence[str], image: str, username: str | None = None, *, if_missing: bool = False,
              then: Sequence[str] | None = None) -> list[str]:
    """Pull ``image`` on the host. With ``username`` the host logs in to the image's registry
    first, in a private temp DOCKER_CONFIG removed when the script ends (the password is the
    command's stdin, never in argv). ``if_missing``: a pinned image already there is not pulled
    again; ``then``: a command run after a successful pull (its output is the command's)."""
    if username is None and not if_missing and then is None:
        return [*docker, "pull", "--quiet", image]
    q = shlex.quote
    parts = ["set -e"]
    puller = shlex.join(docker)
    if username is not None:
        registry = image.split("/", 1)[0]
        puller = shlex.join([*docker, "--config", "DIR"]).replace("DIR", '"$d"')
        parts += ['d=$(mktemp -d)', "trap 'rm -rf \"$d\"' EXIT", 'chmod 700 "$d"',
                  f"{puller} login --username {q(username)} --password-stdin {q(registry)} >/dev/null"]
    pull = f"{puller} pull --quiet {q(image)} >/dev/null"
    if if_missing:
        pull = f"{shlex.join([*docker, 'image', 'inspect', image])} >/dev/null 2>&1 || {pull}"
    parts.append(pull)
    if then is not None:
        parts.append(shlex.join(then))
    return ["sh", "-c", "; ".join(parts)]


def check_since(since: str | None) -> str | None:
    if since is None or _SINCE_RE.match(since):
        return since
    raise ConfigError(f"--since {since!r} is not a duration or a time",
                      "e.g. --since 10m, --since 1h30m or --since 2026-12-03T10:00:00Z")


def logs_argv(cfg: Config, container: str, *, follow: bool = False, since: str | None = None,
              tail: int | None = None) -> list[str]:
    argv = D.docker(cfg, "logs")
    if follow:
        argv.append("--follow")
    if since:
        argv += ["--since", check_since(since)]
    if tail is not None:
        argv += ["--tail", str(tail)]
    return [*argv, container]


volume_path, volume_args = D.volume_path, D.volume_args  # one layout, deploy's


def exec_name(cfg: Config, suffix: str) -> str:
    return f"{cfg.app.name}-exec-{suffix}"


def exec_run_argv(cfg: Config, image: str, command: Sequence[str], *, name: str,
                  release: Mapping[str, str], interactive: bool = False, tty: bool = False) -> list[str]:
    """A one-off container of the live release's image: the app's env file (secrets), deploy.env
    and the release's FERRY_* variables, its volumes, the host network, the image's own user and
    workdir; removed when the command ends. The image's entrypoint (the app server) is replaced
    by the command's first word: ``docker run IMAGE ARGS`` would hand ARGS to the server. No
    dev.ferry.app label: no deploy, status or monitoring mistakes it for a colour."""
    argv = D.docker(cfg, "run", "--rm", "--name", name, "--network", "host",
                    "--env-file", D.env_file_path(cfg), "--label", f"{D.LABEL}.exec={cfg.app.name}")
    if interactive:
        argv.append("--interactive")
    if tty:
        argv.append("--tty")
    env = {**cfg.deploy.env, "FERRY_APP": cfg.app.name,
           **{f"FERRY_{k.upper()}": v for k, v in release.items() if k in ("release", "version", "digest")}}
    for k in sorted(env):
        argv += ["--env", f"{k}={env[k]}"]
    return [*argv, *volume_args(cfg), "--entrypoint", command[0], image, *command[1:]]


def exec_live_argv(cfg: Config, container: str, command: Sequence[str], *, interactive: bool = False,
                   tty: bool = False) -> list[str]:
    """The command inside the live container itself (its processes, files and env)."""
    argv = D.docker(cfg, "exec")
    if interactive:
        argv.append("--interactive")
    if tty:
        argv.append("--tty")
    return [*argv, container, *command]


def inspect_image_argv(cfg: Config, container: str) -> list[str]:
    """The image (repository@digest as run) and labels of a container: what exec runs."""
    return D.docker(cfg, "inspect", "--type", "container", "--format",
                    "{{.Config.Image}}|{{index .Config.Labels \"dev.ferry.release\"}}"
                    "|{{index .Config.Labels \"dev.ferry.version\"}}|{{index .Config.Labels \"dev.ferry.digest\"}}",
                    container)

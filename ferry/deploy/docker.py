"""The exact `docker ...` argument lists for one host (as Kamal's commands/*): pure, no I/O.

Containers are named ``<app>-blue`` / ``<app>-green``, run on the host network each on its
colour's loopback port, and carry labels (app, colour, release, version, digest) so the host
alone tells what runs there.
"""

from __future__ import annotations

from ..accessories.spec import templated_keys
from ..config import Config

LABEL = "dev.ferry"


def docker(cfg: Config, *args: str) -> list[str]:
    base = [cfg.deploy.docker]
    if cfg.deploy.docker_host:
        base += ["-H", cfg.deploy.docker_host]
    return [*base, *args]


def container_name(cfg: Config, colour: str) -> str:
    return f"{cfg.app.name}-{colour}"


def env_file_path(cfg: Config) -> str:
    return f"{cfg.deploy.root}/{cfg.app.name}/env"


def run_argv(cfg: Config, colour: str, image: str, release: str, version: str, digest: str) -> list[str]:
    d = cfg.deploy
    port = d.colours[colour]
    argv = docker(cfg, "run", "--detach", "--name", container_name(cfg, colour),
                  "--network", "host", "--restart", d.restart,
                  "--env-file", env_file_path(cfg),
                  "--log-driver", "json-file", "--log-opt", "max-size=10m", "--log-opt", "max-file=3",
                  # docker stop waits this long for in-flight requests before SIGKILL
                  "--stop-timeout", str(int(d.drain_timeout)))
    # values with an accessory's {db.password} go to the env file, substituted (accessories.spec)
    templated = templated_keys(cfg)
    env = {**{k: v for k, v in d.env.items() if k not in templated}, "PORT": str(port), "FERRY_APP": cfg.app.name, "FERRY_COLOUR": colour,
           "FERRY_RELEASE": release, "FERRY_VERSION": version, "FERRY_DIGEST": digest}
    for k in sorted(env):
        argv += ["--env", f"{k}={env[k]}"]
    labels = {"app": cfg.app.name, "colour": colour, "release": release, "version": version,
              "digest": digest, "port": str(port)}
    for k in sorted(labels):
        argv += ["--label", f"{LABEL}.{k}={labels[k]}"]
    if d.resources.memory:
        argv += ["--memory", d.resources.memory]
    if d.resources.cpus:
        argv += ["--cpus", d.resources.cpus]
    return [*argv, image]


def ps_argv(cfg: Config) -> list[str]:
    return docker(cfg, "ps", "--all", "--no-trunc", "--filter", f"label={LABEL}.app={cfg.app.name}",
                  "--format", "{{json .}}")


def inspect_state_argv(cfg: Config, name: str) -> list[str]:
    return docker(cfg, "inspect", "--format",
                  "{{.State.Status}}|{{.State.ExitCode}}|{{.RestartCount}}|{{index .Config.Labels \"dev.ferry.release\"}}",
                  name)


def stop_argv(cfg: Config, name: str, timeout: float | None = None) -> list[str]:
    t = int(cfg.deploy.drain_timeout if timeout is None else timeout)
    return docker(cfg, "stop", "--time", str(t), name)


def rm_argv(cfg: Config, name: str) -> list[str]:
    return docker(cfg, "rm", "--force", name)


def logs_argv(cfg: Config, name: str, tail: int = 20) -> list[str]:
    return docker(cfg, "logs", "--tail", str(tail), name)


def pull_argv(cfg: Config, image: str, config_dir: str | None = None) -> list[str]:
    if config_dir:
        return docker(cfg, "--config", config_dir, "pull", "--quiet", image)
    return docker(cfg, "pull", "--quiet", image)


def images_argv(cfg: Config, repository: str) -> list[str]:
    return docker(cfg, "images", "--digests", "--no-trunc", "--format", "{{json .}}", repository)


def rmi_argv(cfg: Config, ref: str) -> list[str]:
    return docker(cfg, "rmi", ref)


def labels_of(ps_row: dict) -> dict[str, str]:
    """`docker ps --format json` gives labels as one "k=v,k=v" string."""
    out = {}
    for part in (ps_row.get("Labels") or "").split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out

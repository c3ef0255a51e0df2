"""Every host command a deploy runs, as exact argument lists (as Kamal's commands/*): pure, no I/O.

Web containers are named ``<app>-blue`` / ``<app>-green`` and run on the host network each on
its colour's loopback port. Workers are ``<app>-<process>-<n>-<colour>``: a release's workers
take the colour of its web container, so the old and the new release's workers run side by side
during a release and a rollback finds the previous release's by name. The release command runs
as ``<app>-release-<release id>``, removed when it ends. Every container carries labels (app,
role, colour, release, version, digest, process) so the host alone tells what runs there.

Volumes are host directories ``<root>/<app>/volumes/<name>`` bind-mounted at the same place in
every container of the app; nothing here builds a command that deletes one.
"""

from __future__ import annotations

import math
import shlex

from ..accessories.spec import templated_keys
from ..config import Config, ProcessConfig

LABEL = "dev.ferry"
PORT = "{port}"  # in image.entrypoint / a process command: the colour's port, at container start


def with_port(argv: tuple[str, ...] | list[str], port: int) -> list[str]:
    """``{port}`` in each argument replaced with ``port``: most servers take their port as a flag
    (``uvicorn --port {port}``, ``gunicorn --bind 0.0.0.0:{port}``), not from $PORT."""
    return [a.replace(PORT, str(port)) for a in argv]


def entrypoint_override(cfg: Config, port: int) -> tuple[list[str], list[str]]:
    """(options before the image, arguments after it) that start image.entrypoint with the
    colour's port: ``--entrypoint PROG`` and the rest as the command. Nothing when the
    entrypoint has no ``{port}``: the image's own (which has image.port in its place) runs."""
    ep = cfg.image.entrypoint
    if not any(PORT in a for a in ep):
        return [], []
    argv = with_port(ep, port)
    return ["--entrypoint", argv[0]], argv[1:]
WEB, WORKER, RELEASE = "web", "worker", "release"  # dev.ferry.role


def docker(cfg: Config, *args: str) -> list[str]:
    base = [cfg.deploy.docker]
    if cfg.deploy.docker_host:
        base += ["-H", cfg.deploy.docker_host]
    return [*base, *args]


def container_name(cfg: Config, colour: str) -> str:
    return f"{cfg.app.name}-{colour}"


def worker_name(cfg: Config, process: str, n: int, colour: str) -> str:
    return f"{cfg.app.name}-{process}-{n}-{colour}"


def release_command_name(cfg: Config, release: str) -> str:
    return f"{cfg.app.name}-release-{release}"


def env_file_path(cfg: Config) -> str:
    return f"{cfg.deploy.root}/{cfg.app.name}/env"


def volumes_dir(cfg: Config) -> str:
    return f"{cfg.deploy.root}/{cfg.app.name}/volumes"


def volume_path(cfg: Config, name: str) -> str:
    return f"{volumes_dir(cfg)}/{name}"


def volume_args(cfg: Config) -> list[str]:
    """``-v host:container`` for every deploy.volumes entry, in name order."""
    out: list[str] = []
    for name in sorted(cfg.deploy.volumes):
        out += ["--volume", f"{volume_path(cfg, name)}:{cfg.deploy.volumes[name]}"]
    return out


def _app_env(cfg: Config, release: str, version: str, digest: str) -> dict[str, str]:
    # values with an accessory's {db.password} go to the env file, substituted (accessories.spec)
    templated = templated_keys(cfg)
    return {**{k: v for k, v in cfg.deploy.env.items() if k not in templated}, "FERRY_APP": cfg.app.name, "FERRY_RELEASE": release, "FERRY_VERSION": version,
            "FERRY_DIGEST": digest}


def _env_args(env: dict[str, str]) -> list[str]:
    out: list[str] = []
    for k in sorted(env):
        out += ["--env", f"{k}={env[k]}"]
    return out


def _label_args(labels: dict[str, str]) -> list[str]:
    out: list[str] = []
    for k in sorted(labels):
        out += ["--label", f"{LABEL}.{k}={labels[k]}"]
    return out


def _resource_args(cfg: Config) -> list[str]:
    r = cfg.deploy.resources
    return (["--memory", r.memory] if r.memory else []) + (["--cpus", r.cpus] if r.cpus else [])


_LOGS = ["--log-driver", "json-file", "--log-opt", "max-size=10m", "--log-opt", "max-file=3"]


def run_argv(cfg: Config, colour: str, image: str, release: str, version: str, digest: str) -> list[str]:
    d = cfg.deploy
    port = d.colours[colour]
    argv = docker(cfg, "run", "--detach", "--name", container_name(cfg, colour),
                  "--network", "host", "--restart", d.restart,
                  "--env-file", env_file_path(cfg), *_LOGS,
                  # docker stop waits this long for in-flight requests before SIGKILL
                  "--stop-timeout", str(int(d.drain_timeout)))
    argv += _env_args({**_app_env(cfg, release, version, digest), "PORT": str(port), "FERRY_COLOUR": colour})
    argv += _label_args({"app": cfg.app.name, "role": WEB, "colour": colour, "release": release,
                         "version": version, "digest": digest, "port": str(port)})
    before, after = entrypoint_override(cfg, port)
    return [*argv, *volume_args(cfg), *_resource_args(cfg), *before, image, *after]


def worker_run_argv(cfg: Config, process: str, proc: ProcessConfig, n: int, colour: str, image: str,
                    release: str, version: str, digest: str) -> list[str]:
    """One worker replica: the app's image with the process's command (``--entrypoint`` takes
    its first word, so the image's own entrypoint never prefixes it)."""
    argv = docker(cfg, "run", "--detach", "--name", worker_name(cfg, process, n, colour),
                  "--network", "host", "--restart", cfg.deploy.restart,
                  "--env-file", env_file_path(cfg), *_LOGS,
                  "--stop-timeout", str(int(proc.stop_timeout)))
    argv += _env_args({**_app_env(cfg, release, version, digest), "FERRY_COLOUR": colour,
                       "FERRY_PROCESS": process, "FERRY_REPLICA": str(n)})
    argv += _label_args({"app": cfg.app.name, "role": WORKER, "process": process, "replica": str(n),
                         "colour": colour, "release": release, "version": version, "digest": digest})
    return [*argv, *volume_args(cfg), *_resource_args(cfg), "--entrypoint", proc.command[0], image,
            *proc.command[1:]]


def release_command_argv(cfg: Config, image: str, release: str, version: str, digest: str) -> list[str]:
    """deploy.release_command in a one-off container of the new image, attached (its output is
    the step's output) and removed when it ends."""
    cmd = cfg.deploy.release_command
    argv = docker(cfg, "run", "--rm", "--name", release_command_name(cfg, release), "--network", "host",
                  "--env-file", env_file_path(cfg))
    argv += _env_args({**_app_env(cfg, release, version, digest), "FERRY_PROCESS": "release"})
    argv += _label_args({"app": cfg.app.name, "role": RELEASE, "release": release, "version": version,
                         "digest": digest})
    return [*argv, *volume_args(cfg), *_resource_args(cfg), "--entrypoint", cmd[0], image, *cmd[1:]]


def image_user_argv(cfg: Config, image: str) -> list[str]:
    """The user the image runs as (``65532:65532``, ``65532``, empty for root)."""
    return docker(cfg, "image", "inspect", "--format", "{{.Config.User}}", image)


def volumes_create_argv(cfg: Config, uid: int, gid: int) -> list[str]:
    """Every volume directory, created if missing, owned by the image's user, mode 0755.
    ``install -d`` on an existing directory only sets its owner and mode (never its contents),
    so it is idempotent; on a path that is a file it fails, before anything else changed."""
    paths = [volume_path(cfg, n) for n in sorted(cfg.deploy.volumes)]
    return ["install", "-d", "-m", "0755", "-o", str(uid), "-g", str(gid), *paths]


def volumes_size_argv(cfg: Config) -> list[str]:
    """Bytes used by each volume: ``du -sb`` prints ``<bytes>\\t<path>`` a line."""
    return ["du", "-sb", *[volume_path(cfg, n) for n in sorted(cfg.deploy.volumes)]]


def ps_argv(cfg: Config) -> list[str]:
    return docker(cfg, "ps", "--all", "--no-trunc", "--filter", f"label={LABEL}.app={cfg.app.name}",
                  "--format", "{{json .}}")


def inspect_state_argv(cfg: Config, name: str) -> list[str]:
    return docker(cfg, "inspect", "--format",
                  "{{.State.Status}}|{{.State.ExitCode}}|{{.RestartCount}}|{{index .Config.Labels \"dev.ferry.release\"}}",
                  name)


def workers_state_argv(cfg: Config, names: list[str]) -> list[str]:
    """One line per worker: name|status|exit code|restart count (the worker gate's poll)."""
    return docker(cfg, "inspect", "--format",
                  "{{.Name}}|{{.State.Status}}|{{.State.ExitCode}}|{{.RestartCount}}", *names)


def exec_argv(cfg: Config, name: str, command: tuple[str, ...]) -> list[str]:
    return docker(cfg, "exec", name, *command)


def release_label_argv(cfg: Config, name: str) -> list[str]:
    return docker(cfg, "inspect", "--format", '{{index .Config.Labels "dev.ferry.release"}}', name)


def stop_argv(cfg: Config, name: str, timeout: float | None = None) -> list[str]:
    t = int(cfg.deploy.drain_timeout if timeout is None else timeout)
    return docker(cfg, "stop", "--time", str(t), name)


def stop_many_argv(cfg: Config, names: list[str], timeout: float) -> list[str]:
    """SIGTERM, then ``timeout`` seconds before SIGKILL (a worker's stop_timeout)."""
    return docker(cfg, "stop", "--time", str(int(timeout)), *names)


def rm_argv(cfg: Config, name: str) -> list[str]:
    return docker(cfg, "rm", "--force", name)


def rm_many_argv(cfg: Config, names: list[str]) -> list[str]:
    return docker(cfg, "rm", "--force", *names)


def logs_argv(cfg: Config, name: str, tail: int = 20) -> list[str]:
    return docker(cfg, "logs", "--tail", str(tail), name)


def images_argv(cfg: Config, repository: str) -> list[str]:
    return docker(cfg, "images", "--digests", "--no-trunc", "--format", "{{json .}}", repository)


def rmi_argv(cfg: Config, ref: str) -> list[str]:
    return docker(cfg, "rmi", ref)


def port_taken_argv(port: int) -> list[str]:
    return ["ss", "-ltnpH", f"sport = :{port}"]


def labels_of(ps_row: dict) -> dict[str, str]:
    """`docker ps --format json` gives labels as one "k=v,k=v" string."""
    out = {}
    for part in (ps_row.get("Labels") or "").split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out


# --- the host around the containers: probes, nginx's drain, files, the warm colour's timer ------

def app_dirs(app_dir: str) -> list[str]:
    """The app's directories on the host (created over SFTP, as the lock's is)."""
    return [f"{app_dir}/nginx", f"{app_dir}/acme"]


def clean_temp_argv(app_dir: str) -> list[str]:
    """Half-written files an interrupted atomic write left (host.write's ``*.ferry-tmp``)."""
    return ["sh", "-c", f"rm -f {shlex.quote(app_dir)}/*.ferry-tmp {shlex.quote(app_dir)}/nginx/*.ferry-tmp"]


def remove_file_argv(path: str) -> list[str]:
    return ["rm", "-f", path]


def probe_argv(port: int, path: str, timeout: float = 3.0) -> list[str]:
    """GET a colour directly on the host; the status code on the last line."""
    return ["curl", "-sS", "-m", str(timeout), "-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}"]


GATE_SEP = "--ferry-probe--"


def gate_poll_argv(cfg: Config, name: str, port: int, path: str) -> list[str]:
    """One SSH command per health poll: the container's state, a separator, then the probe."""
    return ["sh", "-c", f"{shlex.join(inspect_state_argv(cfg, name))} 2>/dev/null; echo {GATE_SEP}; "
                        f"{shlex.join(probe_argv(port, path))}"]


def verify_argv(cfg: Config, tls: bool) -> tuple[str, list[str]]:
    """(url, argv): the health path through nginx as a user would reach it (HTTPS by the app's
    name once it has a certificate), with X-Ferry-Verify so nginx names the answering colour."""
    p = cfg.proxy
    address = "127.0.0.1" if p.listen in ("0.0.0.0", "*", "") else p.listen
    host_header = cfg.app.domain or address
    if tls:
        url = f"https://{host_header}:{p.https_port}{cfg.deploy.health.path}"
        extra = ["-k", "--resolve", f"{host_header}:{p.https_port}:{address}"]
    else:
        url = f"http://{address}:{p.http_port}{cfg.deploy.health.path}"
        extra = ["-H", f"Host: {host_header}"]
    # Connection: close makes nginx close first, so the TIME_WAIT of each poll is nginx's (on its
    # listening port), never a client port that a colour's server may need to bind later
    return url, ["curl", "-sS", "-o", "/dev/null", "-D", "-", "-m", "5", "-H", "X-Ferry-Verify: 1",
                 "-H", "Connection: close", *extra, url]


# the title of nginx's old workers still finishing what they held after a reload
DRAINING = "nginx: worker process is shutting down"


def _deadline(timeout: float) -> str:
    """Shell: ``end`` = now + ``timeout`` (whole seconds, rounded up), for a loop's bound."""
    return f"end=$(( $(date +%s) + {max(1, math.ceil(timeout))} ))"


def verify_loop_argv(cfg: Config, tls: bool, release: str, port: int, timeout: float) -> tuple[str, list[str]]:
    """(url, argv): verify_argv's request repeated on the host every 10 ms until the answer has
    a good status, names ``release`` and came from ``port``, for at most ``timeout`` seconds:
    one SSH command however long nginx takes (after a reload its master waits 100 ms before
    the old workers stop accepting, so a new connection meets either). Prints the last
    response's headers (the caller checks them again: plan.verified); exit 0 when they matched."""
    url, curl = verify_argv(cfg, tls)
    wanted = " && ".join(f"printf '%s\\n' \"$out\" | grep -qixF {shlex.quote(line)}"
                         for line in (f"x-ferry-release: {release}", f"x-ferry-upstream: 127.0.0.1:{port}"))
    script = (f"{_deadline(timeout)}; while :; do out=$({shlex.join(curl)} 2>&1 | tr -d '\\r'); "
              f"if printf '%s\\n' \"$out\" | grep -qE '^HTTP/[0-9.]+ (200|204|301|302|308)( |$)' && {wanted}; "
              f"then printf '%s\\n' \"$out\"; exit 0; fi; "
              f"if [ \"$(date +%s)\" -ge \"$end\" ]; then printf '%s\\n' \"$out\"; exit 1; fi; sleep 0.01; done")
    return url, ["sh", "-c", script]


def drain_wait_argv(timeout: float) -> list[str]:
    """Wait on the host, polling every 20 ms, until nginx's old workers (DRAINING) have exited,
    for at most ``timeout`` seconds: one SSH command instead of one per poll. Exit 0 drained,
    1 still draining. ``[n]`` keeps pgrep from matching this shell's own command line."""
    pattern = f"[{DRAINING[0]}]{DRAINING[1:]}"
    return ["sh", "-c", f"{_deadline(timeout)}; while pgrep -f {shlex.quote(pattern)} >/dev/null; "
                        f"do if [ \"$(date +%s)\" -ge \"$end\" ]; then exit 1; fi; sleep 0.02; done"]


STILL_DRAINING = "--ferry-still-draining--"


def drain_then_argv(timeout: float, then: list[str]) -> list[str]:
    """drain_wait_argv, then ``then`` (stop the old colour, or its warm timer) whatever the
    drain's outcome, as one SSH command; a drain that outlived ``timeout`` prints
    STILL_DRAINING first. The exit code is ``then``'s."""
    return ["sh", "-c", f"{shlex.join(drain_wait_argv(timeout))} || echo {STILL_DRAINING}; exec {shlex.join(then)}"]


def nginx_argv(cfg: Config, *args: str) -> list[str]:
    return [cfg.deploy.nginx, "-c", cfg.deploy.nginx_conf, *args]


NGINX_TEST_FAILED = "--ferry-nginx-test-failed--"


def test_reload_argv(cfg: Config) -> list[str]:
    """``nginx -t`` and, only when it passes, the reload, in one SSH command. A failed test
    prints NGINX_TEST_FAILED on stdout (nginx's own message is on stderr), so the caller tells
    it (restore the old files) from a failed reload."""
    return ["sh", "-c", f"{shlex.join(nginx_argv(cfg, '-t', '-q'))} || {{ echo {NGINX_TEST_FAILED}; exit 1; }}; "
                        f"exec {shlex.join(nginx_argv(cfg, '-s', 'reload'))}"]


OBSERVE_SEP = "--ferry-observe--"


def observe_argv(cfg: Config) -> list[str]:
    """What a plan needs from the host besides its files, in one SSH command: the app's
    containers (``docker ps``, its exit code on the separator line after it), then each
    colour's health probe in colour order, each after a separator (plan.parse_observe). The
    probes run while docker ps does (into a temp file, printed after it)."""
    probes = "; ".join(f"echo {OBSERVE_SEP}; {shlex.join(probe_argv(cfg.deploy.colours[c], cfg.deploy.health.path))}"
                       for c in sorted(cfg.deploy.colours))
    return ["sh", "-c", f"p=$(mktemp) || exit 1; {{ {probes}; }} >\"$p\" 2>/dev/null & "
                        f"{shlex.join(ps_argv(cfg))} 2>&1; echo {OBSERVE_SEP} $?; wait; cat \"$p\"; rm -f \"$p\""]


def schedule_stop_argv(cfg: Config, name: str, release: str, port: int, upstream_path: str, after: float) -> list[str]:
    """A detached host-side timer: after ``after`` seconds it stops ``name`` unless its colour is
    live again (the upstream names its port) or it was replaced (its release label changed)."""
    inspect = shlex.join(release_label_argv(cfg, name))
    script = (f"sleep {int(after)}; "
              f"grep -q 'server 127.0.0.1:{port} ' {shlex.quote(upstream_path)} && exit 0; "
              f"[ \"$({inspect} 2>/dev/null)\" = {shlex.quote(release)} ] || exit 0; "
              f"{shlex.join(stop_argv(cfg, name))}")
    return ["sh", "-c", f"setsid sh -c {shlex.quote(script)} </dev/null >/dev/null 2>&1 &"]

"""Every host command an accessory needs, as exact argv lists (pure; tests compare them whole).

``docker`` is the prefix from ``deploy.docker`` / ``deploy.docker_host``. No argv ever holds
a password: the server reads its file, the Redis client gets it through ``REDISCLI_AUTH``
set inside the container by a shell that reads the same file.
"""

from __future__ import annotations

import hashlib
import json
import shlex

from .spec import LOOPBACK, PASSWORD_IN_CONTAINER, Accessory, Exporter

LABEL = "dev.ferry.accessory"
STOP_TIMEOUT = 60  # PostgreSQL's fast shutdown checkpoints first; give it time before SIGKILL

# a Redis client inside the container, authenticated without the password in any argv
_REDIS_AUTH = f'p=; read -r p < {PASSWORD_IN_CONTAINER} || true; export REDISCLI_AUTH="$p"; exec "$@"'


def server_env(acc: Accessory) -> dict[str, str]:
    """The container's environment: where the server listens and who the clients are by
    default (so `exec db psql` and pg_dump need no flags). No secret is in it."""
    if acc.kind == "postgres":
        return {"PGPORT": str(acc.port), "PGUSER": acc.user or "", "PGDATABASE": acc.database or "",
                "PGHOST": "/tmp"}
    if acc.kind == "redis":
        return {"REDIS_PORT": str(acc.port)}
    return dict(acc.env)


def spec_hash(acc: Accessory, image_ref: str) -> str:
    """What the container is made of (image digest included): a change means `reboot` has
    something to do."""
    doc = {"image": image_ref, "env": server_env(acc), "port": acc.port, "uid": acc.uid, "stop": "SIGINT",
           "mount": acc.mount, "command": list(acc.command), "volume": acc.volume_dir}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def run_argv(docker: tuple[str, ...], acc: Accessory, image_ref: str) -> list[str]:
    """``image_ref`` is the pinned repo@sha256:... the host resolved."""
    digest = image_ref.rsplit("@", 1)[-1] if "@" in image_ref else ""
    argv = [*docker, "run", "--detach", "--name", acc.container,
            "--network", "host", "--restart", "unless-stopped",
            "--log-driver", "json-file", "--log-opt", "max-size=10m", "--log-opt", "max-file=3",
            "--stop-timeout", str(STOP_TIMEOUT),
            "--label", f"{LABEL}={acc.name}",
            "--label", f"{LABEL}.app={acc.app}",
            "--label", f"{LABEL}.kind={acc.kind}",
            "--label", f"{LABEL}.digest={digest}",
            "--label", f"{LABEL}.spec={spec_hash(acc, image_ref)}"]
    if acc.kind in ("postgres", "redis"):
        # the built images write only their volume and /tmp
        if acc.kind == "postgres":
            # SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client (the app's
            # pool, the exporter) to leave: docker stop would then wait its whole timeout and
            # SIGKILL. SIGINT is the fast shutdown: clients cut, a checkpoint, a clean stop.
            argv += ["--stop-signal", "SIGINT"]
        argv += ["--read-only", "--tmpfs", "/tmp:rw,size=64m",
                 "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                 "--user", f"{acc.uid}:{acc.uid}",
                 "--volume", f"{acc.volume_dir}:{acc.mount}",
                 "--volume", f"{acc.password_file}:{PASSWORD_IN_CONTAINER}:ro"]
    elif acc.mount:
        argv += ["--volume", f"{acc.volume_dir}:{acc.mount}"]
    env = server_env(acc)
    for k in sorted(env):
        argv += ["--env", f"{k}={env[k]}"]
    return [*argv, image_ref, *acc.command]


def prepare_argv(acc: Accessory) -> list[str]:
    """The volume and the password's directory, owned by the server's uid; the data dir 0700
    (PostgreSQL refuses a group- or world-readable one). One command, idempotent."""
    d = acc.volume_dir
    steps = [["mkdir", "-p", d, acc.backups_dir]]
    if acc.password_file:
        steps.append(["mkdir", "-p", "-m", "0700", acc.password_file.rsplit("/", 1)[0]])
    if acc.uid is not None:
        steps += [["chown", f"{acc.uid}:{acc.uid}", d], ["chmod", "0700", d]]
    return ["sh", "-c", "set -e; " + "; ".join(shlex.join(s) for s in steps)]


def chown_password_argv(acc: Accessory) -> list[str]:
    return ["chown", f"{acc.uid}:{acc.uid}", acc.password_file or ""]


def inspect_argv(docker: tuple[str, ...], acc: Accessory) -> list[str]:
    """One line: status|running|startedAt|digest|spec|restarts (empty output: no container)."""
    fmt = ("{{.State.Status}}|{{.State.Running}}|{{.State.StartedAt}}|"
           f'{{{{index .Config.Labels "{LABEL}.digest"}}}}|{{{{index .Config.Labels "{LABEL}.spec"}}}}|'
           "{{.RestartCount}}")
    return [*docker, "inspect", "--format", fmt, acc.container]


def data_version_argv(acc: Accessory) -> list[str]:
    """PostgreSQL's major that made the data directory (empty when there is none yet)."""
    return ["sh", "-c", f"cat {shlex.quote(acc.volume_dir + '/pgdata/PG_VERSION')} 2>/dev/null || true"]


def health_argv(docker: tuple[str, ...], acc: Accessory) -> tuple[list[str], str]:
    """(argv, text the output must contain; "" = exit code 0 is enough)."""
    if acc.kind == "postgres":
        return ([*docker, "exec", acc.container, "pg_isready", "--quiet", "--host", LOOPBACK,
                 "--port", str(acc.port), "--username", acc.user or "", "--dbname", acc.database or ""], "")
    if acc.kind == "redis":
        return ([*docker, "exec", acc.container, "sh", "-c", _REDIS_AUTH, "sh",
                 "redis-cli", "-h", LOOPBACK, "-p", str(acc.port), "ping"], "PONG")
    return ([*docker, "inspect", "--format", "{{.State.Running}}", acc.container], "true")


def exec_argv(docker: tuple[str, ...], acc: Accessory, args: list[str], interactive: bool = False) -> list[str]:
    """A command in the accessory's container; with no args, its client (psql / redis-cli)."""
    flags = ["--interactive"] if interactive else []
    if acc.kind == "postgres":
        return [*docker, "exec", *flags, acc.container, *(args or ["psql"])]
    if acc.kind == "redis":
        cmd = args or ["redis-cli"]
        if cmd[0] == "redis-cli" and not any(a in ("-p", "--port") for a in cmd):
            cmd = [cmd[0], "-h", LOOPBACK, "-p", str(acc.port), *cmd[1:]]
        return [*docker, "exec", *flags, acc.container, "sh", "-c", _REDIS_AUTH, "sh", *cmd]
    return [*docker, "exec", *flags, acc.container, *(args or ["sh"])]


def stop_argv(docker: tuple[str, ...], acc: Accessory) -> list[str]:
    return [*docker, "stop", "--time", str(STOP_TIMEOUT), acc.container]


def rm_argv(docker: tuple[str, ...], acc: Accessory) -> list[str]:
    return [*docker, "rm", "--force", acc.container]


def start_argv(docker: tuple[str, ...], acc: Accessory) -> list[str]:
    return [*docker, "start", acc.container]


def logs_argv(docker: tuple[str, ...], acc: Accessory, tail: int = 100) -> list[str]:
    return [*docker, "logs", "--tail", str(tail), acc.container]


# --- backups --------------------------------------------------------------------------------

def backup_argv(docker: tuple[str, ...], acc: Accessory, file_name: str) -> list[str]:
    """pg_dump's custom format into a temp file, renamed when complete: a dump that failed
    half way never looks like a backup. pg_dump reads one snapshot (REPEATABLE READ), so a
    dump taken while the app writes is consistent."""
    final = f"{acc.backups_dir}/{file_name}"
    tmp = f"{acc.backups_dir}/.{file_name}.partial"
    dump = shlex.join([*docker, "exec", acc.container, "pg_dump", "--format=custom",
                       "--dbname", acc.database or ""])
    return ["sh", "-c", f"set -e; umask 077; trap 'rm -f {shlex.quote(tmp)}' EXIT; "
                        f"{dump} > {shlex.quote(tmp)}; mv {shlex.quote(tmp)} {shlex.quote(final)}; "
                        f"stat -c %s {shlex.quote(final)}"]


def list_backups_argv(acc: Accessory) -> list[str]:
    return ["sh", "-c", f"ls -1 {shlex.quote(acc.backups_dir)} 2>/dev/null || true"]


def remove_argv(paths: list[str]) -> list[str]:
    return ["rm", "-f", "--", *paths]


def restore_argv(docker: tuple[str, ...], acc: Accessory, path: str) -> list[str]:
    """pg_restore in one transaction: a restore that fails leaves the database as it was."""
    restore = shlex.join([*docker, "exec", "--interactive", acc.container, "pg_restore", "--clean", "--if-exists",
                          "--no-owner", "--single-transaction", "--exit-on-error",
                          "--dbname", acc.database or ""])
    return ["sh", "-c", f"{restore} < {shlex.quote(path)}"]


# --- postgres_exporter (monitoring) -----------------------------------------------------------

def exporter_run_argv(docker: tuple[str, ...], acc: Accessory, ex: Exporter, image_ref: str) -> list[str]:
    """The DSN names no password: the exporter reads the accessory's password file."""
    return [*docker, "run", "--detach", "--name", ex.container,
            "--network", "host", "--restart", "unless-stopped",
            "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--user", f"{acc.uid}:{acc.uid}",
            "--log-driver", "json-file", "--log-opt", "max-size=10m", "--log-opt", "max-file=3",
            "--label", f"{LABEL}.exporter={acc.name}",
            "--label", f"{LABEL}.app={acc.app}",
            "--label", f"{LABEL}.spec={exporter_hash(acc, ex, image_ref)}",
            "--volume", f"{acc.password_file}:{PASSWORD_IN_CONTAINER}:ro",
            "--env", f"DATA_SOURCE_URI={LOOPBACK}:{acc.port}/{acc.database}?sslmode=disable",
            "--env", f"DATA_SOURCE_USER={acc.user}",
            "--env", f"DATA_SOURCE_PASS_FILE={PASSWORD_IN_CONTAINER}",
            image_ref, f"--web.listen-address={LOOPBACK}:{ex.port}"]


def exporter_hash(acc: Accessory, ex: Exporter, image_ref: str) -> str:
    doc = {"image": image_ref, "port": ex.port, "db": [acc.port, acc.database, acc.user, acc.uid]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def exporter_inspect_argv(docker: tuple[str, ...], ex: Exporter) -> list[str]:
    fmt = ("{{.State.Status}}|{{.State.Running}}|{{.State.StartedAt}}||"
           f'{{{{index .Config.Labels "{LABEL}.spec"}}}}|{{{{.RestartCount}}}}')
    return [*docker, "inspect", "--format", fmt, ex.container]


def exporter_health_argv(ex: Exporter) -> list[str]:
    """pg_up 1 on its metrics page: the exporter runs and reaches the database."""
    return ["sh", "-c", f"curl -fsS --max-time 5 http://{LOOPBACK}:{ex.port}/metrics | grep -qx 'pg_up 1'"]


def exporter_rm_argv(docker: tuple[str, ...], ex: Exporter) -> list[str]:
    return [*docker, "rm", "--force", ex.container]


def scrape_target(acc: Accessory, ex: Exporter) -> str:
    """The exporter as a file_sd target for the stack's Prometheus (its `apps` job reads
    targets/*.json; the labels here name the job)."""
    doc = [{"targets": [f"{LOOPBACK}:{ex.port}"],
            "labels": {"job": ex.job, "app": acc.app, "accessory": acc.name}}]
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"

"""`ferry accessory up|down|reboot|status|logs|exec|backup|restore` on the accessory's host,
over SSH (Fabric, ferry/deploy/host.py).

Each command observes the host (docker inspect, the data directory's PG_VERSION, whether
the password file exists), asks ``plan.decide`` what to do, and runs the steps. A health gate
(``pg_isready`` / ``redis-cli ping`` through ``docker exec``) ends every start. The password is
generated here once (``secrets``), written over SFTP with its mode set before any byte, and
never printed, logged or put in an argv. ``app_env`` is what the deploy calls to put the
connection URL into the app's 0600 env file.
"""

from __future__ import annotations

import json
import os
import secrets as _secrets
import shlex
import tempfile
import time
from datetime import datetime, timezone

from ..config import Config, textfile_dir
from ..deploy import docker as D
from ..errors import AccessoryError, ConfigError, HostError
from ..progress import NULL, Progress
from . import argv as A
from .plan import Facts, Observed, Plan, decide, decide_exporter, rotation
from .spec import DEFAULT_PREFIX, RUNS_HERE, Accessory, Exporter, accessory, env_for, exporter, needed, runs_on

HEALTH_TIMEOUT = 90.0
PASSWORD_BYTES = 24  # 32 URL-safe characters: no quoting anywhere (URL, redis.conf, pwfile)


def docker_prefix(cfg: Config) -> tuple[str, ...]:
    return tuple(D.docker(cfg))


def image_home(cfg: Config, progress: Progress = NULL) -> tuple[str | None, str]:
    """(registry, prefix) of the built images: the stack's ECR and its monitoringPrefix when the
    hosts come from a stack, else the app's registry and "ferry"."""
    if cfg.deploy.hosts or not (cfg.deploy.stack or cfg.deploy.stack_outputs):
        return None, DEFAULT_PREFIX
    from ..aws import stack

    out = stack.read_outputs(cfg, progress=progress)
    registry = (out.registry_url or "").split("/", 1)[0] or None
    prefix = out.raw.get("monitoringPrefix") or (out.registry_url or "").partition("/")[2] or DEFAULT_PREFIX
    return registry, prefix


def resolve(cfg: Config, name: str, home: tuple[str | None, str] = (None, DEFAULT_PREFIX)) -> Accessory:
    return accessory(cfg, name, *home)


def _target(cfg: Config, acc: Accessory, progress: Progress):
    from ..fleet.hosts import resolve_hosts

    targets = resolve_hosts(cfg, progress)
    for t in targets:
        if runs_on(acc.host, cfg.deploy.hosts, str(t.spec)) or (acc.host is None and t is targets[0]):
            return t
    raise AccessoryError(f"accessories.{acc.name}.host: {acc.host} is not one of the hosts "
                         f"({', '.join(str(t) for t in targets)})", "name one of deploy.hosts, or remove the key")


class AccessoryHost:
    """One accessory on its host."""

    def __init__(self, host, cfg: Config, acc: Accessory, progress: Progress = NULL,
                 home: tuple[str | None, str] = (None, DEFAULT_PREFIX)):
        self.host = host
        self.cfg = cfg
        self.acc = acc
        self.progress = progress
        self.docker = docker_prefix(cfg)
        self.home = home
        self.exporter: Exporter | None = None  # set by monitor(): only up/reboot need its image

    def step(self, msg: str) -> None:
        self.progress.step(msg, host=self.host.name)

    # what the host shows -------------------------------------------------------------------

    def observe(self) -> Observed | None:
        r = self.host.run(A.inspect_argv(self.docker, self.acc))
        return Observed.parse(r.stdout) if r.ok else None

    def facts(self) -> Facts:
        data_version = None
        if self.acc.kind == "postgres":
            r = self.host.check(A.data_version_argv(self.acc), "read the data directory's PG_VERSION")
            data_version = r.stdout.strip() or None
        has_pw = bool(self.acc.password_file) and self.host.size(self.acc.password_file) > 0
        return Facts(self.observe(), data_version, has_pw)

    def pull(self, ref: str | None = None) -> str:
        """Pull the image on the host and return it pinned: repository@sha256:..."""
        from ..fleet.credentials import registry_credentials

        ref = ref or self.acc.image
        repo = ref.split("@", 1)[0]
        if ":" in repo.rsplit("/", 1)[-1]:
            repo = repo.rsplit(":", 1)[0]
        docker = shlex.join(self.docker)
        inspect = f"{docker} image inspect --format '{{{{json .RepoDigests}}}}' {shlex.quote(ref)}"
        pull = f"{docker} pull --quiet {shlex.quote(ref)} >/dev/null"
        if "@sha256:" in ref:  # a pinned image already on the host cannot have changed
            pull = f"{inspect} >/dev/null 2>&1 || {pull}"
        stdin = None
        creds = registry_credentials(self.cfg, ref)
        if creds:
            user, password = creds
            d = shlex.join([*self.docker, "--config", "DIR"]).replace("DIR", '"$d"')
            pull = ("d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT; chmod 700 \"$d\"; "
                    f"{d} login --username {shlex.quote(user)} --password-stdin "
                    f"{shlex.quote(ref.split('/', 1)[0])} >/dev/null; " + pull.replace(docker + " pull", d + " pull"))
            stdin = password + "\n"
        r = self.host.run(["sh", "-c", f"set -e; {pull}; {inspect}"], stdin=stdin)
        if not r.ok:
            raise AccessoryError(f"{self.host.name}: pull of {ref} failed: {(r.stderr or r.stdout).strip()[-300:]}",
                                 "`ferry accessory images --push` builds and pushes the images; or set "
                                 f"accessories.{self.acc.name}.image to where yours is")
        if "@sha256:" in ref:
            return ref
        for d in json.loads(r.stdout.strip().splitlines()[-1] or "[]"):
            if d.split("@", 1)[0] == repo:
                return d
        raise AccessoryError(f"{self.host.name}: {ref} has no digest after the pull",
                             "push it to the registry first: `ferry accessory images --push`")

    # doing ----------------------------------------------------------------------------------

    def apply(self, plan: Plan) -> None:
        for s in plan.steps:
            self.step(s.name)
            if s.kind == "password":
                self.write_password()
            elif s.kind == "health":
                self.health_gate()
            elif s.kind == "exporter-health":
                self.exporter_gate()
            else:
                self.host.check(list(s.argv), s.name)

    def write_password(self) -> None:
        """Generated here, written 0600 over SFTP (mode set before the first byte), then given
        to the server's uid: the container reads it; nothing prints it."""
        acc = self.acc
        self.host.write(acc.password_file, _secrets.token_urlsafe(PASSWORD_BYTES), mode="0600")
        self.host.check(A.chown_password_argv(acc), "give the password file to the server's uid")

    def healthy(self) -> bool:
        argv, expect = A.health_argv(self.docker, self.acc)
        r = self.host.run(argv, timeout=15)
        return r.ok and (not expect or expect in r.stdout)

    def health_gate(self, timeout: float = HEALTH_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.healthy():
                return
            c = self.observe()
            if c is None or c.status in ("exited", "dead") or time.monotonic() > deadline:
                logs = self.host.run(A.logs_argv(self.docker, self.acc, 30))
                tail = (logs.stdout + logs.stderr).strip()[-1500:]
                why = "exited" if c is not None and c.status in ("exited", "dead") else \
                    ("is gone" if c is None else f"did not answer in {timeout:.0f}s")
                raise AccessoryError(f"{self.host.name}: {self.acc.container} {why}; its last logs:\n{tail}",
                                     f"`ferry accessory logs {self.acc.name}`; the data in {self.acc.volume_dir} "
                                     "is untouched")
            time.sleep(0.5)

    def run_action(self, action: str) -> dict:
        if action != "down":
            exporter(self.cfg, self.acc, *self.home)  # an unnamed exporter image: an error before any change
        facts = self.facts()
        # refusals (another PostgreSQL major, a lost password) come before any pull
        plan = decide(action, facts, self.acc, self.acc.image, self.docker)
        if plan.refused:
            raise AccessoryError(plan.refused, plan.hint)
        pinned = self.acc.image
        if action != "down":
            pinned = self.pull()
            plan = decide(action, facts, self.acc, pinned, self.docker)
        if not plan.changes:
            self.progress.info(f"{self.acc.container}: {plan.note}", host=self.host.name)
        self.apply(plan)
        monitored = self.monitor(action)
        after = self.observe() if action != "down" else None
        return {"host": self.host.name, "accessory": self.acc.name, "container": self.acc.container,
                "action": action, "changed": plan.changes or bool(monitored), "note": plan.note, "image": pinned,
                "steps": [s.name for s in plan.steps] + monitored, "started": after.started if after else None}

    # monitoring -----------------------------------------------------------------------------

    def monitor(self, action: str) -> list[str]:
        """postgres_exporter beside the database and its scrape target, when [monitoring] is on
        (removed again when it is off or the database goes down)."""
        acc = self.acc
        if acc.kind != "postgres":
            return []
        try:
            ex = self.exporter = exporter(self.cfg, acc, *self.home)
        except ConfigError:
            if action != "down":
                raise
            ex = None  # removing it needs no image
        probe = ex or Exporter(f"{acc.container}-exporter", "", 0)
        current = Observed.parse(self.host.run(A.exporter_inspect_argv(self.docker, probe)).stdout)
        pinned = self.pull(ex.image) if ex is not None and action != "down" else ""
        steps = decide_exporter(action, current, acc, ex, pinned, self.docker)
        self.apply(Plan(action, steps))
        done = [s.name for s in steps]
        if not self.cfg.monitoring.enabled:
            return done
        from ..monitoring.settings import settings

        target = f"{settings(self.cfg, self.host.name).targets_dir}/{acc.app}-{acc.name}.json"
        if ex is not None and action != "down":
            text = A.scrape_target(acc, ex)
            if self.host.read(target) != text:
                self.host.mkdir(target.rsplit("/", 1)[0], parents=True)
                self.host.write(target, text, mode="0644")
                done.append(f"scrape target {target}")
        elif self.host.size(target):
            self.host.remove(target)
            done.append(f"remove scrape target {target}")
        return done

    def exporter_gate(self, timeout: float = 60.0) -> None:
        ex = self.exporter
        deadline = time.monotonic() + timeout
        while not self.host.run(A.exporter_health_argv(ex), timeout=15).ok:
            if time.monotonic() > deadline:
                logs = self.host.run([*self.docker, "logs", "--tail", "20", ex.container])
                raise AccessoryError(f"{self.host.name}: {ex.container} does not report pg_up 1 after "
                                     f"{timeout:.0f}s: {(logs.stdout + logs.stderr).strip()[-800:]}",
                                     "the database runs; check the exporter's image and the password file")
            time.sleep(0.5)

    def status(self) -> dict:
        f = self.facts()
        c = f.container
        healthy = bool(c and c.running and self.healthy())
        backups = self.backups()
        return {"host": self.host.name, "accessory": self.acc.name, "kind": self.acc.kind,
                "container": self.acc.container, "port": self.acc.port, "image": self.acc.image,
                "state": c.status if c else "absent", "running": bool(c and c.running),
                "started": c.started if c else None, "digest": c.digest if c else None,
                "restarts": c.restarts if c else 0, "healthy": healthy, "data_version": f.data_version,
                "password_file": self.acc.password_file if f.password else None, "volume": self.acc.volume_dir,
                "backups": len(backups), "latest_backup": backups[-1] if backups else None}

    # backups --------------------------------------------------------------------------------

    def backups(self) -> list[str]:
        r = self.host.run(A.list_backups_argv(self.acc))
        files = r.stdout.split() if r.ok else []
        return sorted(f for f in files if f.startswith(self.acc.name + "-") and f.endswith(".dump"))

    def backup(self, now: datetime | None = None) -> dict:
        acc = self.acc
        if acc.kind != "postgres":
            raise AccessoryError(f"accessories.{acc.name}: backups are for kind postgres (this is {acc.kind})",
                                 "Redis keeps its append-only file in the volume; copy the volume instead")
        c = self.observe()
        if c is None or not c.running:
            raise AccessoryError(f"{self.host.name}: {acc.container} is not running, nothing to back up",
                                 f"`ferry accessory up {acc.name}` first")
        now = now or datetime.now(timezone.utc)
        name = f"{acc.name}-{now.strftime('%Y%m%dT%H%M%S')}{now.microsecond // 1000:03d}Z.dump"
        self.host.check(A.prepare_argv(acc), "create the backups directory")
        self.step(f"pg_dump {acc.database} -> {acc.backups_dir}/{name}")
        r = self.host.check(A.backup_argv(self.docker, acc, name), "pg_dump",
                            f"`ferry accessory logs {acc.name}`; the database is unchanged")
        size = int(r.stdout.strip().splitlines()[-1])
        path = f"{acc.backups_dir}/{name}"
        pruned = rotation(self.backups(), acc.name, self.cfg.accessories[acc.name].backup.keep)
        if pruned:
            self.step(f"rotate: remove {len(pruned)} old backup(s)")
            self.host.check(A.remove_argv([f"{acc.backups_dir}/{f}" for f in pruned]), "remove old backups")
        uploaded = self.upload(path, name)
        self.record_metric(now, size)
        return {"host": self.host.name, "accessory": acc.name, "file": path, "bytes": size,
                "removed": pruned, "s3": uploaded, "time": now.isoformat()}

    def upload(self, path: str, name: str) -> str | None:
        b = self.cfg.accessories[self.acc.name].backup
        if not b.s3_bucket:
            return None
        from ..aws import session

        key = f"{b.s3_prefix}{self.acc.app}/{self.acc.name}/{name}"
        self.step(f"upload to s3://{b.s3_bucket}/{key}")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        with tempfile.TemporaryDirectory(prefix="ferry-backup-") as tmp:
            local = os.path.join(tmp, name)
            try:
                self.host.sftp().get(path, local)
            except OSError as e:
                raise HostError(f"{self.host.name}: cannot read {path}: {e}", "the dump is still on the host") from None
            s3 = session.client("s3", region)
            session.call(f"upload {name} to s3://{b.s3_bucket}", s3.upload_file, Filename=local, Bucket=b.s3_bucket,
                         Key=key, ExtraArgs={"ServerSideEncryption": "AES256"})
        return f"s3://{b.s3_bucket}/{key}"

    def record_metric(self, when: datetime, size: int) -> None:
        """The last good backup's time, for the "backup older than a day" alert (node_exporter's
        textfile collector reads it)."""
        m = self.cfg.monitoring
        if not m.enabled:
            return
        d = textfile_dir(m, self.cfg.deploy.root)
        self.host.mkdir(d, parents=True)
        self.host.write(f"{d}/ferry_accessory_{self.acc.app}_{self.acc.name}.prom",
                        backup_metrics(self.acc, when.timestamp(), size), mode="0644")

    def restore(self, file: str) -> dict:
        acc = self.acc
        if acc.kind != "postgres":
            raise AccessoryError(f"accessories.{acc.name}: restore is for kind postgres", "")
        if file == "latest":
            files = self.backups()
            if not files:
                raise AccessoryError(f"{self.host.name}: no backups in {acc.backups_dir}",
                                     f"`ferry accessory backup {acc.name}` makes one")
            file = files[-1]
        path = file if file.startswith("/") else f"{acc.backups_dir}/{file}"
        if self.host.size(path) == 0:
            raise AccessoryError(f"{self.host.name}: {path} does not exist or is empty; nothing was changed",
                                 f"`ferry accessory status {acc.name}` shows the latest backup; "
                                 f"files live in {acc.backups_dir}")
        c = self.observe()
        if c is None or not c.running:
            raise AccessoryError(f"{self.host.name}: {acc.container} is not running",
                                 f"`ferry accessory up {acc.name}` first")
        self.step(f"pg_restore {path} -> {acc.database}")
        self.host.check(A.restore_argv(self.docker, acc, path), "pg_restore",
                        "the restore ran in one transaction: the database is as it was before")
        return {"host": self.host.name, "accessory": acc.name, "restored": path, "database": acc.database}


def backup_metrics(acc: Accessory, timestamp: float, size: int) -> str:
    """Prometheus text format (pure)."""
    labels = f'app="{acc.app}",accessory="{acc.name}"'
    return ("# HELP ferry_accessory_backup_last_success_timestamp_seconds When the accessory's last backup "
            "completed (Unix time).\n"
            "# TYPE ferry_accessory_backup_last_success_timestamp_seconds gauge\n"
            f"ferry_accessory_backup_last_success_timestamp_seconds{{{labels}}} {timestamp:.3f}\n"
            "# HELP ferry_accessory_backup_size_bytes Size of the accessory's last backup.\n"
            "# TYPE ferry_accessory_backup_size_bytes gauge\n"
            f"ferry_accessory_backup_size_bytes{{{labels}}} {size}\n")


# --- the commands ---------------------------------------------------------------------------

def _on_host(cfg: Config, name: str, progress: Progress, fn):
    from ..fleet.connect import connect

    a = cfg.accessories.get(name)
    home = (None, DEFAULT_PREFIX) if a is not None and a.image and not cfg.monitoring.enabled else \
        image_home(cfg, progress)
    acc = resolve(cfg, name, home)
    target = _target(cfg, acc, progress)
    with connect(cfg, target, progress) as host:
        return fn(AccessoryHost(host, cfg, acc, progress, home))


def up(cfg: Config, name: str, progress: Progress = NULL) -> dict:
    return _on_host(cfg, name, progress, lambda h: h.run_action("up"))


def reboot(cfg: Config, name: str, progress: Progress = NULL) -> dict:
    return _on_host(cfg, name, progress, lambda h: h.run_action("reboot"))


def down(cfg: Config, name: str, progress: Progress = NULL) -> dict:
    return _on_host(cfg, name, progress, lambda h: h.run_action("down"))


def status(cfg: Config, name: str | None = None, progress: Progress = NULL) -> dict:
    names = [name] if name else [n for n in sorted(cfg.accessories) if cfg.accessories[n].kind in RUNS_HERE]
    out = [_on_host(cfg, n, progress, lambda h: h.status()) for n in names]
    return {"ok": all(a["healthy"] for a in out), "accessories": out}


def logs(cfg: Config, name: str, tail: int = 100, progress: Progress = NULL) -> str:
    def fn(h: AccessoryHost) -> str:
        r = h.host.run(A.logs_argv(h.docker, h.acc, tail))
        if not r.ok and "No such container" in r.stderr:
            raise AccessoryError(f"{h.host.name}: {h.acc.container} does not exist", f"`ferry accessory up {name}`")
        return r.stdout + r.stderr

    return _on_host(cfg, name, progress, fn)


def exec_(cfg: Config, name: str, args: list[str], stdin: str | None = None, progress: Progress = NULL):
    def fn(h: AccessoryHost):
        return h.host.run(A.exec_argv(h.docker, h.acc, args, interactive=stdin is not None), stdin=stdin)

    return _on_host(cfg, name, progress, fn)


def backup(cfg: Config, name: str, progress: Progress = NULL) -> dict:
    return _on_host(cfg, name, progress, lambda h: h.backup())


def restore(cfg: Config, name: str, file: str, progress: Progress = NULL) -> dict:
    return _on_host(cfg, name, progress, lambda h: h.restore(file))


# --- what the deploy calls --------------------------------------------------------------------

def app_env(cfg: Config, host) -> dict[str, str]:
    """The app's env from its accessories on ``host`` (a connected Host): each ``url_env`` and
    each deploy.env value with ``{NAME.FIELD}`` placeholders, with the password read from the
    host's 0600 file. Empty when no accessory is wanted (no SSH round trip)."""
    names = needed(cfg)
    if not names:
        return {}
    passwords = {}
    for n in names:
        a = cfg.accessories[n]
        if not runs_on(a.host, cfg.deploy.hosts, host.name):
            raise AccessoryError(f"accessories.{n} runs on {a.host or cfg.deploy.hosts[0]}, and the app on "
                                 f"{host.name} cannot reach it at 127.0.0.1",
                                 "run the app and its accessories on one host, or use kind = \"rds\"")
        path = f"{cfg.deploy.root.rstrip('/')}/{cfg.app.name}/accessories/{n}.password"
        pw = (host.read(path) or "").strip()
        if not pw:
            raise AccessoryError(f"{host.name}: accessories.{n} has no password yet ({path})",
                                 f"`ferry accessory up {n}` starts it and generates one; then deploy again")
        passwords[n] = pw
    return env_for(cfg, passwords)

"""``ferry monitoring up | down | status | open``: the stack on each host, over SSH.

``up`` on one host, in an order where a failure leaves the running stack as it was:
  render everything locally (templates, rules, dashboards, secrets from the environment)
  -> pull each image and pin it by digest -> stage the configs in a scratch directory and
  check them with the host's own promtool and amtool (inside the images) -> copy only the
  files that changed into place, each atomically -> write secrets (0400, owned by the
  component's user) -> create, replace, reload (SIGHUP) or leave each container, from a
  hash of its spec -> wait until every component answers on loopback.
A second ``up`` with nothing changed changes nothing and says so.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import tarfile
import time
from dataclasses import dataclass

from ..config import Config
from ..deploy import docker as D
from ..errors import ConfigError, FerryError, HostError
from ..fleet.argv import pull_argv
from ..fleet.connect import for_each_host
from ..fleet.credentials import registry_credentials
from ..fleet.hosts import resolve_hosts, select
from ..progress import NULL, Progress
from . import render
from .settings import LOOPBACK, Settings, settings as resolve_settings
from .stack import LABEL, ContainerSpec, decide, specs
from .targets import Slot, live_colour_of, parse_ps, slots_from_ps, targets_json

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
COMPONENTS = ("prometheus", "alertmanager", "node_exporter", "nginx_exporter", "blackbox_exporter", "grafana")
GRAFANA_MIN_PASSWORD = 12
HEALTH_TIMEOUT = 60.0


# --- what to run (pure) ------------------------------------------------------------------------

def images_of(cfg: Config) -> dict[str, str]:
    imgs = cfg.monitoring.images
    return {c: getattr(imgs, c) for c in COMPONENTS if getattr(imgs, c)}


def is_loopback(hostname: str) -> bool:
    return hostname in LOOPBACK_HOSTS or hostname.startswith("127.")


def check_pinned(images: dict[str, str], hostnames: list[str]) -> None:
    """A production host runs exactly what was tested: every image pinned by digest. Loopback
    hosts (the local target) may use tags, resolved to a digest at `up` time either way."""
    remote = [h for h in hostnames if not is_loopback(h)]
    if not remote:
        return
    for component, ref in images.items():
        if "@sha256:" not in ref:
            raise ConfigError(
                f"monitoring.images.{component}: {ref!r} is not pinned by digest (host {remote[0]} is not local)",
                "use repo@sha256:...; `ferry monitoring images --push --json` prints the pinned references")


@dataclass(frozen=True)
class Secret:
    path: str
    value: str
    owner: str


def secrets_of(cfg: Config, s: Settings, environ: dict[str, str], grafana: bool) -> list[Secret]:
    """Secret files from the environment variables the config names; a missing one is an error
    before any host is touched."""
    a = cfg.monitoring.alerts
    out: list[Secret] = []

    def need(var: str, what: str) -> str:
        v = environ.get(var, "")
        if not v:
            raise ConfigError(f"{what}: the environment variable {var} is not set",
                              f"export {var}=... (it is copied to the host as a 0400 file, never logged)")
        return v

    if a.receiver == "email" and a.smtp_username:
        out.append(Secret(f"{s.secrets}/alertmanager/smtp_password",
                          need(a.smtp_password_env or "", "monitoring.alerts.smtp_password_env"), "65534:65534"))
    if a.receiver == "slack":
        url = need(a.slack_webhook_env, "monitoring.alerts.slack_webhook_env")
        if not url.startswith("https://"):
            raise ConfigError(f"{a.slack_webhook_env}: the Slack webhook must be an https:// URL",
                              "copy the webhook URL from Slack's app settings")
        out.append(Secret(f"{s.secrets}/alertmanager/slack_webhook_url", url, "65534:65534"))
    if a.receiver == "webhook" and a.webhook_token_env:
        out.append(Secret(f"{s.secrets}/alertmanager/webhook_token",
                          need(a.webhook_token_env, "monitoring.alerts.webhook_token_env"), "65534:65534"))
    if grafana:
        var = cfg.monitoring.grafana_admin_password_env
        pw = need(var, "monitoring.grafana_admin_password_env")
        if len(pw) < GRAFANA_MIN_PASSWORD or pw.lower() in ("admin", "password", "changeme"):
            raise ConfigError(f"{var}: Grafana's admin password is too weak",
                              f"use at least {GRAFANA_MIN_PASSWORD} random characters, e.g. `openssl rand -base64 18`")
        out.append(Secret(f"{s.secrets}/grafana/admin_password", pw, "472:0"))
    return out


def tarball(files: dict[str, str]) -> bytes:
    """A gzip tar of relative path -> text (to stage many small files in one SSH round trip)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel in sorted(files):
            data = files[rel].encode()
            ti = tarfile.TarInfo(rel)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 1
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def parse_sha256sum(out: str) -> dict[str, str]:
    got = {}
    for line in out.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and len(parts[0]) == 64:
            got[parts[1].lstrip("*")] = parts[0]
    return got


def changed_files(files: list[render.File], remote_hashes: dict[str, str]) -> list[render.File]:
    return [f for f in files if remote_hashes.get(f.path) != sha256_text(f.content)]


def validation_checks(stage: str) -> list[tuple[str, str, list[str], list[str]]]:
    """(component, tool in its image, volumes, args): each staged config checked by the program
    that will read it, before anything is installed."""
    return [
        ("prometheus", "/usr/bin/promtool", [f"{stage}/etc/prometheus:/etc/prometheus:ro"],
         ["check", "config", "/etc/prometheus/prometheus.yml"]),
        ("alertmanager", "/usr/bin/amtool", [f"{stage}/etc/alertmanager:/etc/alertmanager:ro"],
         ["check-config", "/etc/alertmanager/alertmanager.yml"]),
        # the exporter itself: parses the modules (unknown keys too) and exits
        ("blackbox_exporter", "/usr/bin/prometheus-blackbox-exporter", [f"{stage}/etc/blackbox:/etc/blackbox:ro"],
         ["--config.file=/etc/blackbox/blackbox.yml", "--config.check"]),
    ]


def parse_inspect(out: str) -> dict[str, dict]:
    """``docker inspect --format '{{json .Name}} {{json .State}} {{.RestartCount}}'`` lines ->
    container name -> its State plus RestartCount (names docker does not know are left out)."""
    got = {}
    for line in out.splitlines():
        try:
            name, rest = line.split(" ", 1)
            state_text, count = rest.rsplit(" ", 1)
            state = dict(json.loads(state_text))
            state["RestartCount"] = int(count)
            got[json.loads(name).lstrip("/")] = state
        except (ValueError, TypeError):
            continue  # a warning line, or a container that went away in between
    return got


def judge(state: dict | None, url_ok: bool, url: str, restarts_before: int | None = None) -> tuple[bool, str]:
    """Is one component healthy? Its URL answering is not enough: on a host where something
    else listens on the same port (a Debian exporter), the URL answers while ferry's container
    crash-loops. Healthy = the container runs, is not restarting, has not restarted since
    ``restarts_before`` (when given), and its URL answers 200."""
    if state is None:
        return False, "no such container"
    status = state.get("Status", "")
    restarts = int(state.get("RestartCount", 0))
    if state.get("Restarting") or status == "restarting":
        return False, f"restarting (restarted {restarts} times; exit code {state.get('ExitCode', '?')})"
    if status != "running":
        return False, f"{status or 'not running'} (exit code {state.get('ExitCode', '?')})"
    if restarts_before is not None and restarts > restarts_before:
        return False, f"restarted {restarts - restarts_before} times while being checked"
    if not url_ok:
        return False, f"running but {url} does not answer 200"
    return True, "running, answers"


def tunnel_argv(spec, key: str | None, ports: list[int], offset: int = 0, gateway: str | None = None) -> list[str]:
    argv = ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=30"]
    if gateway:  # e.g. SSM Session Manager when the host has no public SSH
        argv += ["-o", f"ProxyCommand={gateway}"]
    for p in ports:
        argv += ["-L", f"{LOOPBACK}:{p + offset}:{LOOPBACK}:{p}"]
    if key:
        argv += ["-i", key]
    if spec.port != 22:
        argv += ["-p", str(spec.port)]
    return [*argv, f"{spec.user}@{spec.hostname}"]


def component_status(spec: ContainerSpec, listed: dict | None, state: dict | None, url_ok: bool) -> dict:
    """One line of `ferry monitoring status`: ``listed`` from `docker ps`, ``state`` from
    `docker inspect` (None: no such container), ``url_ok``: its health URL answered 200."""
    healthy, why = judge(state if listed else None, url_ok, spec.health)
    status = (state or {}).get("Status") or (listed or {}).get("state") or "absent"
    return {"component": spec.component, "container": spec.name,
            "state": status if listed else "absent", "image": listed["image"] if listed else None,
            "restarts": int((state or {}).get("RestartCount", 0)), "healthy": healthy, "why": why,
            "url": spec.health}


# --- on a host ---------------------------------------------------------------------------------

def observe_targets(host, cfg: Config, s: Settings) -> tuple[list[Slot], str | None]:
    """What runs on the host now: the app's colours (docker labels) and the live one (nginx)."""
    from .. import nginx

    r = host.run(D.ps_argv(cfg))
    if not r.ok:
        raise HostError(f"{host.name}: cannot list containers: {(r.stderr or r.stdout).strip()[-300:]}",
                        "is Docker running on the host?")
    slots = slots_from_ps(parse_ps(r.stdout), s.app, D.LABEL)
    live = live_colour_of(s, nginx.live_port(host.read(nginx.upstream_path(cfg))))
    return slots, live


def refresh_targets(host, cfg: Config, s: Settings | None = None) -> str:
    """Rewrite the app's scrape targets from what runs on the host (atomic; Prometheus picks
    the file up by itself). Returns the JSON written."""
    s = s or resolve_settings(cfg, host.name)
    slots, live = observe_targets(host, cfg, s)
    text = targets_json(s, slots, live)
    host.mkdir(s.targets_dir, parents=True)  # over SFTP: no process per deploy event
    if host.read(s.targets_file()) != text:
        host.write(s.targets_file(), text, mode="0644")
    return text


class HostStack:
    def __init__(self, host, cfg: Config, s: Settings, progress: Progress = NULL):
        self.host = host
        self.cfg = cfg
        self.s = s
        self.progress = progress

    def step(self, msg: str) -> None:
        self.progress.step(msg, host=self.host.name)

    def docker(self, *args: str) -> list[str]:
        return [*self.s.docker, *args]

    # images ---------------------------------------------------------------------------------

    def pull(self, ref: str) -> str:
        """Pull ``ref`` on the host and return it pinned: repository@sha256:..."""
        repo = ref.split("@", 1)[0]
        if ":" in repo.rsplit("/", 1)[-1]:
            repo = repo.rsplit(":", 1)[0]
        creds = registry_credentials(self.cfg, ref)
        # a pinned image already on the host cannot have changed: no registry round trip
        inspect = self.docker("image", "inspect", "--format", "{{json .RepoDigests}}", ref)
        argv = pull_argv(self.s.docker, ref, creds[0] if creds else None, if_missing="@sha256:" in ref, then=inspect)
        r = self.host.run(argv, stdin=creds[1] + "\n" if creds else None)
        if not r.ok:
            err = (r.stderr.strip() or r.stdout.strip())[-400:]
            raise HostError(f"{self.host.name}: pull of {ref} failed: {err}",
                            "is the image in the registry? `ferry monitoring images --push` builds and pushes the "
                            "stack's images; set [monitoring.images] to where they are")
        if "@sha256:" in ref:
            return ref
        digests = json.loads(r.stdout.strip().splitlines()[-1] or "[]")
        for d in digests:
            if d.split("@", 1)[0] == repo:
                return d
        raise HostError(f"{self.host.name}: {ref} has no digest for {repo} after the pull ({digests})",
                        "push it to the registry first: `ferry monitoring images --push`")

    # files ----------------------------------------------------------------------------------

    def stage(self, files: list[render.File]) -> str:
        """Copy every config file under a scratch directory, in one round trip."""
        root = self.s.root
        stage = f"{root}/staging"
        rel = {f.path[len(root) + 1:]: f.content for f in files if f.path.startswith(root + "/")}
        archive = f"{root}/staging.tar.gz"
        try:
            with self.host.sftp().open(archive, "wb") as f:
                f.write(tarball(rel))
        except OSError as e:
            raise HostError(f"{self.host.name}: cannot upload the monitoring config to {archive}: {e}",
                            "is the disk full?") from None
        q = shlex.quote
        script = (f"set -e; rm -rf {q(stage)}; mkdir -p {q(stage)}; tar -xzf {q(archive)} -C {q(stage)}; "
                  f"rm -f {q(archive)}; chmod -R go+rX {q(stage)}")
        self.host.check(["sh", "-c", script], "stage the monitoring config")
        return stage

    def validate(self, stage: str, pinned: dict[str, str]) -> None:
        """promtool/amtool/blackbox_exporter of the exact versions that will read the files."""
        for component, tool, vols, args in validation_checks(stage):
            argv = self.docker("run", "--rm", "--network", "none", "--read-only", "--entrypoint", tool)
            for v in vols:
                argv += ["--volume", v]
            r = self.host.run([*argv, pinned[component], *args], timeout=120)
            if not r.ok:
                detail = (r.stdout.strip() + "\n" + r.stderr.strip()).strip()[-800:]
                raise ConfigError(f"{self.host.name}: {component} rejects the rendered config: {detail}",
                                  f"fix the template in {self.s.templates} (nothing was changed on the host)")

    def remote_changes(self, files: list[render.File]) -> tuple[list[render.File], list[str]]:
        """(files whose content differs on the host, files of ours no template produces any more)
        in two round trips: hashes of every file, then a listing of the managed folders."""
        r = self.host.run(["sh", "-c", "sha256sum -- " + " ".join(shlex.quote(f.path) for f in files) + " 2>/dev/null; true"])
        changed = changed_files(files, parse_sha256sum(r.stdout))
        wanted = {f.path for f in files}
        finds = [f"find {shlex.quote(d)} -maxdepth 1 -type f -name {shlex.quote(pattern)} 2>/dev/null"
                 for d, pattern in ((f"{self.s.etc}/prometheus/rules", "*.yml"),
                                    (f"{self.s.etc}/grafana/dashboards", "*.json"),
                                    (f"{self.s.etc}/grafana/provisioning/datasources", "*.yml"),
                                    (f"{self.s.etc}/grafana/provisioning/dashboards", "*.yml"))]
        r = self.host.run(["sh", "-c", "; ".join(finds) + "; true"])
        # only host-wide files (no dash in the name) are ours to delete: <app>-* belong to the
        # apps that share the host, each managed by its own `ferry monitoring up`
        stale = sorted(p for p in r.stdout.split() if p not in wanted and "-" not in os.path.basename(p))
        return changed, stale

    def install(self, changed: list[render.File], stale: list[str], stage: str) -> list[str]:
        """Move the changed files into place, each atomically (a reader sees the old file or the
        new one), and delete the stale ones; return the paths touched."""
        root = self.s.root
        lines = ["set -e"]
        for f in changed:
            rel = f.path[len(root) + 1:]
            d = os.path.dirname(f.path)
            tmp = f"{d}/.{os.path.basename(f.path)}.ferry-tmp"
            lines.append(f"mkdir -p {shlex.quote(d)}")
            lines.append(f"cp {shlex.quote(stage + '/' + rel)} {shlex.quote(tmp)}")
            lines.append(f"chmod {f.mode} {shlex.quote(tmp)}")
            lines.append(f"mv -f {shlex.quote(tmp)} {shlex.quote(f.path)}")
        if stale:
            lines.append("rm -f " + " ".join(shlex.quote(p) for p in stale))
        lines.append(f"rm -rf {shlex.quote(stage)}")
        self.host.check(["sh", "-c", "\n".join(lines)], "install the monitoring config")
        return [f.path for f in changed] + stale

    def write_secrets(self, secrets: list[Secret]) -> list[str]:
        changed = []
        if not secrets:
            return changed
        r = self.host.run(["sh", "-c", "sha256sum -- " + " ".join(shlex.quote(x.path) for x in secrets) + " 2>/dev/null; true"])
        have = parse_sha256sum(r.stdout)
        for x in secrets:
            d = os.path.dirname(x.path)
            self.host.check(["mkdir", "-p", d], f"create {d}")
            self.host.check(["chown", x.owner, d], f"own {d}")
            self.host.check(["chmod", "0500", d], f"protect {d}")
            if have.get(x.path) != sha256_text(x.value):
                self.host.write(x.path, x.value, mode="0400")
                changed.append(x.path)
            self.host.check(["chown", x.owner, x.path], f"own {x.path}")
        return changed

    def prepare_dirs(self, stack: list[ContainerSpec]) -> None:
        s = self.s
        q = shlex.quote
        lines = ["set -e", "mkdir -p " + " ".join(q(d) for d in (s.etc, s.data, s.textfile_dir, s.targets_dir,
                                                                    s.probes_dir, s.secrets)),
                 f"chmod 0700 {q(s.secrets)}"]
        for spec in stack:
            for d in (*spec.data_dirs, *spec.secret_dirs):
                lines += [f"mkdir -p {q(d)}", f"chown {q(spec.user)} {q(d)}"]
            for d in spec.secret_dirs:
                lines.append(f"chmod 0500 {q(d)}")
        self.host.check(["sh", "-c", "\n".join(lines)], f"create {s.root}")

    # containers -----------------------------------------------------------------------------

    def containers(self) -> dict[str, dict]:
        r = self.host.run(self.docker("ps", "--all", "--no-trunc", "--filter", f"label={LABEL}",
                                      "--format", "{{json .}}"))
        if not r.ok:
            raise HostError(f"{self.host.name}: cannot list containers: {(r.stderr or r.stdout).strip()[-300:]}",
                            "is Docker running on the host?")
        out = {}
        for row in parse_ps(r.stdout):
            labels = D.labels_of(row)
            out[row.get("Names", "")] = {"running": row.get("State") == "running", "state": row.get("State", ""),
                                         "status": row.get("Status", ""), "image": row.get("Image", ""),
                                         "spec": labels.get(f"{LABEL}.spec"), "component": labels.get(LABEL)}
        return out

    def inspect(self, names: list[str]) -> dict[str, dict]:
        """The docker State (and RestartCount) of each named container that exists."""
        fmt = "{{json .Name}} {{json .State}} {{.RestartCount}}"
        r = self.host.run(self.docker("inspect", "--type", "container", "--format", fmt, *names))
        return parse_inspect(r.stdout)  # exit 1 when one is missing: the others are still listed

    def health(self, urls: list[str]) -> dict[str, bool]:
        script = "; ".join(f"printf '%s %s\\n' {shlex.quote(u)} \"$(curl -s -o /dev/null -m 3 -w '%{{http_code}}' "
                           f"{shlex.quote(u)})\"" for u in urls)
        r = self.host.run(["sh", "-c", script])
        got = {}
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                got[parts[0]] = parts[1] == "200"
        return {u: got.get(u, False) for u in urls}

    def wait_healthy(self, stack: list[ContainerSpec], timeout: float = HEALTH_TIMEOUT) -> None:
        """Until each container runs (not restarting, no restart since the first look) and its
        URL answers: a URL alone could be answered by another program on the same port."""
        deadline = time.monotonic() + timeout
        pending = {spec.health: spec for spec in stack}
        first: dict[str, int] = {}  # container -> RestartCount at the first look
        why: dict[str, str] = {}
        while pending:
            ok = self.health(list(pending))
            states = self.inspect([spec.name for spec in pending.values()])
            for url, spec in list(pending.items()):
                state = states.get(spec.name)
                if state is not None:
                    first.setdefault(spec.name, int(state.get("RestartCount", 0)))
                good, why[spec.name] = judge(state, ok.get(url, False), url, first.get(spec.name))
                if good:
                    self.progress.info(f"{spec.component} runs and answers on {url}", host=self.host.name)
                    pending.pop(url)
            if not pending:
                return
            if time.monotonic() > deadline:
                spec = next(iter(pending.values()))
                logs = self.host.run(self.docker("logs", "--tail", "15", spec.name))
                raise HostError(f"{self.host.name}: {spec.component} is not healthy after {timeout:.0f}s "
                                f"({why.get(spec.name, '')}): {(logs.stderr or logs.stdout).strip()[-600:]}",
                                f"see `docker logs {spec.name}` on the host; is another program listening on "
                                f"its port ({spec.health})?")
            time.sleep(0.5)

    def prometheus_targets(self) -> list[dict]:
        url = f"{self.s.prometheus_url}/api/v1/targets?state=active"
        r = self.host.run(["curl", "-fsS", "-m", "5", url])
        if not r.ok:
            return []
        try:
            doc = json.loads(r.stdout)
        except json.JSONDecodeError:
            return []
        return [{"job": t["labels"].get("job"), "instance": t["labels"].get("instance"), "health": t.get("health"),
                 "colour": t["labels"].get("colour"), "role": t["labels"].get("role"),
                 "last_error": t.get("lastError", "")} for t in doc.get("data", {}).get("activeTargets", [])]

    # the commands ---------------------------------------------------------------------------

    def up(self, images: dict[str, str], secrets: list[Secret]) -> dict:
        s = self.s
        self.step("pull the stack's images")
        pinned = {c: self.pull(ref) for c, ref in images.items()}
        stack = specs(s, images)
        self.step("render the config")
        targets = refresh_targets(self.host, self.cfg, s)
        files = render.files(s, targets, grafana="grafana" in images)
        self.prepare_dirs(stack)
        to_install, stale = self.remote_changes(files)
        changed: list[str] = []
        if to_install or stale:
            stage = self.stage(files)
            self.step("check it with the host's promtool and amtool")
            try:
                self.validate(stage, pinned)
            except FerryError:
                self.host.run(["rm", "-rf", stage])
                raise
            changed = self.install(to_install, stale, stage)
        changed += self.write_secrets(secrets)
        for p in changed:
            self.progress.info(f"changed {p}", host=self.host.name)
        actual = self.containers()
        actions = []
        # the targets file is re-read by Prometheus on its own: it never needs a reload
        reload_worthy = [p for p in changed if not p.startswith(s.targets_dir + "/")]
        for spec in stack:
            cfg_changed = any(p.startswith(d + "/") for p in reload_worthy for d in (*spec.config_dirs, *spec.secret_dirs))
            act = decide(s.docker, spec, pinned[spec.component], actual.get(spec.name), cfg_changed)
            if act.do != "none":
                self.step(f"{act.do} {spec.name} ({act.why})")
            for argv in act.argv:
                self.host.check(list(argv), f"{act.do} {spec.name}")
            actions.append({"component": spec.component, "container": spec.name, "action": act.do, "why": act.why,
                            "image": pinned[spec.component], "url": spec.health.rsplit("/", 1)[0] if spec.health else ""})
        self.step("wait for every component to answer")
        self.wait_healthy(stack)
        did = [a for a in actions if a["action"] != "none"]
        if not did and not changed:
            self.progress.info("monitoring already up to date: nothing changed", host=self.host.name)
        return {"host": self.host.name, "changed": bool(did or changed), "components": actions,
                "files_changed": changed, "grafana": "grafana" in images}

    def status(self, images: dict[str, str]) -> dict:
        s = self.s
        stack = specs(s, images)
        actual = self.containers()
        health = self.health([spec.health for spec in stack])
        states = self.inspect([spec.name for spec in stack if spec.name in actual])
        comps = [component_status(spec, actual.get(spec.name), states.get(spec.name), health[spec.health])
                 for spec in stack]
        if "grafana" not in images:
            comps.append({"component": "grafana", "container": None, "state": "not configured", "image": None,
                          "healthy": False, "url": s.grafana_url,
                          "note": "set monitoring.images.grafana to a Grafana image in your registry"})
        targets = self.prometheus_targets()
        return {"host": self.host.name, "components": comps, "targets": targets,
                "targets_up": sum(1 for t in targets if t["health"] == "up"),
                # "unknown" is a target not scraped yet (just added or reloaded), not a failure
                "targets_unknown": sum(1 for t in targets if t["health"] == "unknown"),
                "targets_down": [t for t in targets if t["health"] == "down"],
                "healthy": all(c["healthy"] for c in comps if c["state"] != "not configured")}

    def down(self, purge: bool) -> dict:
        actual = self.containers()
        removed = []
        for name in sorted(actual):
            self.step(f"remove {name}")
            self.host.check(self.docker("rm", "--force", name), f"remove {name}")
            removed.append(name)
        if purge:
            self.step(f"delete {self.s.root} (configs, data, secrets)")
            self.host.check(["rm", "-rf", self.s.root], f"delete {self.s.root}")
        if not removed:
            self.progress.info("monitoring was not running: nothing to stop", host=self.host.name)
        return {"host": self.host.name, "removed": removed, "purged": purge}


# --- the commands over every host -------------------------------------------------------------

def _urls(s: Settings, grafana: bool) -> dict:
    return {"prometheus_url": s.prometheus_url, "alertmanager_url": s.alertmanager_url,
            "grafana_url": s.grafana_url if grafana else None}


def up(cfg: Config, progress: Progress = NULL, environ: dict[str, str] | None = None) -> dict:
    env = dict(os.environ if environ is None else environ)
    images = images_of(cfg)
    grafana = "grafana" in images
    targets = resolve_hosts(cfg, progress)
    check_pinned(images, [t.spec.hostname for t in targets])
    # everything that can be wrong locally is found before the first host is touched: each
    # host's secrets and rendered files, then the hosts one at a time
    prepared = {}
    for t in targets:
        s = resolve_settings(cfg, str(t))
        prepared[t] = (s, secrets_of(cfg, s, env, grafana=grafana))
        render.files(s, "[]\n", grafana=grafana)
    results = for_each_host(cfg, lambda t, host: HostStack(host, cfg, prepared[t][0], progress).up(images, prepared[t][1]),
                            progress, targets=targets)
    return {"ok": True, "hosts": results, **_urls(prepared[targets[0]][0], grafana)}


def status(cfg: Config, progress: Progress = NULL) -> dict:
    images = images_of(cfg)
    targets = resolve_hosts(cfg, progress)
    results = for_each_host(cfg, lambda t, host: HostStack(host, cfg, resolve_settings(cfg, str(t)), progress)
                            .status(images), progress, targets=targets)
    return {"ok": all(r["healthy"] for r in results), "hosts": results,
            **_urls(resolve_settings(cfg, str(targets[0])), "grafana" in images)}


def down(cfg: Config, progress: Progress = NULL, purge: bool = False) -> dict:
    results = for_each_host(cfg, lambda t, host: HostStack(host, cfg, resolve_settings(cfg, str(t)), progress)
                            .down(purge), progress)
    return {"ok": True, "hosts": results}


def open_tunnel(cfg: Config, host: str | None = None, offset: int = 0, progress: Progress = NULL) -> dict:
    """The SSH tunnel that reaches the stack on a host (pure: nothing is started here)."""
    target = select(resolve_hosts(cfg, progress), host)[0]
    spec = target.spec
    s = resolve_settings(cfg, str(spec))
    m = cfg.monitoring
    grafana = bool(m.images.grafana)
    ports = [m.prometheus_port, m.alertmanager_port] + ([m.grafana_port] if grafana else [])
    urls = {"prometheus_url": f"http://{LOOPBACK}:{m.prometheus_port + offset}",
            "alertmanager_url": f"http://{LOOPBACK}:{m.alertmanager_port + offset}",
            "grafana_url": f"http://{LOOPBACK}:{m.grafana_port + offset}" if grafana else None}
    if is_loopback(spec.hostname) and offset == 0:
        # the host is this machine: its loopback is ours, a tunnel would only collide with it
        return {"host": str(spec), "command": None, **urls,
                "note": "the host is this machine: open the URLs directly"}
    key = cfg.deploy.ssh_key
    return {"host": str(spec), "root": s.root,
            "command": tunnel_argv(spec, os.path.expanduser(key) if key else None, ports, offset,
                                   target.gateway),
            **urls}

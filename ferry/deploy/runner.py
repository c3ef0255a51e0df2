"""Blue/green on one host: the steps of a deploy, a rollback and a repair, run over SSH.

The order (see ARCHITECTURE.md, "a release's path"): lock → repair anything a killed ferry left
→ pull by digest → record the release as in-progress → start the idle colour → health gate →
swap (upstream file, ``nginx -t``, reload) → verify through nginx → drain the old colour →
keep it warm or stop it → record success → prune → unlock. Each step that fails undoes what
the deploy changed, so traffic stays where it was.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from typing import Callable

from .. import nginx
from ..accessories.runner import app_env as accessories_env
from ..config import Config
from ..errors import DeployError, FerryError, HealthCheckFailed, HostError, NothingToRollBack
from ..progress import NULL, Progress
from . import docker as D
from .history import ABORTED, FAILED, SUCCESS, History, Release, now_iso, release_id
from .host import Host
from .lock import Lock, LockInfo
from .plan import idle_colour, images_to_prune

COLOURS = ("blue", "green")


@dataclass(frozen=True)
class Target:
    image: str  # repository@sha256:...
    digest: str
    version: str
    kind: str = "deploy"
    note: str = ""


@dataclass
class Container:
    colour: str
    name: str
    running: bool
    release: str
    version: str
    digest: str
    state: str

    def to_json(self) -> dict:
        return {"colour": self.colour, "name": self.name, "running": self.running, "release": self.release,
                "version": self.version, "digest": self.digest, "state": self.state}


@dataclass
class HostState:
    history: History
    live_colour: str | None
    containers: dict[str, Container] = field(default_factory=dict)

    @property
    def live(self) -> Container | None:
        return self.containers.get(self.live_colour) if self.live_colour else None


_GATE_SEP = "--ferry-probe--"


def _response_head(dump: str) -> tuple[str, dict[str, str]]:
    """curl -D output: (status line, lower-cased header names -> values) of the last response."""
    blocks = [b for b in dump.replace("\r\n", "\n").split("\n\n") if b.strip()]
    lines = blocks[-1].strip().split("\n") if blocks else [""]
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0].strip(), headers


class HostDeployer:
    def __init__(self, host: Host, cfg: Config, progress: Progress = NULL, secrets: dict[str, str] | None = None,
                 registry_credentials: tuple[str, str] | Callable[[], tuple[str, str] | None] | None = None, command: str = "deploy", force: bool = False,
                 server_names: tuple[str, ...] = (), behind_balancer: bool = False):
        self.host = host
        self.cfg = cfg
        self.progress = progress
        self.secrets = secrets or {}
        self.creds = registry_credentials
        self.command = command
        self.force = force
        self.server_names = server_names
        self.behind_balancer = behind_balancer  # TLS ends at the load balancer: pass its X-Forwarded-Proto
        self._tls: bool | None = None
        self.lock = Lock(host, cfg)
        self.dir = nginx.app_dir(cfg)
        self.history_path = f"{self.dir}/releases.json"
        self.repaired: list[str] = []
        self.observed: HostState | None = None  # the last observe(): what was live before a step failed

    # --- reading the host ----------------------------------------------------------------------

    def step(self, msg: str) -> None:
        self.progress.step(msg, host=self.host.name)
        self.lock.touch()

    def read_history(self) -> History:
        text = self.host.read(self.history_path)
        try:
            return History.parse(text)
        except ValueError:
            raise DeployError(f"{self.host.name}: {self.history_path} is not valid JSON",
                              "restore it from the .bak beside it or move it away") from None

    def event(self, kind: str, release: str, version: str = "", digest: str = "", colour: str = "",
              duration: float | None = None) -> None:
        """Deploy metrics for Prometheus (node_exporter textfile); a witness that never fails a deploy."""
        from ..monitoring.events import DeployEvent, record_deploy_event

        record_deploy_event(self.host, self.cfg, DeployEvent(kind, release, version, digest, colour, duration=duration),
                            self.progress)

    def write_history(self, h: History) -> None:
        self.host.write(self.history_path, h.dumps())

    def observe(self) -> HostState:
        history = self.read_history()
        port = nginx.live_port(self.host.read(nginx.upstream_path(self.cfg)))
        live = next((c for c, p in self.cfg.deploy.colours.items() if p == port), None)
        containers: dict[str, Container] = {}
        r = self.host.run(D.ps_argv(self.cfg))
        if not r.ok:
            raise HostError(f"{self.host.name}: cannot list containers: {r.stderr.strip()[-300:]}",
                            "is Docker running on the host? (`ferry local up` here)")
        for line in r.stdout.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            labels = D.labels_of(row)
            colour = labels.get(f"{D.LABEL}.colour")
            if colour not in COLOURS:
                continue
            containers[colour] = Container(colour, row.get("Names", ""), row.get("State") == "running",
                                           labels.get(f"{D.LABEL}.release", ""), labels.get(f"{D.LABEL}.version", ""),
                                           labels.get(f"{D.LABEL}.digest", ""), row.get("Status", ""))
        self.observed = HostState(history, live, containers)
        return self.observed

    def _probe_argv(self, port: int, path: str | None = None, timeout: float = 3.0) -> list[str]:
        url = f"http://127.0.0.1:{port}{path or self.cfg.deploy.health.path}"
        return ["curl", "-sS", "-m", str(timeout), "-w", "\n%{http_code}", url]

    @staticmethod
    def _probe_result(stdout: str, stderr: str) -> tuple[int, str]:
        body, _, code = stdout.rpartition("\n")
        try:
            status = int(code.strip() or 0)
        except ValueError:
            status = 0
        return status, (body or stderr).strip()[:300]

    def probe(self, port: int, path: str | None = None, timeout: float = 3.0) -> tuple[int, str]:
        """GET the colour directly on the host: (status, body excerpt); status 0 = no answer."""
        r = self.host.run(self._probe_argv(port, path, timeout))
        return self._probe_result(r.stdout, r.stderr)

    def _gate_poll(self, name: str, port: int) -> tuple[list[str], tuple[int, str]]:
        """One SSH command per health poll: the container's state, then the probe."""
        script = (f"{shlex.join(D.inspect_state_argv(self.cfg, name))} 2>/dev/null; echo {_GATE_SEP}; "
                  f"{shlex.join(self._probe_argv(port))}")
        r = self.host.run(["sh", "-c", script])
        state, _, probe = r.stdout.partition(f"{_GATE_SEP}\n")
        return state.strip().split("|"), self._probe_result(probe, r.stderr)

    # --- the deploy ----------------------------------------------------------------------------

    def deploy(self, target: Target) -> dict:
        t0 = time.monotonic()
        self.step(f"lock {self.cfg.app.name}")
        self.lock.acquire(LockInfo.mine(self.command, target.version), force=self.force, progress=self.progress)
        try:
            self.repair_locked()
            state = self.observe()
            live = state.live
            if live and live.running and live.digest == target.digest:
                status, _ = self.probe(self.cfg.deploy.colours[live.colour])
                if 200 <= status < 400:
                    self.progress.info(f"{target.image} is already live ({live.colour}, release {live.release}): "
                                       "nothing to do", host=self.host.name)
                    return {"host": self.host.name, "action": "none", "release": live.release, "colour": live.colour,
                            "digest": live.digest, "version": live.version, "repaired": self.repaired}
            return self._deploy_locked(state, target, t0)
        finally:
            self.lock.release()

    def _deploy_locked(self, state: HostState, target: Target, t0: float) -> dict:
        cfg, host = self.cfg, self.host
        old = state.live
        colour = idle_colour(state.live_colour)
        port = cfg.deploy.colours[colour]
        name = D.container_name(cfg, colour)
        rid = release_id(target.digest)

        self.step(f"prepare {self.dir}")
        host.check(["mkdir", "-p", f"{self.dir}/nginx", f"{self.dir}/acme"], "create the app directories")
        env = {**self.secrets, **accessories_env(cfg, host)}  # url_env, {db.password}: never in argv
        host.write(D.env_file_path(cfg), "".join(f"{k}={v}\n" for k, v in sorted(env.items())), mode="0600")

        self.step(f"pull {target.image}")
        self.pull(target.image)

        # the idle colour's old container (a warm previous release) makes way
        if colour in state.containers:
            host.run(D.rm_argv(cfg, name))
        taken = host.run(["ss", "-ltnpH", f"sport = :{port}"])
        if taken.ok and taken.stdout.strip():
            raise DeployError(f"{host.name}: port {port} for {colour} is already taken: {taken.stdout.strip()[:200]}",
                              f"stop what listens there, or change deploy.colours.{colour} in ferry.toml")

        release = Release(id=rid, version=target.version, digest=target.digest, image=target.image, colour=colour,
                          time=now_iso(), who=LockInfo.mine(self.command).holder, kind=target.kind, note=target.note)
        # recorded before traffic moves: a full disk stops us here, and a killed ferry is repaired later
        self.step(f"record release {rid} (in progress)")
        history = state.history.append(release)
        self.write_history(history)
        self.event("start", rid, target.version, target.digest, colour)

        try:
            self.step(f"start {name} on 127.0.0.1:{port}")
            r = host.run(D.run_argv(cfg, colour, target.image, rid, target.version, target.digest))
            if not r.ok:
                raise DeployError(f"{host.name}: docker run {name} failed: {r.stderr.strip()[-400:]}",
                                  "check the image and deploy.resources")
            self.health_gate(name, port)
            self.swap(colour, rid, old)
        except BaseException as e:
            self.progress.warn(f"deploy of {rid} failed; traffic stays on "
                               f"{old.colour + ' (' + old.release + ')' if old else 'nothing'}", host=host.name)
            host.run(D.rm_argv(cfg, name))
            outcome = FAILED if isinstance(e, FerryError) else ABORTED
            try:
                self.write_history(history.update(rid, outcome=outcome, note=str(e)[:300]))
            except FerryError:
                pass
            self.event("failure", rid, target.version, target.digest, colour, round(time.monotonic() - t0, 2))
            raise

        history = history.update(rid, outcome=SUCCESS, duration=round(time.monotonic() - t0, 2))
        try:
            self.write_history(history)
        except FerryError:
            # the host must not serve a release its history does not know: go back
            self.progress.warn("cannot record the release: moving traffic back", host=host.name)
            if old:
                nginx.apply(host, cfg, {nginx.upstream_path(cfg): nginx.render_upstream(cfg, old.colour, old.release)})
            host.run(D.rm_argv(cfg, name))
            raise
        self.event("rollback" if target.kind == "rollback" else "success", rid, target.version, target.digest, colour,
                   round(time.monotonic() - t0, 2))
        self.retire(old)
        self.prune(history, {target.digest} | ({old.digest} if old else set()))
        self.progress.info(f"release {rid} is live on {colour} ({time.monotonic() - t0:.1f}s)", host=host.name)
        return {"host": host.name, "action": "deployed", "release": rid, "colour": colour, "digest": target.digest,
                "version": target.version, "previous": old.release if old else None,
                "duration": round(time.monotonic() - t0, 2), "repaired": self.repaired}

    def pull(self, image: str) -> None:
        cfg, host = self.cfg, self.host
        creds = self.creds() if callable(self.creds) else self.creds
        if creds:
            user, password = creds
            registry = image.split("/", 1)[0]
            # credentials live in a private temp DOCKER_CONFIG for the pull only, then vanish
            script = ("set -e; d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT; chmod 700 \"$d\"; "
                      f"{shlex.join(D.docker(cfg, '--config', '$d'))} login --username {shlex.quote(user)} "
                      f"--password-stdin {shlex.quote(registry)} >/dev/null; "
                      f"{shlex.join(D.pull_argv(cfg, image, '$d'))}").replace("'$d'", '"$d"')
            r = host.run(["sh", "-c", script], stdin=password + "\n")
        else:
            r = host.run(D.pull_argv(cfg, image))
        if not r.ok:
            err = (r.stderr.strip() or r.stdout.strip())[-400:]
            hint = ("the registry refused the credentials: check FERRY_REGISTRY_USERNAME/PASSWORD or the host's "
                    "ECR role" if ("unauthorized" in err or "denied" in err) else
                    "is the registry reachable from the host and the image pushed? (`ferry build --push`)")
            raise DeployError(f"{host.name}: pull of {image} failed: {err}", hint)

    def health_gate(self, name: str, port: int) -> None:
        h = self.cfg.deploy.health
        self.step(f"health check http://127.0.0.1:{port}{h.path} ({h.healthy_after} in a row, up to {h.timeout:.0f}s)")
        deadline = time.monotonic() + h.timeout
        passes, last = 0, (0, "")
        while time.monotonic() < deadline:
            st, probe = self._gate_poll(name, port)
            if st and st[0] in ("exited", "dead") or (len(st) > 2 and st[2].isdigit() and int(st[2]) > 0):
                self._fail_health(name, port, f"the container exited at start (exit code {st[1] if len(st) > 1 else '?'})", last)
            last = probe
            if 200 <= last[0] < 400:
                passes += 1
                if passes >= h.healthy_after:
                    self.progress.info(f"healthy ({passes} passes)", host=self.host.name)
                    return
            else:
                passes = 0
            self.lock.touch()
            time.sleep(h.interval)
        self._fail_health(name, port, f"no {h.healthy_after} healthy answers within {h.timeout:.0f}s", last)

    def _fail_health(self, name: str, port: int, why: str, last: tuple[int, str]) -> None:
        logs = self.host.run(D.logs_argv(self.cfg, name, 15))
        tail = " | ".join((logs.stdout + logs.stderr).strip().splitlines()[-15:])[-1200:]
        status = f"last status {last[0]}" if last[0] else "no HTTP answer"
        raise HealthCheckFailed(
            f"{self.host.name}: {name} is not healthy: {why}; {status}"
            + (f", body: {last[1][:200]!r}" if last[1] else "") + f"; container log: {tail or '(empty)'}",
            "traffic stayed on the live colour; fix the app (see the log above) and release again")

    def swap(self, colour: str, rid: str, old: Container | None) -> None:
        cfg, host = self.cfg, self.host
        self.step(f"swap nginx to {colour} (nginx -t, reload)")
        files = {
            nginx.upstream_path(cfg): nginx.render_upstream(cfg, colour, rid),
            nginx.proxy_path(cfg): nginx.render_proxy(cfg, behind_balancer=self.behind_balancer),
            nginx.site_path(cfg): nginx.render_site(cfg, tls=self.tls_ready(), extra_names=self.server_names),
        }
        nginx.apply(host, cfg, files)
        try:
            self.verify(rid, cfg.deploy.colours[colour])
        except FerryError:
            if old:
                nginx.apply(host, cfg, {nginx.upstream_path(cfg): nginx.render_upstream(cfg, old.colour, old.release)})
            else:
                host.run(["rm", "-f", nginx.site_path(cfg)])
                nginx.test_and_reload(host, cfg)
            raise

    def tls_ready(self) -> bool:
        """TLS is on and the host has a certificate and key (`ferry certs issue` put them there)."""
        if not self.cfg.tls.enabled:
            return False
        if self._tls is None:
            ctx = nginx.context(self.cfg, True)
            self._tls = all(self.host.size(p) for p in (ctx["cert_path"], ctx["key_path"]))
        return self._tls

    def verify(self, rid: str, port: int, timeout: float = 10.0) -> None:
        """Through nginx, as a user would: the health path answers, names the new release, and
        was answered by the new colour's container (its port, as nginx reports to ferry only)."""
        p = self.cfg.proxy
        address = "127.0.0.1" if p.listen in ("0.0.0.0", "*", "") else p.listen
        host_header = self.cfg.app.domain or address
        if self.tls_ready():
            url = f"https://{host_header}:{p.https_port}{self.cfg.deploy.health.path}"
            extra = ["-k", "--resolve", f"{host_header}:{p.https_port}:{address}"]
        else:
            url = f"http://{address}:{p.http_port}{self.cfg.deploy.health.path}"
            extra = ["-H", f"Host: {host_header}"]
        self.step(f"verify through nginx: {url}")
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            r = self.host.run(["curl", "-sS", "-o", "/dev/null", "-D", "-", "-m", "5", "-H", "X-Ferry-Verify: 1",
                               *extra, url])
            status_line, headers = _response_head(r.stdout)
            seen = status_line or r.stderr.strip()
            if (headers.get("x-ferry-release") == rid and headers.get("x-ferry-upstream") == f"127.0.0.1:{port}"
                    and any(f" {c}" in status_line for c in ("200", "204", "301", "302", "308"))):
                return
            time.sleep(0.05)  # the reload's new workers take over within a few tens of ms
        raise DeployError(f"{self.host.name}: nginx does not serve release {rid} after the reload (saw: {seen[:200]})",
                          "traffic was moved back; check nginx's error log and deploy.health.path")

    def wait_drained(self) -> None:
        """Old nginx workers keep serving the requests they hold after a reload; the old colour
        must stay up until they are done (or drain_timeout)."""
        deadline = time.monotonic() + self.cfg.deploy.drain_timeout
        while time.monotonic() < deadline:
            r = self.host.run(["pgrep", "-f", "nginx: worker process is shutting down"])
            if not r.stdout.strip():
                return
            self.lock.touch()
            time.sleep(0.2)
        self.progress.warn(f"requests still in flight after {self.cfg.deploy.drain_timeout:.0f}s (drain_timeout)",
                           host=self.host.name)

    def retire(self, old: Container | None) -> None:
        if not old:
            return
        self.step(f"drain {old.name}")
        self.wait_drained()
        keep = self.cfg.deploy.keep_previous
        if keep > 0 and old.running:
            self.progress.info(f"{old.name} stays warm for {keep:.0f}s: `ferry rollback` is one reload", host=self.host.name)
            self.schedule_stop(old, keep)
        else:
            self.step(f"stop {old.name}")
            self.host.run(D.stop_argv(self.cfg, old.name))

    def schedule_stop(self, c: Container, after: float) -> None:
        """A host-side timer stops the warm colour later, unless by then it is live again or was
        replaced by another release (checked by label)."""
        cfg = self.cfg
        inspect = shlex.join(D.docker(cfg, "inspect", "--format", '{{index .Config.Labels "dev.ferry.release"}}', c.name))
        port = cfg.deploy.colours[c.colour]
        script = (f"sleep {int(after)}; "
                  f"grep -q 'server 127.0.0.1:{port} ' {shlex.quote(nginx.upstream_path(cfg))} && exit 0; "
                  f"[ \"$({inspect} 2>/dev/null)\" = {shlex.quote(c.release)} ] || exit 0; "
                  f"{shlex.join(D.stop_argv(cfg, c.name))}")
        self.host.run(["sh", "-c", f"setsid sh -c {shlex.quote(script)} </dev/null >/dev/null 2>&1 &"])

    def prune(self, history: History, in_use: set[str]) -> None:
        """Remove images beyond keep_releases; ``in_use``: the digests of the live and warm colours."""
        cfg = self.cfg
        repo = history.releases[-1].image.split("@", 1)[0] if history.releases else None
        if not repo:
            return
        r = self.host.run(D.images_argv(cfg, repo))
        if not r.ok:
            return
        rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip().startswith("{")]
        for ref in images_to_prune(rows, history, cfg.deploy.keep_releases, in_use):
            self.host.run(D.rmi_argv(cfg, ref))
            self.progress.info(f"pruned {ref}", host=self.host.name)

    # --- rollback ------------------------------------------------------------------------------

    def rollback(self, to: str | None = None) -> dict:
        t0 = time.monotonic()
        self.step(f"lock {self.cfg.app.name}")
        self.lock.acquire(LockInfo.mine(self.command), force=self.force, progress=self.progress)
        try:
            self.repair_locked()
            state = self.observe()
            live = state.live
            if to:
                target = state.history.get(to)
                if target is None or target.outcome != SUCCESS:
                    raise NothingToRollBack(f"{self.host.name}: no successful release {to!r} in the history",
                                            "`ferry status` lists the releases")
            else:
                target = state.history.rollback_target(live.digest if live else None)
                if target is None:
                    raise NothingToRollBack(f"{self.host.name}: there is no earlier successful release to go back to",
                                            "deploy a fixed release instead")
            if live and live.digest == target.digest:
                self.progress.info(f"{target.id} is already live: nothing to do", host=self.host.name)
                return {"host": self.host.name, "action": "none", "release": live.release, "colour": live.colour,
                        "digest": live.digest, "version": live.version, "repaired": self.repaired}
            other = idle_colour(state.live_colour)
            warm = state.containers.get(other)
            if warm and warm.running and warm.digest == target.digest:
                status, _ = self.probe(self.cfg.deploy.colours[other])
                if 200 <= status < 400:
                    return self._warm_rollback(state, warm, target, t0)
            self.progress.info(f"{target.id} is not warm: a gated deploy of {target.image}", host=self.host.name)
            return self._deploy_locked(state, Target(target.image, target.digest, target.version, kind="rollback",
                                                     note=f"rollback to {target.id}"), t0)
        finally:
            self.lock.release()

    def _warm_rollback(self, state: HostState, warm: Container, target: Release, t0: float) -> dict:
        old = state.live
        rid = release_id(target.digest)
        entry = Release(id=rid, version=warm.version, digest=warm.digest, image=target.image, colour=warm.colour,
                        time=now_iso(), who=LockInfo.mine(self.command).holder, kind="rollback",
                        note=f"rollback to {target.id} (warm)")
        history = state.history.append(entry)
        self.write_history(history)
        try:
            self.swap(warm.colour, warm.release, old)
        except BaseException as e:
            try:
                self.write_history(history.update(rid, outcome=FAILED, note=str(e)[:300]))
            except FerryError:
                pass
            raise
        history = history.update(rid, outcome=SUCCESS, duration=round(time.monotonic() - t0, 2))
        self.write_history(history)
        swapped = round(time.monotonic() - t0, 3)
        self.event("rollback", warm.release, warm.version, warm.digest, warm.colour, swapped)
        self.retire(old)
        return {"host": self.host.name, "action": "rolled-back", "warm": True, "release": warm.release,
                "entry": rid, "colour": warm.colour, "digest": warm.digest, "version": warm.version,
                "previous": old.release if old else None, "swap_seconds": swapped,
                "duration": round(time.monotonic() - t0, 2), "repaired": self.repaired}

    # --- repair --------------------------------------------------------------------------------

    def repair_locked(self) -> list[str]:
        """Finish or undo what a killed ferry left (in-progress entries), with the lock held."""
        history = self.read_history()
        pending = history.in_progress()
        if not pending:
            return []
        self.host.run(["sh", "-c", f"rm -f {shlex.quote(self.dir)}/*.ferry-tmp {shlex.quote(self.dir)}/nginx/*.ferry-tmp"])
        state = self.observe()
        for entry in pending:
            live = state.live
            if state.live_colour == entry.colour and live and live.release == entry.id:
                status, _ = self.probe(self.cfg.deploy.colours[entry.colour])
                if 200 <= status < 400:
                    # the swap was written: make sure nginx has loaded it, then it counts
                    nginx.test_and_reload(self.host, self.cfg)
                    history = history.update(entry.id, outcome=SUCCESS, note="completed by repair after an interrupted deploy")
                    msg = f"interrupted deploy {entry.id}: the swap had happened; completed"
                else:
                    other = idle_colour(entry.colour)
                    back = state.containers.get(other)
                    if back and back.running:
                        nginx.apply(self.host, self.cfg, {nginx.upstream_path(self.cfg): nginx.render_upstream(self.cfg, other, back.release)})
                    history = history.update(entry.id, outcome=FAILED, note="unhealthy after an interrupted deploy; traffic moved back")
                    msg = f"interrupted deploy {entry.id}: new colour unhealthy; traffic moved back to {other}"
            else:
                c = state.containers.get(entry.colour)
                if c and c.release == entry.id:
                    self.host.run(D.rm_argv(self.cfg, c.name))
                history = history.update(entry.id, outcome=ABORTED, note="interrupted before traffic moved; cleaned up")
                msg = f"interrupted deploy {entry.id}: traffic had not moved; removed its container"
            self.progress.warn(f"repair: {msg}", host=self.host.name)
            self.repaired.append(msg)
        self.write_history(history)
        return self.repaired

    # --- status --------------------------------------------------------------------------------

    def status(self, repair: bool = True) -> dict:
        lock_state = self.lock.read()
        history = self.read_history()
        if repair and history.in_progress():
            if lock_state.info is None or (lock_state.stale and "is gone" in (lock_state.stale or "")):
                try:
                    self.lock.acquire(LockInfo.mine("status (repair)"), force=True, progress=self.progress)
                    try:
                        self.repair_locked()
                    finally:
                        self.lock.release()
                    lock_state = self.lock.read()
                except FerryError as e:
                    self.progress.warn(f"could not repair: {e}", host=self.host.name)
        state = self.observe()
        live = state.live
        health = None
        if live:
            code, body = self.probe(self.cfg.deploy.colours[live.colour])
            health = {"status": code, "ok": 200 <= code < 400}
        warm = [c.to_json() for col, c in state.containers.items() if col != state.live_colour and c.running]
        return {
            "host": self.host.name,
            "live": None if not live else {"colour": live.colour, "release": live.release, "digest": live.digest,
                                           "version": live.version, "running": live.running},
            "health": health,
            "warm": warm,
            "lock": lock_state.to_json(),
            "pending": [r.id for r in state.history.in_progress()],
            "releases": [r.to_json() for r in state.history.recent(5)],
            "repaired": self.repaired,
        }

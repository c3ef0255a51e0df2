"""Blue/green on one host: executes the steps plan.py decides, over SSH.

The order (see ARCHITECTURE.md, "a release's path"): lock → repair anything a killed ferry left
→ observe (HostFacts) → plan → pull by digest → volumes → record the release as in-progress →
release command → start the idle colour and its workers → health gates → swap (upstream file,
``nginx -t``, reload) → verify through nginx → record success → stop the old workers → drain
the old colour → keep it warm or stop it → prune → unlock. A step that fails before the
success is recorded removes what this release started, so traffic stays where it was.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from dataclasses import dataclass, field
from typing import Callable

from .. import nginx
from ..accessories.runner import app_env as accessories_env
from ..config import Config
from ..errors import (DeployError, FerryError, HealthCheckFailed, HostError, ReleaseCommandFailed,
                      VolumeError, WorkerFailed)
from ..fleet.argv import pull_argv
from ..fleet.events import DeployEvent, EventSink, no_events
from ..progress import NULL, Progress
from . import docker as D
from . import plan as P
from .history import ABORTED, FAILED, SUCCESS, History, Release, now_iso, release_id
from .host import Host
from .lock import Lock, LockInfo
from .plan import COLOURS, Container, HostFacts, Target, images_to_prune
from .results import DeployResult, HostStatus, ReleaseCommandRun, RollbackResult, VolumeStatus, WorkerStatus

HostState = HostFacts  # the name release.py and its tests know

__all__ = ["COLOURS", "Container", "HostDeployer", "HostFacts", "HostState", "Target"]

_response_head = P.response_head  # the name tests and older callers know


def _tail(text: str, lines: int = 15, chars: int = 1200) -> str:
    return " | ".join(line.rstrip() for line in text.strip().splitlines()[-lines:] if line.strip())[-chars:]


@dataclass
class _Run:
    """A release being executed: what it changed so far, so a failure can undo exactly that."""

    target: Target
    rid: str  # the history entry
    facts: HostFacts
    t0: float
    history: History | None = None  # set once the entry is recorded
    created: list[str] = field(default_factory=list)  # containers this release started
    release_command: ReleaseCommandRun | None = None
    workers: tuple[str, ...] = ()
    committed: bool = False
    swapped_at: float | None = None
    colour: str = ""
    serves: str = ""  # the release the new colour's containers carry



class HostDeployer:
    def __init__(self, host: Host, cfg: Config, progress: Progress = NULL, secrets: dict[str, str] | None = None,
                 registry_credentials: tuple[str, str] | Callable[[], tuple[str, str] | None] | None = None, command: str = "deploy", force: bool = False,
                 server_names: tuple[str, ...] = (), behind_balancer: bool = False,
                 balancer_networks: tuple[str, ...] = (), events: EventSink = no_events):
        self.host = host
        self.cfg = cfg
        self.progress = progress
        self.secrets = secrets or {}
        self.creds = registry_credentials
        self.command = command
        self.force = force
        self.server_names = server_names
        self.behind_balancer = behind_balancer  # TLS ends at the load balancer: pass its X-Forwarded-Proto
        self.balancer_networks = balancer_networks  # its X-Forwarded-For names the client (set_real_ip_from)
        self.events = events  # who listens (monitoring's metrics) is the caller's business
        self._tls: bool | None = None
        self.lock = Lock(host, cfg)
        self.dir = nginx.app_dir(cfg)
        self.history_path = f"{self.dir}/releases.json"
        self.repaired: list[str] = []
        self.observed: HostFacts | None = None  # the last observe(): what was live before a step failed

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

    def locked_facts(self) -> HostFacts:
        """With the lock held: repair what a killed ferry left, then observe. The history is
        read once when there is nothing to repair (the common case)."""
        history = self.read_history()
        if history.in_progress():
            self.repair_locked()
            return self.observe()
        return self.observe(history)

    def event(self, kind: str, release: str, version: str = "", digest: str = "", colour: str = "",
              duration: float | None = None) -> None:
        """Tell the event sink (monitoring's deploy metrics): a witness that never fails a deploy."""
        self.events(self.host, DeployEvent(kind, release, version, digest, colour, duration=duration))

    def write_history(self, h: History) -> None:
        self.host.write(self.history_path, h.dumps())

    def observe(self, history: History | None = None) -> HostFacts:
        """The host's facts for a plan: history (``history``: already read under this lock),
        the live colour (from the upstream file), the app's labelled containers, and which
        running web colours answer their health path: two files over SFTP and one command
        (docker.observe_argv: docker ps and both colours' probes)."""
        history = self.read_history() if history is None else history
        port = nginx.live_port(self.host.read(nginx.upstream_path(self.cfg)))
        live = next((c for c, p in self.cfg.deploy.colours.items() if p == port), None)
        r = self.host.run(D.observe_argv(self.cfg))
        seen = P.parse_observe(r.stdout, sorted(self.cfg.deploy.colours))
        if seen.ps_exit != 0:
            raise HostError(f"{self.host.name}: cannot list containers: {(seen.ps_output or r.stderr).strip()[-300:]}",
                            "is Docker running on the host? (`ferry local up` here)")
        web, workers, oneoffs = P.containers_from_ps(seen.rows())
        self.observed = HostFacts(history, live, web, workers, oneoffs, P.healthy_colours(web, seen.probes))
        return self.observed

    _probe_result = staticmethod(P.probe_result)

    def probe(self, port: int, path: str | None = None, timeout: float = 3.0) -> tuple[int, str]:
        """GET the colour directly on the host: (status, body excerpt); status 0 = no answer."""
        r = self.host.run(D.probe_argv(port, path or self.cfg.deploy.health.path, timeout))
        return self._probe_result(r.stdout, r.stderr)

    def _gate_poll(self, name: str, port: int) -> tuple[list[str], tuple[int, str]]:
        """One SSH command per health poll: the container's state, then the probe."""
        r = self.host.run(D.gate_poll_argv(self.cfg, name, port, self.cfg.deploy.health.path))
        state, _, probe = r.stdout.partition(f"{D.GATE_SEP}\n")
        return state.strip().split("|"), self._probe_result(probe, r.stderr)

    # --- executing a plan ----------------------------------------------------------------------

    def deploy(self, target: Target, run_release_command: bool | None = None) -> DeployResult:
        """``run_release_command``: this host runs deploy.release_command (the release's first
        host only; the caller across hosts decides); None keeps ``target.release_command``."""
        if run_release_command is not None:
            target = dataclasses.replace(target, release_command=run_release_command)
        t0 = time.monotonic()
        self.step(f"lock {self.cfg.app.name}")
        self.lock.acquire(LockInfo.mine(self.command, target.version), force=self.force, progress=self.progress)
        try:
            facts = self.locked_facts()
            rid = release_id(target.digest, taken={r.id for r in facts.history.releases})
            steps = P.release_plan(self.cfg, facts, target, rid)
            if isinstance(steps[0], P.AlreadyLive):
                live = steps[0].container
                self.progress.info(f"{target.image} is already live ({live.colour}, release {live.release}): "
                                   "nothing to do", host=self.host.name)
                return DeployResult(self.host.name, "none", live.release, live.colour, live.digest, live.version,
                                    repaired=tuple(self.repaired),
                                    workers=tuple(w.name for w in facts.workers_of(live.release) if w.running))
            run = self.execute(facts, target, rid, steps, t0)
            old = facts.live
            return DeployResult(self.host.name, "deployed", rid, run.colour, target.digest, target.version,
                                previous=old.release if old else None, duration=round(time.monotonic() - t0, 2),
                                repaired=tuple(self.repaired), release_command=run.release_command,
                                workers=run.workers)
        finally:
            self.lock.release()

    def execute(self, facts: HostFacts, target: Target, rid: str, steps: list, t0: float) -> _Run:
        """Run ``steps`` in order; before the Commit step, any failure removes the containers this
        release started and records the entry as failed (aborted when interrupted)."""
        run = _Run(target, rid, facts, t0)
        self.prepare()
        try:
            for s in steps:
                self._execute_one(s, run)
        except BaseException as e:
            if not run.committed:
                self._undo(run, e)
            raise
        self.progress.info(f"release {run.serves} is live on {run.colour} ({time.monotonic() - t0:.1f}s)",
                           host=self.host.name)
        return run

    def prepare(self) -> None:
        self.step(f"prepare {self.dir}")
        for path in D.app_dirs(self.dir):  # over SFTP: a request each, where `mkdir -p` is a command
            self.host.mkdir(path, parents=True)
        env = {**self.secrets, **accessories_env(self.cfg, self.host)}  # url_env, {db.password}: never in argv
        self.host.write(D.env_file_path(self.cfg), "".join(f"{k}={v}\n" for k, v in sorted(env.items())), mode="0600")

    def _execute_one(self, s, run: _Run) -> None:
        cfg, host, t = self.cfg, self.host, run.target
        if isinstance(s, P.Pull):
            self.step(f"pull {s.image}")
            self.pull(s.image)
        elif isinstance(s, P.PrepareVolumes):
            self.prepare_volumes(s.image)
        elif isinstance(s, P.Record):
            run.colour = s.colour
            entry = Release(id=s.release, version=t.version, digest=t.digest, image=t.image, colour=s.colour,
                            time=now_iso(), who=LockInfo.mine(self.command).holder, kind=s.kind, note=s.note)
            # recorded before traffic moves: a full disk stops us here, and a killed ferry is repaired later
            self.step(f"record release {s.release} (in progress)")
            run.history = run.facts.history.append(entry)
            self.write_history(run.history)
            self.event("start", s.release, t.version, t.digest, s.colour)
        elif isinstance(s, P.RunReleaseCommand):
            self.run_release_command(run, s.release)
        elif isinstance(s, P.RemoveContainers):
            host.run(D.rm_many_argv(cfg, list(s.names)))
        elif isinstance(s, P.StartWeb):
            run.serves = s.release
            port = cfg.deploy.colours[s.colour]
            name = D.container_name(cfg, s.colour)
            taken = host.run(D.port_taken_argv(port))
            if taken.ok and taken.stdout.strip():
                raise DeployError(f"{host.name}: port {port} for {s.colour} is already taken: {taken.stdout.strip()[:200]}",
                                  f"stop what listens there, or change deploy.colours.{s.colour} in ferry.toml")
            self.step(f"start {name} on 127.0.0.1:{port}")
            run.created.append(name)
            r = host.run(D.run_argv(cfg, s.colour, t.image, s.release, t.version, t.digest))
            if not r.ok:
                raise DeployError(f"{host.name}: docker run {name} failed: {r.stderr.strip()[-400:]}",
                                  "check the image and deploy.resources")
        elif isinstance(s, P.StartWorkers):
            run.serves = run.serves or s.release
            self.start_workers(run, s)
        elif isinstance(s, P.GateWeb):
            self.health_gate(D.container_name(cfg, s.colour), cfg.deploy.colours[s.colour])
        elif isinstance(s, P.GateWorkers):
            self.worker_gate(list(s.names))
        elif isinstance(s, P.Swap):
            run.serves = s.release
            self.swap(s.colour, s.release, s.previous)
            run.swapped_at = time.monotonic()
        elif isinstance(s, P.Commit):
            self.commit(run, s.release)
        elif isinstance(s, P.StopWorkers):
            self.step(f"stop the previous workers {', '.join(s.names)} (SIGTERM, {s.timeout:.0f}s)")
            host.run(D.stop_many_argv(cfg, list(s.names), s.timeout), timeout=s.timeout + 60)
        elif isinstance(s, P.Retire):
            self.retire(s.container)
        elif isinstance(s, P.Prune):
            self.prune(run.history or run.facts.history, set(s.in_use))
        else:
            raise TypeError(f"the runner has no way to execute {s!r}")

    def _undo(self, run: _Run, e: BaseException) -> None:
        host, t = self.host, run.target
        old = run.facts.live
        self.progress.warn(f"release {run.rid} failed; traffic stays on "
                           f"{old.colour + ' (' + old.release + ')' if old else 'nothing'}", host=host.name)
        if run.created:
            host.run(D.rm_many_argv(self.cfg, run.created))
        if run.history is None:
            return  # nothing recorded: the failure came before anything changed
        outcome = FAILED if isinstance(e, FerryError) else ABORTED
        changes = {"outcome": outcome, "note": str(e)[:300]}
        if run.release_command:
            changes["release_command"] = run.release_command.to_json()
        try:
            self.write_history(run.history.update(run.rid, **changes))
        except FerryError:
            pass
        self.event("failure", run.rid, t.version, t.digest, run.colour, round(time.monotonic() - run.t0, 2))

    def commit(self, run: _Run, rid: str) -> None:
        t, cfg = run.target, self.cfg
        changes: dict = {"outcome": SUCCESS, "duration": round(time.monotonic() - run.t0, 2)}
        if run.release_command:
            changes["release_command"] = run.release_command.to_json()
        assert run.history is not None
        history = run.history.update(rid, **changes)
        try:
            self.write_history(history)
        except FerryError:
            # the host must not serve a release its history does not know: go back
            self.progress.warn("cannot record the release: moving traffic back", host=self.host.name)
            old = run.facts.live
            if old:
                nginx.apply(self.host, cfg, {nginx.upstream_path(cfg): nginx.render_upstream(cfg, old.colour, old.release)})
            raise
        run.history = history
        run.committed = True
        swapped = round((run.swapped_at or time.monotonic()) - run.t0, 3)
        self.event("rollback" if t.kind == "rollback" else "success", run.serves, t.version, t.digest, run.colour,
                   swapped if t.kind == "rollback" else round(time.monotonic() - run.t0, 2))

    # --- volumes, the release command, workers ------------------------------------------------

    def prepare_volumes(self, image: str) -> None:
        """Each deploy.volumes directory, owned by the image's user, before anything changes."""
        cfg = self.cfg
        self.step(f"volumes {', '.join(sorted(cfg.deploy.volumes))} in {D.volumes_dir(cfg)}")
        r = self.host.run(D.image_user_argv(cfg, image))
        if not r.ok:
            raise DeployError(f"{self.host.name}: cannot read the user of {image}: {r.stderr.strip()[-300:]}",
                              "was the pull successful? run the release again")
        ids = P.parse_user(r.stdout)
        if ids is None:
            raise VolumeError(f"{self.host.name}: the image runs as user {r.stdout.strip()!r}, not a numeric uid; "
                              "ferry cannot tell which owner its volumes need",
                              'build it with a numeric image.user, e.g. user = "65532:65532"')
        r = self.host.run(D.volumes_create_argv(cfg, *ids))
        if not r.ok:
            raise VolumeError(f"{self.host.name}: cannot create the volumes under {D.volumes_dir(cfg)}: "
                              f"{(r.stderr.strip() or r.stdout.strip())[-400:]}",
                              "each volume path must be a directory or absent: move away what is there "
                              "(nothing was changed; traffic stays where it was)")

    def run_release_command(self, run: _Run, rid: str) -> None:
        cfg, t = self.cfg, run.target
        cmd = cfg.deploy.release_command
        name = D.release_command_name(cfg, rid)
        self.step(f"release command {shlex.join(cmd)} ({name}, up to {cfg.deploy.release_timeout:.0f}s)")
        run.created.append(name)
        t0 = time.monotonic()

        def line(text: str) -> None:
            self.progress.info(f"release: {text}", host=self.host.name)
            self.lock.touch()

        r = self.host.stream(D.release_command_argv(cfg, t.image, rid, t.version, t.digest), line,
                             timeout=cfg.deploy.release_timeout)
        took = round(time.monotonic() - t0, 2)
        timed_out = r.exit_code == 124 and r.stderr.startswith("timed out")
        run.release_command = ReleaseCommandRun(None if timed_out else r.exit_code, took, r.ok)
        if r.ok:
            run.created.remove(name)  # --rm: it is gone
            self.progress.info(f"release command done ({took:.1f}s)", host=self.host.name)
            return
        self.host.run(D.rm_argv(cfg, name))
        why = (f"still running after deploy.release_timeout ({cfg.deploy.release_timeout:.0f}s), killed" if timed_out
               else f"exit code {r.exit_code}")
        raise ReleaseCommandFailed(
            f"{self.host.name}: release command `{shlex.join(cmd)}` failed ({why}); output: "
            f"{_tail(r.stdout + chr(10) + (r.stderr if not timed_out else '')) or '(none)'}",
            "the live release and traffic are unchanged; fix the command (or raise deploy.release_timeout) "
            "and release again", details={"release_command": run.release_command.to_json()})

    def start_workers(self, run: _Run, s: P.StartWorkers) -> None:
        cfg, t = self.cfg, run.target
        self.step(f"start workers {', '.join(s.names)}")
        started = []
        for process in sorted(cfg.processes):
            proc = cfg.processes[process]
            for n in range(1, proc.replicas + 1):
                name = D.worker_name(cfg, process, n, s.colour)
                run.created.append(name)
                r = self.host.run(D.worker_run_argv(cfg, process, proc, n, s.colour, t.image, s.release,
                                                    t.version, t.digest))
                if not r.ok:
                    raise WorkerFailed(f"{self.host.name}: docker run {name} failed: {r.stderr.strip()[-400:]}",
                                       f"check processes.{process}.command and the image")
                started.append(name)
        run.workers = tuple(started)

    def worker_gate(self, names: list[str]) -> None:
        """Every worker running and not restarting for its process's healthy_after (or its
        health command exiting 0 inside it), within healthy_after + deploy.health.timeout."""
        cfg = self.cfg
        procs = {D.worker_name(cfg, p, n, c): cfg.processes[p] for p in cfg.processes
                 for n in range(1, cfg.processes[p].replicas + 1) for c in COLOURS}
        longest = max(procs[n].healthy_after for n in names)
        self.step(f"worker gate: {len(names)} running steadily (up to {longest + cfg.deploy.health.timeout:.0f}s)")
        t0 = time.monotonic()
        deadline = t0 + longest + cfg.deploy.health.timeout
        healthy: set[str] = set()
        while True:
            r = self.host.run(D.workers_state_argv(cfg, names))
            states = P.parse_worker_states(r.stdout)
            for name in names:
                failed = P.worker_failure(states.get(name))
                if failed:
                    self._fail_worker(name, failed)
            for name in names:
                if name not in healthy and procs[name].health:
                    if self.host.run(D.exec_argv(cfg, name, procs[name].health), timeout=30).ok:
                        healthy.add(name)
            elapsed = time.monotonic() - t0
            pending = [n for n in names if (n not in healthy if procs[n].health else elapsed < procs[n].healthy_after)]
            if not pending:
                self.progress.info(f"workers steady ({len(names)})", host=self.host.name)
                return
            if time.monotonic() > deadline:
                p = procs[pending[0]]
                self._fail_worker(pending[0], f"its health command `{shlex.join(p.health)}` never exited 0"
                                  if p.health else "it did not stay up")
            self.lock.touch()
            time.sleep(0.5)

    def _fail_worker(self, name: str, why: str) -> None:
        logs = self.host.run(D.logs_argv(self.cfg, name, 20))
        raise WorkerFailed(f"{self.host.name}: worker {name} failed its gate: {why}; its log: "
                           f"{_tail(logs.stdout + chr(10) + logs.stderr) or '(empty)'}",
                           "web traffic did not move and the previous workers keep running; fix the process "
                           "(see its log) and release again")


    def pull(self, image: str) -> None:
        cfg, host = self.cfg, self.host
        creds = self.creds() if callable(self.creds) else self.creds
        if creds:
            user, password = creds
            r = host.run(pull_argv(D.docker(cfg), image, user), stdin=password + "\n")
        else:
            r = host.run(pull_argv(D.docker(cfg), image))
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
            failed = P.web_failure(st)
            if failed:
                self._fail_health(name, port, failed, last)
            last = probe
            if 200 <= last[0] < 400:
                passes += 1
                if passes >= h.healthy_after:
                    self.progress.info(f"healthy ({passes} passes)", host=self.host.name)
                    return
            else:
                passes = 0
            self.lock.touch()
            time.sleep(P.health_poll_delay(h, passes))
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
            nginx.proxy_path(cfg): nginx.render_proxy(cfg, behind_balancer=self.behind_balancer,
                                                     balancer_networks=self.balancer_networks),
            nginx.site_path(cfg): nginx.render_site(cfg, tls=self.tls_ready(), extra_names=self.server_names),
        }
        nginx.apply(host, cfg, files)
        try:
            self.verify(rid, cfg.deploy.colours[colour])
        except FerryError:
            if old:
                nginx.apply(host, cfg, {nginx.upstream_path(cfg): nginx.render_upstream(cfg, old.colour, old.release)})
            else:
                host.run(D.remove_file_argv(nginx.site_path(cfg)))
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
        was answered by the new colour's container (its port, as nginx reports to ferry only).
        Polled on the host (docker.verify_loop_argv): one command, however long the reload takes."""
        url, argv = D.verify_loop_argv(self.cfg, self.tls_ready(), rid, port, timeout)
        self.step(f"verify through nginx: {url}")
        r = self.host.run(argv, timeout=timeout + 30)
        if r.ok and P.verified(r.stdout, rid, port):
            return
        seen = P.response_head(r.stdout)[0] or r.stderr.strip()
        raise DeployError(f"{self.host.name}: nginx does not serve release {rid} after the reload (saw: {seen[:200]})",
                          "traffic was moved back; check nginx's error log and deploy.health.path")

    def retire(self, old: Container | None) -> None:
        """Old nginx workers keep serving the requests they hold after a reload: the old colour
        stays up until they are done (or drain_timeout), then it stays warm for keep_previous
        (a host-side timer stops it later) or stops. The drain is polled on the host and
        followed by the timer or the stop in the same SSH command (docker.drain_then_argv)."""
        if not old:
            return
        cfg = self.cfg
        self.step(f"drain {old.name}")
        keep = cfg.deploy.keep_previous
        if keep > 0 and old.running:
            self.progress.info(f"{old.name} stays warm for {keep:.0f}s: `ferry rollback` is one reload", host=self.host.name)
            then = self.schedule_stop_argv(old, keep)
        else:
            self.progress.info(f"then stop {old.name}", host=self.host.name)
            then = D.stop_argv(cfg, old.name)
        timeout = cfg.deploy.drain_timeout
        r = self.host.run(D.drain_then_argv(timeout, then), timeout=2 * timeout + 60)  # the drain, then docker stop's
        if D.STILL_DRAINING in r.stdout:
            self.progress.warn(f"requests still in flight after {timeout:.0f}s (drain_timeout)", host=self.host.name)

    def schedule_stop_argv(self, c: Container, after: float) -> list[str]:
        """A host-side timer stops the warm colour later, unless by then it is live again or was
        replaced by another release (checked by label)."""
        cfg = self.cfg
        return D.schedule_stop_argv(cfg, c.name, c.release, cfg.deploy.colours[c.colour], nginx.upstream_path(cfg), after)

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

    def rollback(self, to: str | None = None) -> RollbackResult:
        t0 = time.monotonic()
        self.step(f"lock {self.cfg.app.name}")
        self.lock.acquire(LockInfo.mine(self.command), force=self.force, progress=self.progress)
        try:
            facts = self.locked_facts()
            route = P.rollback_route(facts, to, self.host.name)
            live = facts.live
            if route.kind == "none":
                self.progress.info(f"{route.target.id} is already live: nothing to do", host=self.host.name)
                assert live is not None
                return RollbackResult(self.host.name, "none", live.release, live.colour, live.digest, live.version,
                                      repaired=tuple(self.repaired))
            if route.kind == "warm":
                warm = route.warm
                assert warm is not None
                rid = release_id(route.target.digest, taken={r.id for r in facts.history.releases})
                target = Target(route.target.image, warm.digest, warm.version, kind="rollback", release_command=False)
                run = self.execute(facts, target, rid, P.warm_rollback_plan(self.cfg, facts, route, rid), t0)
                return RollbackResult(self.host.name, "rolled-back", warm.release, warm.colour, warm.digest,
                                      warm.version, warm=True, entry=rid, previous=live.release if live else None,
                                      swap_seconds=round((run.swapped_at or time.monotonic()) - t0, 3),
                                      duration=round(time.monotonic() - t0, 2), repaired=tuple(self.repaired),
                                      workers=run.workers)
            self.progress.info(f"{route.target.id} is not warm: a gated deploy of {route.target.image}",
                               host=self.host.name)
            target = P.cold_rollback_target(route)
            rid = release_id(target.digest, taken={r.id for r in facts.history.releases})
            run = self.execute(facts, target, rid, P.release_plan(self.cfg, facts, target, rid), t0)
            return RollbackResult(self.host.name, "rolled-back", rid, run.colour, target.digest, target.version,
                                  warm=False, entry=rid, previous=live.release if live else None,
                                  swap_seconds=round((run.swapped_at or time.monotonic()) - t0, 3),
                                  duration=round(time.monotonic() - t0, 2), repaired=tuple(self.repaired),
                                  workers=run.workers)
        finally:
            self.lock.release()

    # --- repair --------------------------------------------------------------------------------

    def repair_locked(self) -> list[str]:
        """Finish or undo what a killed ferry left (in-progress entries), with the lock held:
        plan.repair_plan decides, this executes."""
        history = self.read_history()
        if not history.in_progress():
            return []
        facts = self.observe(history)
        for s in P.repair_plan(self.cfg, facts):
            if isinstance(s, P.CleanTemp):
                self.host.run(D.clean_temp_argv(self.dir))
            elif isinstance(s, P.Reload):
                nginx.test_and_reload(self.host, self.cfg)
            elif isinstance(s, P.PointUpstream):
                nginx.apply(self.host, self.cfg, {nginx.upstream_path(self.cfg):
                                                  nginx.render_upstream(self.cfg, s.colour, s.release)})
            elif isinstance(s, P.RemoveContainers):
                self.host.run(D.rm_many_argv(self.cfg, list(s.names)))
            elif isinstance(s, P.StopWorkers):
                self.host.run(D.stop_many_argv(self.cfg, list(s.names), s.timeout), timeout=s.timeout + 60)
            elif isinstance(s, P.Resolve):
                history = history.update(s.release, outcome=s.outcome, note=s.note)
                self.progress.warn(f"repair: {s.message}", host=self.host.name)
                self.repaired.append(s.message)
            else:
                raise TypeError(f"repair has no way to execute {s!r}")
        self.write_history(history)
        return self.repaired

    # --- status --------------------------------------------------------------------------------

    def status(self, repair: bool = True) -> HostStatus:
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
        facts = self.observe()
        live = facts.live
        health = None
        if live:
            code, body = self.probe(self.cfg.deploy.colours[live.colour])
            health = {"status": code, "ok": 200 <= code < 400}
        warm = tuple(c.to_json() for col, c in facts.containers.items() if col != facts.live_colour and c.running)
        workers: dict[str, list[WorkerStatus]] = {}
        for w in sorted(facts.workers, key=lambda w: (w.release, w.process, w.replica)):
            workers.setdefault(w.release, []).append(WorkerStatus(w.name, w.process, w.replica, w.release, w.colour,
                                                                  w.running, w.state))
        return HostStatus(
            host=self.host.name,
            live=None if not live else {"colour": live.colour, "release": live.release, "digest": live.digest,
                                        "version": live.version, "running": live.running},
            health=health, warm=warm, lock=lock_state.to_json(),
            pending=tuple(r.id for r in facts.history.in_progress()),
            releases=tuple(r.to_json() for r in facts.history.recent(5)),
            repaired=tuple(self.repaired), volumes=self.volume_sizes(),
            workers={r: tuple(ws) for r, ws in workers.items()})

    def volume_sizes(self) -> tuple[VolumeStatus, ...]:
        cfg = self.cfg
        if not cfg.deploy.volumes:
            return ()
        r = self.host.run(D.volumes_size_argv(cfg))  # exit 1 when one is missing: the others still print
        sizes = P.parse_du(r.stdout)
        return tuple(VolumeStatus(n, cfg.deploy.volumes[n], D.volume_path(cfg, n), sizes.get(D.volume_path(cfg, n)))
                     for n in sorted(cfg.deploy.volumes))

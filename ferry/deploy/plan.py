"""Pure decisions of a deploy, a rollback and a repair: observed facts in, typed steps out.

The runner (runner.py) reads the host into a ``HostFacts`` (history, the upstream file's live
colour, the labelled containers, which web colours answer their health path), asks one of the
functions here what to do, and executes the steps in order. No I/O here: every decision (is it
already live, which colour starts, which leftovers make way, warm or cold rollback, what a
killed ferry left and how to finish or undo it) is unit-tested as plain data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..config import Config
from ..errors import NothingToRollBack
from . import docker as D
from .history import ABORTED, FAILED, SUCCESS, History, Release

COLOURS = ("blue", "green")


@dataclass(frozen=True)
class Target:
    """What a release puts live. ``release_command``: this host runs deploy.release_command
    (the first host of a release only; never for a rollback)."""

    image: str  # repository@sha256:...
    digest: str
    version: str
    kind: str = "deploy"
    note: str = ""
    release_command: bool = True


@dataclass(frozen=True)
class Container:
    """One of the app's containers as its labels describe it."""

    colour: str
    name: str
    running: bool
    release: str
    version: str
    digest: str
    state: str
    role: str = D.WEB  # web | worker | release
    process: str = ""
    replica: int = 0

    def to_json(self) -> dict:
        out = {"colour": self.colour, "name": self.name, "running": self.running, "release": self.release,
               "version": self.version, "digest": self.digest, "state": self.state}
        if self.role != D.WEB:
            out.update(role=self.role, process=self.process, replica=self.replica)
        return out


@dataclass(frozen=True)
class HostFacts:
    """What a host says before a decision: read once, never changed by a plan."""

    history: History
    live_colour: str | None
    containers: dict[str, Container] = field(default_factory=dict)  # web containers by colour
    workers: tuple[Container, ...] = ()
    oneoffs: tuple[Container, ...] = ()  # release-command containers (none once a release ends)
    healthy: frozenset[str] = frozenset()  # web colours whose health path answered 2xx/3xx

    @property
    def live(self) -> Container | None:
        return self.containers.get(self.live_colour) if self.live_colour else None

    def workers_of(self, release: str) -> list[Container]:
        return [w for w in self.workers if w.release == release]


# --- steps ---------------------------------------------------------------------------------------
# Each is what the runner does next; the names say it. A failure in any step before ``Commit``
# removes the containers this release created, so traffic and the live release stay as they were.

@dataclass(frozen=True)
class AlreadyLive:
    container: Container


@dataclass(frozen=True)
class Pull:
    image: str


@dataclass(frozen=True)
class PrepareVolumes:
    """Create <root>/<app>/volumes/<name> owned by ``image``'s user (idempotent)."""

    image: str


@dataclass(frozen=True)
class Record:
    """The history entry, in progress, before anything that serves changes."""

    release: str
    colour: str
    kind: str
    note: str = ""


@dataclass(frozen=True)
class RunReleaseCommand:
    release: str


@dataclass(frozen=True)
class RemoveContainers:
    """Leftovers in the colour about to start (a warm earlier release, its stopped workers)."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class StartWeb:
    colour: str
    release: str


@dataclass(frozen=True)
class StartWorkers:
    colour: str
    release: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class GateWeb:
    colour: str


@dataclass(frozen=True)
class GateWorkers:
    names: tuple[str, ...]


@dataclass(frozen=True)
class Swap:
    colour: str
    release: str  # what the upstream names (X-Ferry-Release)
    previous: Container | None


@dataclass(frozen=True)
class Commit:
    """Record success; from here the release is live and is not undone."""

    release: str


@dataclass(frozen=True)
class StopWorkers:
    """docker stop -t stop_timeout (SIGTERM first): the previous release's workers."""

    names: tuple[str, ...]
    timeout: float


@dataclass(frozen=True)
class Retire:
    """Drain the old web colour, then keep it warm (keep_previous) or stop it."""

    container: Container


@dataclass(frozen=True)
class Prune:
    in_use: tuple[str, ...]  # digests still used by the live or the warm colour


# repair-only steps
@dataclass(frozen=True)
class CleanTemp:
    """Half-written files of an interrupted atomic write."""


@dataclass(frozen=True)
class Reload:
    """nginx -t and reload: the swap was written, make sure nginx runs it."""


@dataclass(frozen=True)
class PointUpstream:
    colour: str
    release: str


@dataclass(frozen=True)
class Resolve:
    """Close an in-progress history entry; ``message`` is what the operator is told."""

    release: str
    outcome: str
    note: str
    message: str


Step = (AlreadyLive | Pull | PrepareVolumes | Record | RunReleaseCommand | RemoveContainers | StartWeb | StartWorkers
        | GateWeb | GateWorkers | Swap | Commit | StopWorkers | Retire | Prune | CleanTemp | Reload | PointUpstream
        | Resolve)


def idle_colour(live: str | None) -> str:
    """The colour a new release starts in: the one not serving (blue on a fresh host)."""
    return "green" if live == "blue" else "blue"


def worker_names(cfg: Config, colour: str) -> tuple[str, ...]:
    """Every replica of every [processes.NAME], in name order: ``<app>-<process>-<n>-<colour>``."""
    return tuple(D.worker_name(cfg, p, n, colour) for p in sorted(cfg.processes)
                 for n in range(1, cfg.processes[p].replicas + 1))


def _stop_old_workers(cfg: Config, facts: HostFacts, keep_release: str) -> list[Step]:
    """One StopWorkers per process (each has its own stop_timeout) for running workers of any
    other release; a process no longer configured stops with the default 30 s."""
    by_process: dict[str, list[str]] = {}
    for w in facts.workers:
        if w.running and w.release != keep_release:
            by_process.setdefault(w.process, []).append(w.name)
    return [StopWorkers(tuple(sorted(names)), cfg.processes[p].stop_timeout if p in cfg.processes else 30.0)
            for p, names in sorted(by_process.items())]


def _workers_complete(cfg: Config, facts: HostFacts, c: Container) -> bool:
    running = {w.name for w in facts.workers_of(c.release) if w.running}
    return set(worker_names(cfg, c.colour)) <= running


def release_plan(cfg: Config, facts: HostFacts, target: Target, rid: str) -> list[Step]:
    """A release's steps on one host: pull → volumes → record → release command → make way →
    start web and workers → gate both → swap → commit → stop old workers → retire old web →
    prune. Nothing to do when the image is live, healthy and its workers all run."""
    live = facts.live
    if (live and live.running and live.digest == target.digest and live.colour in facts.healthy
            and _workers_complete(cfg, facts, live)):
        return [AlreadyLive(live)]
    colour = idle_colour(facts.live_colour)
    steps: list[Step] = [Pull(target.image)]
    if cfg.deploy.volumes:
        steps.append(PrepareVolumes(target.image))
    steps.append(Record(rid, colour, target.kind, target.note))
    if target.release_command and target.kind == "deploy" and cfg.deploy.release_command:
        steps.append(RunReleaseCommand(rid))
    steps += _start_and_swap(cfg, facts, colour, rid, rid, web=True)
    steps.append(Prune(tuple(sorted({target.digest} | ({live.digest} if live else set())))))
    return steps


def _start_and_swap(cfg: Config, facts: HostFacts, colour: str, serves: str, entry: str, web: bool) -> list[Step]:
    """``serves``: the release the colour's containers carry (the upstream names it); ``entry``:
    the history entry this commits (a warm rollback's own entry serves an older release)."""
    names = worker_names(cfg, colour)
    leftovers = sorted(({facts.containers[colour].name} if web and colour in facts.containers else set())
                       | {w.name for w in facts.workers if w.colour == colour})
    steps: list[Step] = []
    if leftovers:
        steps.append(RemoveContainers(tuple(leftovers)))
    if web:
        steps.append(StartWeb(colour, serves))
    if names:
        steps.append(StartWorkers(colour, serves, names))
    if web:
        steps.append(GateWeb(colour))
    if names:
        steps.append(GateWorkers(names))
    old = facts.live
    steps += [Swap(colour, serves, old), Commit(entry)]
    steps += _stop_old_workers(cfg, facts, serves)
    if old:
        steps.append(Retire(old))
    return steps


@dataclass(frozen=True)
class Route:
    """How a rollback goes: ``none`` (the target is live), ``warm`` (its colour still runs and
    answers: start its workers, one reload) or ``cold`` (a gated deploy of its image)."""

    kind: str
    target: Release
    warm: Container | None = None


def rollback_route(facts: HostFacts, to: str | None, host: str = "") -> Route:
    live = facts.live
    where = f"{host}: " if host else ""
    if to:
        target = facts.history.get(to)
        if target is None or target.outcome != SUCCESS:
            raise NothingToRollBack(f"{where}no successful release {to!r} in the history",
                                    "`ferry status` lists the releases")
    else:
        target = facts.history.rollback_target(live.digest if live else None)
        if target is None:
            raise NothingToRollBack(f"{where}there is no earlier successful release to go back to",
                                    "deploy a fixed release instead")
    if live and live.digest == target.digest:
        return Route("none", target)
    other = idle_colour(facts.live_colour)
    warm = facts.containers.get(other)
    if warm and warm.running and warm.digest == target.digest and other in facts.healthy:
        return Route("warm", target, warm)
    return Route("cold", target)


def warm_rollback_plan(cfg: Config, facts: HostFacts, route: Route, rid: str) -> list[Step]:
    """Back to the warm colour: its release's workers start again (from its digest), gate, one
    reload, then the current release's workers stop. The release command never runs."""
    warm = route.warm
    assert warm is not None
    steps: list[Step] = [Record(rid, warm.colour, "rollback", f"rollback to {route.target.id} (warm)")]
    return steps + _start_and_swap(cfg, facts, warm.colour, warm.release, rid, web=False)


def cold_rollback_target(route: Route) -> Target:
    t = route.target
    return Target(t.image, t.digest, t.version, kind="rollback", note=f"rollback to {t.id}", release_command=False)


def repair_plan(cfg: Config, facts: HostFacts) -> list[Step]:
    """What a killed ferry left (in-progress history entries), finished or undone:

    - the swap had happened and the new colour answers: reload nginx (it may not have loaded
      the file), the entry succeeds, the other releases' workers stop;
    - the swap had happened but the new colour does not answer: traffic goes back to the other
      colour if it runs, the new release's workers are removed, the entry fails;
    - traffic had not moved: whatever the entry started (web, workers, a release command still
      running) is removed, the entry is aborted. An older warm container is left alone.
    """
    pending = facts.history.in_progress()
    if not pending:
        return []
    steps: list[Step] = [CleanTemp()]
    for entry in pending:
        live = facts.live
        mine = sorted(w.name for w in facts.workers if w.release == entry.id) + \
            sorted(o.name for o in facts.oneoffs if o.release == entry.id)
        if facts.live_colour == entry.colour and live and live.release == entry.id:
            if entry.colour in facts.healthy:
                steps += [Reload()]
                steps += _stop_old_workers(cfg, facts, entry.id)
                steps.append(Resolve(entry.id, SUCCESS, "completed by repair after an interrupted deploy",
                                     f"interrupted deploy {entry.id}: the swap had happened; completed"))
                continue
            other = idle_colour(entry.colour)
            back = facts.containers.get(other)
            if back and back.running:
                steps.append(PointUpstream(other, back.release))
            if mine:
                steps.append(RemoveContainers(tuple(mine)))
            steps.append(Resolve(entry.id, FAILED, "unhealthy after an interrupted deploy; traffic moved back",
                                 f"interrupted deploy {entry.id}: new colour unhealthy; traffic moved back to {other}"))
            continue
        c = facts.containers.get(entry.colour)
        web = [c.name] if c and c.release == entry.id else []
        if web or mine:
            steps.append(RemoveContainers(tuple(web + mine)))
        steps.append(Resolve(entry.id, ABORTED, "interrupted before traffic moved; cleaned up",
                             f"interrupted deploy {entry.id}: traffic had not moved; removed its containers"))
    return steps


def images_to_prune(rows: list[dict], history: History, keep: int, in_use: set[str]) -> list[str]:
    """Image references (repo@digest) on the host beyond the last ``keep`` successful releases,
    never one a container (live or warm) still uses. ``rows`` are `docker images --format json`."""
    kept: list[str] = []
    for r in reversed(history.releases):
        if r.outcome == SUCCESS and r.digest not in kept:
            kept.append(r.digest)
        if len(kept) >= keep:
            break
    keep_set = set(kept) | in_use
    out = []
    for row in rows:
        digest = row.get("Digest") or ""
        if not digest.startswith("sha256:") or digest in keep_set:
            continue
        out.append(f"{row.get('Repository')}@{digest}")
    return sorted(set(out))


def parse_user(user: str) -> tuple[int, int] | None:
    """An image config's User as uid, gid (``65532:65532``, ``65532``, empty for root); None
    for a user name, which only the image's /etc/passwd can resolve."""
    user = user.strip()
    if not user:
        return 0, 0
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        return None
    return int(uid), int(gid or uid)


# --- reading what docker says (pure parsers the runner feeds) -----------------------------------

def containers_from_ps(rows: list[dict]) -> tuple[dict[str, Container], tuple[Container, ...], tuple[Container, ...]]:
    """`docker ps --format json` rows of the app -> (web by colour, workers, release-command
    one-offs). A container without a role label is web (ferry before workers labelled none)."""
    web: dict[str, Container] = {}
    workers: list[Container] = []
    oneoffs: list[Container] = []
    for row in rows:
        labels = D.labels_of(row)
        get = lambda k: labels.get(f"{D.LABEL}.{k}", "")  # noqa: E731
        role = get("role") or D.WEB
        replica = get("replica")
        c = Container(get("colour"), row.get("Names", ""), row.get("State") == "running", get("release"),
                      get("version"), get("digest"), row.get("Status", ""), role, get("process"),
                      int(replica) if replica.isdigit() else 0)
        if role == D.WEB and c.colour in COLOURS:
            web[c.colour] = c
        elif role == D.WORKER:
            workers.append(c)
        elif role == D.RELEASE:
            oneoffs.append(c)
    return web, tuple(sorted(workers, key=lambda w: w.name)), tuple(oneoffs)


@dataclass(frozen=True)
class ContainerState:
    status: str  # created | running | restarting | exited | dead ...
    exit_code: int
    restarts: int


def _state(parts: list[str]) -> ContainerState:
    def num(i: int) -> int:
        return int(parts[i]) if len(parts) > i and parts[i].strip().lstrip("-").isdigit() else 0
    return ContainerState(parts[0].strip() if parts else "", num(1), num(2))


def parse_web_state(line: str) -> ContainerState:
    """docker.inspect_state_argv's output: status|exit code|restarts|release."""
    return _state(line.strip().split("|"))


def health_poll_delay(health, passes: int) -> float:
    """Seconds until the next health poll: ``start_interval`` while no answer has passed yet
    (the app is booting; noticed soon after it listens), ``interval`` between the answers that
    must pass in a row (never shorter than asked: ``start_interval`` above it is capped)."""
    return health.interval if passes else min(health.start_interval, health.interval)


def web_failure(parts: list[str] | ContainerState) -> str | None:
    """Why a starting web container will never pass its gate, or None while it may."""
    st = parts if isinstance(parts, ContainerState) else _state(parts)
    if st.status in ("exited", "dead") or st.restarts > 0:
        return f"the container exited at start (exit code {st.exit_code})"
    return None


def parse_worker_states(text: str) -> dict[str, ContainerState]:
    """docker.workers_state_argv's output: /name|status|exit code|restarts a line."""
    out = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 4 and parts[0]:
            out[parts[0].lstrip("/")] = _state(parts[1:])
    return out


def worker_failure(st: ContainerState | None) -> str | None:
    """A worker fails its gate as soon as it is gone, has exited or has restarted once."""
    if st is None:
        return "the container is gone"
    if st.status in ("exited", "dead"):
        return f"it exited (exit code {st.exit_code})"
    if st.status == "restarting" or st.restarts > 0:
        return f"it keeps restarting ({st.restarts} restarts, last exit code {st.exit_code})"
    return None


def parse_du(text: str) -> dict[str, int]:
    """`du -sb PATH...`: path -> bytes."""
    out = {}
    for line in text.splitlines():
        size, _, path = line.partition("\t")
        if size.strip().isdigit() and path:
            out[path.strip()] = int(size)
    return out


def probe_result(stdout: str, stderr: str = "") -> tuple[int, str]:
    """docker.probe_argv's output: (status, body excerpt); status 0 = no answer."""
    body, _, code = stdout.rpartition("\n")
    try:
        status = int(code.strip() or 0)
    except ValueError:
        status = 0
    return status, (body or stderr).strip()[:300]


@dataclass(frozen=True)
class Observed:
    """docker.observe_argv's output, split: docker ps (exit code, output) and each colour's
    probe status."""

    ps_exit: int
    ps_output: str
    probes: dict[str, int]

    def rows(self) -> list[dict]:
        """The `docker ps --format json` rows (other lines, a warning say, are skipped)."""
        out = []
        for line in self.ps_output.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                out.append(row)
        return out


def parse_observe(text: str, colours: list[str]) -> Observed:
    """Split observe_argv's output; ``colours`` in the order it probed them (sorted). A
    section that is missing (the script cut short) is a failed ps or an unanswered probe."""
    ps, sep, rest = text.partition(D.OBSERVE_SEP)
    code_text, _, rest = rest.partition("\n")
    code = int(code_text.strip()) if sep and code_text.strip().isdigit() else 1
    sections = rest.split(D.OBSERVE_SEP)[1:]
    probes = {c: probe_result(sections[i])[0] if i < len(sections) else 0 for i, c in enumerate(colours)}
    return Observed(code, ps, probes)


def healthy_colours(web: dict[str, Container], probes: dict[str, int]) -> frozenset[str]:
    """The running web colours whose health path answered 2xx/3xx."""
    return frozenset(c for c, w in web.items() if w.running and 200 <= probes.get(c, 0) < 400)


def response_head(dump: str) -> tuple[str, dict[str, str]]:
    """curl -D output: (status line, lower-cased header names -> values) of the last response."""
    blocks = [b for b in dump.replace("\r\n", "\n").split("\n\n") if b.strip()]
    lines = blocks[-1].strip().split("\n") if blocks else [""]
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0].strip(), headers


def verified(dump: str, release: str, port: int) -> bool:
    """nginx serves ``release`` and the answer came from the colour on ``port`` (X-Ferry-Upstream,
    sent only to ferry's verify request), with a status a health path may give."""
    status_line, headers = response_head(dump)
    return (headers.get("x-ferry-release") == release and headers.get("x-ferry-upstream") == f"127.0.0.1:{port}"
            and any(f" {c}" in status_line for c in ("200", "204", "301", "302", "308")))

"""Deploy metrics: release events as ``ferry_deploy_*`` series for node_exporter's textfile
collector, one file per app on each host, written by the deployer over its SSH connection.

The pure part: ``parse`` the file a host has, ``apply`` one event, ``render`` the new file.
Counters live in the file itself (it is the only state), so they keep counting across deploys
from different machines, and start at 0 for every event kind so ``increase()`` sees the first
failure. The writer (``record_deploy_event``) never fails a deploy: monitoring is a witness.

Series (all labelled ``app``):
    ferry_deploy_events_total{event}                                  counter: start|success|failure|rollback
    ferry_deploy_last_event_timestamp_seconds{event,release,version}  when each kind last happened
                                                                       (Grafana annotations use the value as time)
    ferry_deploy_last_duration_seconds{outcome}                       how long the last success|failure|rollback took
    ferry_deploy_duration_seconds (summary: _sum, _count)             every finished deploy
    ferry_deploy_in_progress                                          1 between start and its end
    ferry_release_info{release,version,digest,colour}                 1 for the live release
    ferry_release_live_since_timestamp_seconds                        when the live release took traffic
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ..config import Config
from ..fleet.events import EVENTS, DeployEvent, EventSink
from ..progress import NULL, Progress
from .settings import settings as resolve_settings

if TYPE_CHECKING:
    from ..deploy.host import Host

OUTCOMES = ("success", "failure", "rollback")


@dataclass(frozen=True)
class LastEvent:
    time: float
    release: str
    version: str


@dataclass(frozen=True)
class Live:
    release: str
    version: str
    digest: str
    colour: str
    since: float


@dataclass(frozen=True)
class DeployMetrics:
    app: str
    counts: dict[str, int] = field(default_factory=lambda: {e: 0 for e in EVENTS})
    last: dict[str, LastEvent] = field(default_factory=dict)
    last_duration: dict[str, float] = field(default_factory=dict)
    duration_sum: float = 0.0
    duration_count: int = 0
    in_progress: bool = False
    live: Live | None = None


def apply(m: DeployMetrics, e: DeployEvent) -> DeployMetrics:
    counts = {**{k: 0 for k in EVENTS}, **m.counts}
    counts[e.kind] += 1
    last = {**m.last, e.kind: LastEvent(e.time, e.release, e.version)}
    out = replace(m, counts=counts, last=last)
    if e.kind == "start":
        return replace(out, in_progress=True)
    out = replace(out, in_progress=False)
    if e.duration is not None:
        out = replace(out, last_duration={**m.last_duration, e.kind: float(e.duration)},
                      duration_sum=m.duration_sum + float(e.duration), duration_count=m.duration_count + 1)
    if e.kind in ("success", "rollback"):
        out = replace(out, live=Live(e.release, e.version, e.digest, e.colour, e.time))
    return out


# --- the textfile format -----------------------------------------------------------------------

def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kv.items()) + "}"


def _num(v: float) -> str:
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def render(m: DeployMetrics) -> str:
    a = m.app
    lines = [
        "# managed by ferry: release events of this host's app (node_exporter textfile collector)",
        "# HELP ferry_deploy_events_total Release events ferry recorded on this host.",
        "# TYPE ferry_deploy_events_total counter",
    ]
    for ev in EVENTS:
        lines.append(f"ferry_deploy_events_total{_labels(app=a, event=ev)} {m.counts.get(ev, 0)}")
    lines += ["# HELP ferry_deploy_last_event_timestamp_seconds When each kind of release event last happened.",
              "# TYPE ferry_deploy_last_event_timestamp_seconds gauge"]
    for ev in EVENTS:
        if ev in m.last:
            le = m.last[ev]
            lines.append(f"ferry_deploy_last_event_timestamp_seconds"
                         f"{_labels(app=a, event=ev, release=le.release, version=le.version)} {_num(le.time)}")
    lines += ["# HELP ferry_deploy_last_duration_seconds How long the last deploy of each outcome took.",
              "# TYPE ferry_deploy_last_duration_seconds gauge"]
    for oc in OUTCOMES:
        if oc in m.last_duration:
            lines.append(f"ferry_deploy_last_duration_seconds{_labels(app=a, outcome=oc)} {_num(m.last_duration[oc])}")
    lines += ["# HELP ferry_deploy_duration_seconds Time from the start of a deploy to its end.",
              "# TYPE ferry_deploy_duration_seconds summary",
              f"ferry_deploy_duration_seconds_sum{_labels(app=a)} {_num(m.duration_sum)}",
              f"ferry_deploy_duration_seconds_count{_labels(app=a)} {m.duration_count}",
              "# HELP ferry_deploy_in_progress 1 while a deploy runs on this host.",
              "# TYPE ferry_deploy_in_progress gauge",
              f"ferry_deploy_in_progress{_labels(app=a)} {1 if m.in_progress else 0}"]
    if m.live:
        lv = m.live
        lines += ["# HELP ferry_release_info The release that takes traffic on this host.",
                  "# TYPE ferry_release_info gauge",
                  f"ferry_release_info{_labels(app=a, release=lv.release, version=lv.version, digest=lv.digest, colour=lv.colour)} 1",
                  "# HELP ferry_release_live_since_timestamp_seconds When the live release took traffic.",
                  "# TYPE ferry_release_live_since_timestamp_seconds gauge",
                  f"ferry_release_live_since_timestamp_seconds{_labels(app=a)} {_num(lv.since)}"]
    return "\n".join(lines) + "\n"


_LINE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _unesc(v: str) -> str:
    return re.sub(r"\\(.)", lambda mo: "\n" if mo.group(1) == "n" else mo.group(1), v)


def parse(text: str | None, app: str) -> DeployMetrics:
    """Read back what ``render`` wrote; anything unreadable starts from zero (a corrupt file
    must not stop a deploy), lines of other apps or unknown names are ignored."""
    m = DeployMetrics(app=app)
    if not text:
        return m
    counts = {e: 0 for e in EVENTS}
    last: dict[str, LastEvent] = {}
    last_duration: dict[str, float] = {}
    dsum, dcount, in_progress = 0.0, 0, False
    info: dict[str, str] | None = None
    since = None
    for line in text.splitlines():
        mo = _LINE_RE.match(line.strip())
        if not mo or line.startswith("#"):
            continue
        name, labels_text, value = mo.group(1), mo.group(3) or "", mo.group(4)
        labels = {k: _unesc(v) for k, v in _LABEL_RE.findall(labels_text)}
        if labels.get("app") != app:
            continue
        try:
            v = float(value)
        except ValueError:
            continue
        if name == "ferry_deploy_events_total" and labels.get("event") in counts:
            counts[labels["event"]] = int(v)
        elif name == "ferry_deploy_last_event_timestamp_seconds" and labels.get("event") in EVENTS:
            last[labels["event"]] = LastEvent(v, labels.get("release", ""), labels.get("version", ""))
        elif name == "ferry_deploy_last_duration_seconds" and labels.get("outcome") in OUTCOMES:
            last_duration[labels["outcome"]] = v
        elif name == "ferry_deploy_duration_seconds_sum":
            dsum = v
        elif name == "ferry_deploy_duration_seconds_count":
            dcount = int(v)
        elif name == "ferry_deploy_in_progress":
            in_progress = v == 1
        elif name == "ferry_release_info":
            info = labels
        elif name == "ferry_release_live_since_timestamp_seconds":
            since = v
    live = None
    if info is not None:
        live = Live(info.get("release", ""), info.get("version", ""), info.get("digest", ""), info.get("colour", ""),
                    since or 0.0)
    return DeployMetrics(app, counts, last, last_duration, dsum, dcount, in_progress, live)


# --- the writer the deployer calls ------------------------------------------------------------

def record_deploy_event(host: "Host", cfg: Config, event: DeployEvent, progress: Progress = NULL) -> bool:
    """Record one release event on ``host`` (a ``ferry.deploy.host.Host``, already open):
    update the app's ``ferry_deploy_*`` textfile and rewrite its scrape targets from what runs
    there now. A no-op when ``[monitoring] enabled`` is false. Never raises: a deploy must not
    fail because its witness did; problems become a warning. Returns True when written.

    The deployer reaches it through the callback ``deploy_event_sink`` makes (it never
    imports monitoring): "start" before the new colour starts, "success" after the swap is
    verified, "failure" when it gives up, "rollback" (the release live again) after a rollback.
    """
    if not cfg.monitoring.enabled:
        return False
    from ..errors import FerryError
    from .runner import refresh_targets

    s = resolve_settings(cfg, host.name)
    path = s.deploy_metrics_file()
    try:
        host.mkdir(s.textfile_dir, parents=True)
        current = parse(host.read(path), s.app)
        host.write(path, render(apply(current, event)), mode="0644")
        if event.kind != "start":  # at the start the new colour does not run yet: nothing to scrape
            refresh_targets(host, cfg, s)
        return True
    except FerryError as e:
        progress.warn(f"could not record the {event.kind} event for monitoring: {e}", host=host.name)
        return False


def deploy_event_sink(cfg: Config, progress: Progress = NULL) -> EventSink:
    """The callback the deploy reports its events to (fleet.events.EventSink)."""
    def sink(host: "Host", event: DeployEvent) -> None:
        record_deploy_event(host, cfg, event, progress)

    return sink

"""Grafana dashboards as code (grafana-foundation-sdk), checked in as JSON in monitoring/dashboards/.

Three dashboards, every panel a PromQL query against the provisioned data source (uid
``prometheus``):

- <app>-service: RED by colour and release (rate, 5xx ratio, latency p50/p95/p99), the SLO's error
  budget and burn rate, what is live, deploy outcomes, the public URL as a user sees it;
- host (one per host): CPU, memory, disk (with the 24-hour prediction the alert uses), network;
- nginx (one per host): connections, requests, every app's public URL probe.

Every dashboard marks releases: a Prometheus annotation whose value is the event's time
(``ferry_deploy_last_event_timestamp_seconds``, written by the deployer), so a latency change
lines up with the release that made it.

``python -m ferry.monitoring.dashboards`` (or ``ferry monitoring render``) rewrites the JSON;
a test fails when the checked-in files differ from what this module generates.
"""

from __future__ import annotations

import json
import re
from typing import Iterator

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from .render import FS_FILTER
from .settings import Settings

DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
RATE = "$__rate_interval"


def _target(expr: str, legend: str, ref: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).range()


def ts(title: str, unit: str, *queries: tuple[str, str], description: str = "", span: int = 12,
       height: int = 8, stack: bool = False) -> timeseries.Panel:
    p = (timeseries.Panel().title(title).datasource(DATASOURCE).unit(unit).span(span).height(height)
         .line_width(1).fill_opacity(10 if not stack else 40).show_points(_never()))
    if description:
        p = p.description(description)
    for i, (expr, legend) in enumerate(queries):
        p = p.with_target(_target(expr, legend, chr(ord("A") + i)))
    return p


def st(title: str, unit: str, expr: str, legend: str = "", description: str = "", span: int = 6,
       height: int = 4, text_name: bool = False) -> stat.Panel:
    p = (stat.Panel().title(title).datasource(DATASOURCE).unit(unit).span(span).height(height)
         .with_target(_target(expr, legend, "A")))
    if description:
        p = p.description(description)
    if text_name:
        from grafana_foundation_sdk.models.common import BigValueTextMode

        p = p.text_mode(BigValueTextMode.NAME)
    return p


def _never():
    from grafana_foundation_sdk.models.common import VisibilityMode

    return VisibilityMode.NEVER


def deploy_annotation(app: str | None) -> dict:
    """Grafana's Prometheus annotation: one mark per release event, at the time the series'
    value says (useValueForTime), titled with the event and the release. ``app`` None: every
    app on the host (the host-wide dashboards)."""
    sel = f'{{app="{app}"}}' if app else ""
    return {
        "name": "Deploys",
        "datasource": {"type": "prometheus", "uid": "prometheus"},
        "enable": True,
        "hide": False,
        "iconColor": "#8F3BB8",
        "expr": f"ferry_deploy_last_event_timestamp_seconds{sel} * 1000",
        "step": "60s",
        "useValueForTime": True,
        "titleFormat": "{{event}}: {{release}}" if app else "{{app}} {{event}}: {{release}}",
        "textFormat": "version {{version}}",
        "tagKeys": "app,event,version",
    }


BUILTIN_ANNOTATION = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}


def _base(uid: str, title: str, tags: list[str]) -> db.Dashboard:
    return (db.Dashboard(title).uid(uid).tags(["ferry", *tags]).refresh("30s").time("now-3h", "now")
            .timezone("browser").editable())


def _finish(d: db.Dashboard, app: str | None) -> dict:
    doc = json.loads(json.dumps(d.build(), cls=JSONEncoder, sort_keys=True))
    doc["annotations"] = {"list": [BUILTIN_ANNOTATION, deploy_annotation(app)]}
    doc["editable"] = False  # provisioned from files: changes belong in dashboards.py
    doc["id"] = None
    doc["version"] = 1
    # stable ids: Grafana keys panel state (links, library panels) on them
    n = 0
    for p in _walk(doc.get("panels", [])):
        n += 1
        p["id"] = n
    return doc


def _walk(panels: list[dict]) -> Iterator[dict]:
    for p in panels:
        yield p
        yield from _walk(p.get("panels") or [])


# --- the service -----------------------------------------------------------------------------

def service(s: Settings) -> dict:
    app, job, prefix = s.app, s.job, s.prefix
    mp = s.mon.metrics_path
    sel = f'job="{job}", path!="{mp}"'
    req = f"{prefix}_requests_total"
    dur = f"{prefix}_request_duration_seconds_bucket"
    budget = round(1 - s.mon.alerts.availability_slo / 100, 10)
    by = "colour, release"
    all_rate = f"sum by ({by}) (rate({req}{{{sel}}}[{RATE}]))"
    err_rate = f'sum by ({by}) (rate({req}{{{sel}, status=~"5.."}}[{RATE}]))'
    # no 5xx at all is a 0% error ratio, not "no data"
    err_ratio = f"({err_rate} or {all_rate} * 0) / {all_rate}"
    avail = (f'1 - ((sum(increase({req}{{{sel}, status=~"5.."}}[30d])) or vector(0)) '
             f"/ sum(increase({req}{{{sel}}}[30d])))")

    d = _base(f"ferry-{app}-service", f"{app}: service", [app])
    d = d.with_row(db.Row("Requests, errors, latency (by colour and release)"))
    d = d.with_panel(ts("Requests per second", "reqps", (all_rate, "{{colour}} {{release}}"),
                        description=f"Requests the app answered (scrapes of {mp} left out), per colour and release."))
    d = d.with_panel(ts("5xx ratio", "percentunit", (err_ratio, "{{colour}} {{release}}"),
                        description="Share of requests answered with a 5xx."))
    d = d.with_panel(ts("Latency p50 / p95 / p99 by colour and release", "s",
                        *[(f"histogram_quantile({q}, sum by (le, {by}) (rate({dur}{{{sel}}}[{RATE}])))",
                           f"p{int(q * 100)} {{{{colour}}}} {{{{release}}}}")
                          for q in (0.5, 0.95, 0.99)],
                        description="Each colour's quantiles apart: a release that is slower than the one "
                                    "before shows up here first."))
    d = d.with_panel(ts("Errors per second by path", "reqps",
                        (f"sum by (colour, path) (rate({prefix}_errors_total{{job=\"{job}\"}}[{RATE}])) "
                         f"or sum by (colour) (rate({req}{{{sel}}}[{RATE}])) * 0", "{{colour}} {{path}}"),
                        description=f"{prefix}_errors_total: requests that ended in a 5xx, by path."))
    d = d.with_panel(ts("Requests per second by status", "reqps",
                        (f"sum by (status) (rate({req}{{{sel}}}[{RATE}]))", "{{status}}")))

    d = d.with_row(db.Row(f"SLO: {s.mon.alerts.availability_slo:g}% of requests without a 5xx over 30 days"))
    d = d.with_panel(st("Availability (30 days)", "percentunit", avail, span=6))
    d = d.with_panel(st("Error budget left (30 days)", "percentunit", f"1 - (1 - ({avail})) / {budget:g}", span=6,
                        description=f"1 = untouched; 0 = spent. The budget is {budget * 100:g}% of requests."))
    d = d.with_panel(ts("Burn rate", "x",
                        (f'app:request_errors:ratio_rate1h{{app="{app}"}} / {budget:g}', "1h"),
                        (f'app:request_errors:ratio_rate6h{{app="{app}"}} / {budget:g}', "6h"),
                        (f'app:request_errors:ratio_rate5m{{app="{app}"}} / {budget:g}', "5m"),
                        description="1 spends the budget in exactly 30 days; the fast alert pages at 14.4 (1h) "
                                    "and 6 (6h).", span=12))

    d = d.with_row(db.Row("Releases"))
    d = d.with_panel(st("Live release", "none", f'ferry_release_info{{app="{app}"}}',
                        "{{release}} ({{colour}}, {{version}})", text_name=True, span=8))
    d = d.with_panel(st("Deploys in the time range", "none",
                        f'sum by (event) (increase(ferry_deploy_events_total{{app="{app}"}}[$__range]))', "{{event}}",
                        span=8))
    d = d.with_panel(st("Last deploy took", "s", f'ferry_deploy_last_duration_seconds{{app="{app}"}}', "{{outcome}}",
                        span=8))
    d = d.with_panel(ts("Colours up", "none", (f'up{{job="{job}"}}', "{{colour}} {{release}} ({{role}})"),
                        description="Both colours run during a release and while the old one stays warm."))
    d = d.with_panel(ts("Public URL", "s", (f'probe_duration_seconds{{job="probe", app="{app}"}}', "probe {{instance}}"),
                        (f'probe_success{{job="probe", app="{app}"}}', "success"),
                        description=f"The blackbox exporter's GET of {s.probe_url} through nginx."))
    if s.probes_tls:
        d = d.with_panel(st("Certificate days left", "d",
                            f'(probe_ssl_earliest_cert_expiry{{job="probe", app="{app}"}} - time()) / 86400',
                            "{{instance}}", span=6))
    return _finish(d, app)


# --- the host ---------------------------------------------------------------------------------

def host(s: Settings) -> dict:
    n = 'job="node"'
    fs = f"{n}, {FS_FILTER}"
    hours = s.mon.alerts.disk_fill_hours
    d = _base("ferry-host", "host", ["host"])
    d = d.with_row(db.Row("CPU and memory"))
    d = d.with_panel(ts("CPU busy", "percentunit",
                        (f'1 - avg(rate(node_cpu_seconds_total{{{n}, mode="idle"}}[{RATE}]))', "busy"),
                        (f'sum by (mode) (rate(node_cpu_seconds_total{{{n}, mode!="idle"}}[{RATE}])) '
                         f'/ scalar(count(node_cpu_seconds_total{{{n}, mode="idle"}}))', "{{mode}}")))
    d = d.with_panel(ts("Load", "short", (f"node_load1{{{n}}}", "1m"), (f"node_load5{{{n}}}", "5m"),
                        (f"node_load15{{{n}}}", "15m"),
                        (f'count(node_cpu_seconds_total{{{n}, mode="idle"}})', "cores")))
    d = d.with_panel(ts("Memory", "bytes", (f"node_memory_MemTotal_bytes{{{n}}}", "total"),
                        (f"node_memory_MemTotal_bytes{{{n}}} - node_memory_MemAvailable_bytes{{{n}}}", "used"),
                        (f"node_memory_MemAvailable_bytes{{{n}}}", "available")))
    d = d.with_panel(ts("Memory available", "percentunit",
                        (f"node_memory_MemAvailable_bytes{{{n}}} / node_memory_MemTotal_bytes{{{n}}}", "available"),
                        (f"increase(node_vmstat_oom_kill{{{n}}}[{RATE}])", "OOM kills"),
                        description=f"The memory alert fires below {s.mon.alerts.memory_available_percent}%."))
    d = d.with_row(db.Row("Disk and network"))
    d = d.with_panel(ts("Disk used", "percentunit",
                        (f"1 - node_filesystem_avail_bytes{{{fs}}} / node_filesystem_size_bytes{{{fs}}}",
                         "{{mountpoint}}")))
    d = d.with_panel(ts(f"Disk free in {hours}h (6h trend)", "bytes",
                        (f"node_filesystem_avail_bytes{{{fs}}}", "{{mountpoint}} now"),
                        (f"predict_linear(node_filesystem_avail_bytes{{{fs}}}[6h], {hours} * 3600)",
                         "{{mountpoint}} predicted"),
                        description="Below 0 means full within the horizon: the disk alert's own query."))
    d = d.with_panel(ts("Disk I/O", "Bps",
                        (f'sum by (device) (rate(node_disk_read_bytes_total{{{n}, device!~"loop.*|ram.*|zram.*"}}[{RATE}]))',
                         "{{device}} read"),
                        (f'sum by (device) (rate(node_disk_written_bytes_total{{{n}, device!~"loop.*|ram.*|zram.*"}}[{RATE}]))',
                         "{{device}} written")))
    d = d.with_panel(ts("Network", "Bps",
                        (f'sum by (device) (rate(node_network_receive_bytes_total{{{n}, device!~"lo|veth.*|docker.*|ifb.*"}}[{RATE}]))',
                         "{{device}} in"),
                        (f'sum by (device) (rate(node_network_transmit_bytes_total{{{n}, device!~"lo|veth.*|docker.*|ifb.*"}}[{RATE}]))',
                         "{{device}} out")))
    return _finish(d, None)


# --- nginx ------------------------------------------------------------------------------------

def nginx(s: Settings) -> dict:
    g = 'job="nginx"'
    p = 'job="probe"'
    d = _base("ferry-nginx", "nginx", ["nginx"])
    d = d.with_row(db.Row("nginx and the public URLs"))
    d = d.with_panel(st("nginx up", "none", f"nginx_up{{{g}}}", span=6))
    d = d.with_panel(st("Active connections", "none", f"nginx_connections_active{{{g}}}", span=6))
    d = d.with_panel(st("Requests per second", "reqps", f"sum(rate(nginx_http_requests_total{{{g}}}[{RATE}]))", span=6))
    d = d.with_panel(st("Public URLs up", "none", f"probe_success{{{p}}}", "{{app}}", span=6))
    d = d.with_panel(ts("Requests per second", "reqps",
                        (f"rate(nginx_http_requests_total{{{g}}}[{RATE}])", "requests")))
    d = d.with_panel(ts("Connections", "short",
                        (f"nginx_connections_active{{{g}}}", "active"),
                        (f"nginx_connections_reading{{{g}}}", "reading"),
                        (f"nginx_connections_writing{{{g}}}", "writing"),
                        (f"nginx_connections_waiting{{{g}}}", "waiting (keep-alive)")))
    d = d.with_panel(ts("Connections accepted, handled, dropped", "cps",
                        (f"rate(nginx_connections_accepted{{{g}}}[{RATE}])", "accepted"),
                        (f"rate(nginx_connections_handled{{{g}}}[{RATE}])", "handled"),
                        (f"rate(nginx_connections_accepted{{{g}}}[{RATE}]) - rate(nginx_connections_handled{{{g}}}[{RATE}])",
                         "dropped"),
                        description="Dropped connections mean worker_connections is too small."))
    d = d.with_panel(ts("Public URLs: time per phase", "s",
                        (f"sum by (app, phase) (probe_http_duration_seconds{{{p}}})", "{{app}} {{phase}}"),
                        (f"probe_http_status_code{{{p}}}", "{{app}} HTTP status"),
                        description="The blackbox exporter's GET of each app's public URL, through nginx."))
    return _finish(d, None)


def generate(s: Settings) -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {name: json.dumps(doc, indent=2, sort_keys=True) + "\n"
            for name, doc in ((f"{s.app}-service.json", service(s)), ("host.json", host(s)), ("nginx.json", nginx(s)))}


def queries(doc: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and annotation of a dashboard: what Grafana
    would send to Prometheus (the e2e test runs each one)."""
    out = []
    for p in _walk(doc.get("panels", [])):
        for t in p.get("targets") or []:
            if t.get("expr"):
                out.append((f"panel {p.get('title')!r} {t.get('refId')}", t["expr"]))
    for a in doc.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append((f"annotation {a.get('name')!r}", a["expr"]))
    return out


def interpolate(expr: str, rate_interval: str, range_: str) -> str:
    """Grafana's built-in variables as Grafana would fill them for one query."""
    return re.sub(r"\$__rate_interval", rate_interval, expr).replace("$__range", range_)


if __name__ == "__main__":  # pragma: no cover - a convenience for `python -m`
    from ..config import load
    from .generated import render_all

    print(json.dumps(render_all(load()), indent=2))

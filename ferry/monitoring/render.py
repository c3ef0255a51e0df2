"""Every config file of the stack, rendered from ferry's packaged templates (``ferry/assets/monitoring``,
or the repository's own folder named by ``monitoring.dir``) (pure).

The templates use ``[[ ]]`` / ``[% %]`` instead of Jinja's braces: Prometheus' and
Alertmanager's own templates (``{{ $labels.app }}``) pass through untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ..errors import ConfigError
from .settings import LOOPBACK, Settings, prom_duration, prom_seconds

# burn-rate windows of the SLO alerts (Google SRE workbook, "multiwindow, multi-burn-rate")
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# filesystems that are not disks: never alert on them
FS_FILTER = 'fstype!~"tmpfs|ramfs|devtmpfs|overlay|squashfs|nsfs|autofs|fuse.*", mountpoint!~"/(run|proc|sys)(/.*)?"'


def environment(templates: Path) -> jinja2.Environment:
    if not templates.is_dir():
        raise ConfigError(f"monitoring.dir: {templates} is not a directory",
                          "point it at a folder with your own templates, rules and grafana/ (start from a copy of ferry's: "
                          "python3 -c 'import ferry.assets as a; print(a.path(\"monitoring\"))'), or remove the key")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
        variable_start_string="[[", variable_end_string="]]",
        block_start_string="[%", block_end_string="%]",
        comment_start_string="[#", comment_end_string="#]",
        autoescape=False,
    )


def _render(s: Settings, name: str, ctx: dict) -> str:
    try:
        return environment(s.templates).get_template(name).render(**ctx)
    except jinja2.TemplateNotFound:
        raise ConfigError(f"monitoring.dir: {s.templates / name} is missing",
                          "copy it from ferry's own (ferry/assets/monitoring), or remove monitoring.dir to use ferry's") from None
    except jinja2.TemplateError as e:
        raise ConfigError(f"{s.templates / name}: {e}", "fix the template; placeholders look like [[ name ]]") from None


def context(s: Settings) -> dict:
    m = s.mon
    a = m.alerts
    scrape = prom_seconds(m.scrape_interval)
    budget = round(1 - a.availability_slo / 100, 10)
    latency = prom_seconds(a.latency_p99)
    return {
        "host": s.host,
        "app": s.app,
        "job": s.job,
        "prefix": s.prefix,
        "loopback": LOOPBACK,
        "metrics_path": m.metrics_path,
        "probe_url": s.probe_url,
        "probes_tls": s.probes_tls,
        "scrape_interval": m.scrape_interval,
        # a scrape must end before the next one starts, and 10s is long enough for any /metrics
        "scrape_timeout": prom_duration(min(scrape, 10.0)),
        "evaluation_interval": m.evaluation_interval,
        "prometheus_port": m.prometheus_port,
        "alertmanager_port": m.alertmanager_port,
        "node_exporter_port": m.node_exporter_port,
        "nginx_exporter_port": m.nginx_exporter_port,
        "blackbox_port": m.blackbox_port,
        "stub_status_url": s.stub_status_url,
        "targets_dir": s.targets_dir,
        "windows": WINDOWS,
        "slo": f"{a.availability_slo:g}",
        "budget": f"{budget:g}",
        "budget_percent": f"{budget * 100:g}%",
        "latency_p99": f"{latency:g}",
        "latency_p99_text": a.latency_p99,
        "cert_expiry_days": a.cert_expiry_days,
        "disk_fill_hours": a.disk_fill_hours,
        "memory_available_percent": a.memory_available_percent,
        "fs_filter": FS_FILTER,
        "keep_previous": prom_duration(s.keep_previous),
        "both_colours_grace": a.both_colours_grace,
        "both_colours_for": prom_duration(s.keep_previous + prom_seconds(a.both_colours_grace)),
        "receiver": a.receiver,
        "receiver_name": a.receiver,
        "email_to": list(a.email_to),
        "email_from": a.email_from,
        "smarthost": a.smarthost,
        "smtp_username": a.smtp_username,
        "slack_channel": a.slack_channel,
        "deadman_url": a.deadman_url,
        "webhook_url": a.webhook_url,
        "webhook_token": bool(a.webhook_token_env),
        "group_wait": a.group_wait,
        "group_interval": a.group_interval,
        "repeat_interval": a.repeat_interval,
    }


def prometheus_yml(s: Settings) -> str:
    return _render(s, "prometheus.yml.j2", context(s))


def alertmanager_yml(s: Settings) -> str:
    return _render(s, "alertmanager.yml.j2", context(s))


def blackbox_yml(s: Settings) -> str:
    return _render(s, "blackbox.yml.j2", context(s))


PER_APP = "app-"  # rules/app-*.yml.j2 are rendered once per app (as <app>-*.yml), the rest once per host


def rule_templates(s: Settings) -> list[str]:
    rules = s.templates / "rules"
    names = sorted(p.name for p in rules.glob("*.yml.j2")) if rules.is_dir() else []
    if not names:
        raise ConfigError(f"monitoring.dir: no alert rules in {rules} (*.yml.j2)",
                          "copy them from ferry's own (ferry/assets/monitoring/rules), or remove monitoring.dir to use ferry's")
    return names


def rule_file_name(s: Settings, template: str) -> str:
    """'app-slo.yml.j2' -> 'hello-slo.yml'; 'host.yml.j2' -> 'host.yml'. Host-wide names have
    no dash, so one app's `up` can tell its own files from other apps' and the host's."""
    name = template[: -len(".j2")]
    if name.startswith(PER_APP):
        return f"{s.app}-{name[len(PER_APP):]}"
    if "-" in name:
        raise ConfigError(f"{s.templates / 'rules' / template}: a host-wide rule file's name must not contain '-'",
                          "rename it (per-app templates start with app-)")
    return name


def rules(s: Settings) -> dict[str, str]:
    """``{"host.yml": text, "hello-slo.yml": text, ...}``: one rule file per template."""
    ctx = context(s)
    return {rule_file_name(s, name): _render(s, f"rules/{name}", ctx) for name in rule_templates(s)}


def probes_json(s: Settings) -> str:
    """The app's public URL for the blackbox exporter (file_sd, like the targets)."""
    return dump_json([{"targets": [s.probe_url], "labels": {"app": s.app}}])


@dataclass(frozen=True)
class File:
    """A file of the stack on the host. ``owner`` is the uid:gid the component runs as (it must
    read secrets that are 0400)."""

    path: str
    content: str
    mode: str = "0644"
    owner: str | None = None


# uids the components run as inside their images (nobody; Grafana's own image uses 472)
NOBODY = "65534:65534"
GRAFANA_UID = "472:0"


def grafana_files(s: Settings) -> dict[str, str]:
    """Provisioning files and dashboards, copied as they are from the templates folder (Grafana reads the
    ports from its environment: the files themselves are host-independent). The dashboards are
    generated for this app (its service dashboard) and the host (host, nginx)."""
    from .dashboards import generate

    out: dict[str, str] = {}
    base = s.templates / "grafana" / "provisioning"
    for kind in ("datasources", "dashboards"):
        for p in sorted((base / kind).glob("*.yml")):
            out[f"provisioning/{kind}/{p.name}"] = p.read_text()
    for name, text in generate(s).items():
        out[f"dashboards/{name}"] = text
    return out


def files(s: Settings, targets_json: str, grafana: bool) -> list[File]:
    """The whole configuration of one host's stack (no secrets: see secrets.py)."""
    etc = s.etc
    out = [
        File(f"{etc}/prometheus/prometheus.yml", prometheus_yml(s)),
        File(f"{etc}/alertmanager/alertmanager.yml", alertmanager_yml(s)),
        File(f"{etc}/blackbox/blackbox.yml", blackbox_yml(s)),
        File(s.targets_file(), targets_json),
        File(s.probes_file(), probes_json(s)),
    ]
    out += [File(f"{etc}/prometheus/rules/{name}", text) for name, text in rules(s).items()]
    if grafana:
        out += [File(f"{etc}/grafana/{rel}", text) for rel, text in grafana_files(s).items()]
    return out


def example(s: Settings, targets_json: str) -> dict[str, str]:
    """What `ferry monitoring render` writes to monitoring/rendered/ (checked in, promtool-tested)."""
    out = {
        "prometheus.yml": prometheus_yml(s),
        "alertmanager.yml": alertmanager_yml(s),
        "blackbox.yml": blackbox_yml(s),
        f"targets/{s.app}.json": targets_json,
        f"probes/{s.app}.json": probes_json(s),
    }
    out.update({f"rules/{name}": text for name, text in rules(s).items()})
    return out


def dump_json(doc) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"

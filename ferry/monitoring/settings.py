"""The resolved view of ``[monitoring]`` for one host: every name, path, port and threshold the
renderers and the runner share, computed once from the config (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..config import HOST_STUB_STATUS_URL, Config, MonitoringConfig, monitoring_root
from ..errors import ConfigError

# Every server of the stack binds here: reach it through an SSH tunnel (`ferry monitoring open`).
LOOPBACK = "127.0.0.1"

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_PART_RE = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def prom_seconds(duration: str) -> float:
    """'1h30m' -> 5400.0 (Prometheus' duration syntax; validated by the config already)."""
    parts = _PART_RE.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(n) * _UNITS[u] for n, u in parts)


def prom_duration(seconds: float) -> str:
    """Seconds -> the shortest exact Prometheus duration: 1500 -> '25m', 5400 -> '1h30m'."""
    ms = int(round(seconds * 1000))
    if ms <= 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def templates_dir(cfg: Config) -> Path:
    """The repository's own monitoring folder when ``monitoring.dir`` names one, else ferry's
    packaged templates (so an installed ferry needs no checkout)."""
    if cfg.monitoring.dir:
        return cfg.resolve(cfg.monitoring.dir)
    from .. import assets
    return assets.path("monitoring")


def generated_dir(cfg: Config) -> Path:
    """Where `ferry monitoring render` writes the checked-in example (rendered/, dashboards/):
    ``monitoring.dir`` when set, else ``monitoring/`` beside ferry.toml, never ferry's package."""
    return cfg.resolve(cfg.monitoring.dir or "monitoring")


@dataclass(frozen=True)
class Settings:
    app: str
    job: str  # the app's scrape job; its series carry job=<app>, app=<app>
    prefix: str  # the app's metric names: <prefix>_requests_total, <prefix>_request_duration_seconds
    colours: dict[str, int]
    probe_url: str
    host: str  # external label `host` on every series and alert of this host's Prometheus
    root: str  # the stack's directory on the host
    templates: Path  # templates, rules, Grafana provisioning: monitoring.dir, else ferry's packaged ones
    keep_previous: float  # seconds the old colour stays warm after a release
    docker: tuple[str, ...]  # argv prefix for the host's Docker engine
    mon: MonitoringConfig
    stub_status_url: str  # what the nginx exporter reads (stub_status_url() below)

    @property
    def probes_tls(self) -> bool:
        return self.probe_url.startswith("https://")

    # --- the stack's layout on the host -------------------------------------------------------
    @property
    def etc(self) -> str:
        return f"{self.root}/etc"

    @property
    def data(self) -> str:
        return f"{self.root}/data"

    @property
    def secrets(self) -> str:
        return f"{self.root}/secrets"

    @property
    def textfile_dir(self) -> str:
        """node_exporter's textfile collector reads *.prom here (ferry_deploy_* metrics)."""
        return f"{self.root}/textfile"

    @property
    def targets_dir(self) -> str:
        """Prometheus' file_sd directory: one JSON file per app, rewritten at each release."""
        return f"{self.etc}/prometheus/targets"

    def targets_file(self) -> str:
        return f"{self.targets_dir}/{self.app}.json"

    @property
    def probes_dir(self) -> str:
        """The blackbox exporter's targets: one JSON file per app (its public URL)."""
        return f"{self.etc}/prometheus/probes"

    def probes_file(self) -> str:
        return f"{self.probes_dir}/{self.app}.json"

    def deploy_metrics_file(self) -> str:
        return f"{self.textfile_dir}/ferry_deploy_{self.app}.prom"

    # --- where users reach it -----------------------------------------------------------------
    @property
    def prometheus_url(self) -> str:
        return f"http://{LOOPBACK}:{self.mon.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{LOOPBACK}:{self.mon.alertmanager_port}"

    @property
    def grafana_url(self) -> str:
        return f"http://{LOOPBACK}:{self.mon.grafana_port}"


def host_label(host: str | None) -> str:
    """'root@203.0.113.7:22' -> '203.0.113.7'; the label names the machine, not the login."""
    if not host:
        return "localhost"
    h = host.split("@", 1)[-1]
    return h.rsplit(":", 1)[0] if re.match(r"^[^:]+:\d+$", h) else h


def is_local_target(cfg: Config) -> bool:
    """The host is the local target (`ferry local up`): its nginx is the one under local.state_dir."""
    state = cfg.local.state_dir.rstrip("/") + "/"
    return cfg.deploy.nginx_conf.startswith(state)


def stub_status_url(cfg: Config) -> str:
    """nginx's stub_status for the exporter: monitoring.stub_status_url, else the local target's
    status server (local.nginx_status_port), else what scripts/prepare-host configures."""
    if cfg.monitoring.stub_status_url:
        return cfg.monitoring.stub_status_url
    if is_local_target(cfg):
        return f"http://{LOOPBACK}:{cfg.local.nginx_status_port}/stub_status"
    return HOST_STUB_STATUS_URL


def settings(cfg: Config, host: str | None = None) -> Settings:
    m = cfg.monitoring
    d = cfg.deploy
    app = cfg.app.name
    prefix = m.metrics_prefix or app.replace("-", "_")
    probe_url = m.probe_url or (cfg.url.rstrip("/") + "/")
    ports = {"nginx (proxy.http_port)": cfg.proxy.http_port, "nginx (proxy.https_port)": cfg.proxy.https_port,
             **{f"deploy.colours.{c}": p for c, p in d.colours.items()}}
    for k in ("prometheus_port", "alertmanager_port", "grafana_port", "node_exporter_port",
              "nginx_exporter_port", "blackbox_port"):
        for other, port in ports.items():
            if getattr(m, k) == port:
                raise ConfigError(f"monitoring.{k}: {port} is also {other}", "give the monitoring stack its own ports")
    docker = [d.docker]
    if d.docker_host:
        docker += ["-H", d.docker_host]
    return Settings(
        app=app,
        job=app,
        prefix=prefix,
        colours=dict(d.colours),
        probe_url=probe_url,
        host=host_label(host),
        root=monitoring_root(m, d.root),
        templates=templates_dir(cfg),
        keep_previous=d.keep_previous,
        docker=tuple(docker),
        mon=m,
        stub_status_url=stub_status_url(cfg),
    )

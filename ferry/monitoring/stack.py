"""One container per component: the exact ``docker run`` argv for one host (pure).

Every container runs with the host's network (the local target's dockerd has no bridge; on a
real host it keeps the exporters' view of the machine honest) and binds 127.0.0.1 only. They
are hardened the same way: read-only root filesystem, no capabilities, no privilege
escalation, a non-root user, and log rotation. A label carries a hash of the whole spec
(image digest included): ``up`` replaces a container only when its spec changed, and sends a
reload (SIGHUP) when only its config files did.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from .settings import LOOPBACK, Settings

LABEL = "dev.ferry.monitoring"
NOBODY = "65534:65534"
GRAFANA_USER = "472:0"  # the uid Grafana's official image runs as
GRAFANA_DATA = "/var/lib/grafana"  # Grafana's one writable mount (its database, sessions, plugins)


@dataclass(frozen=True)
class Mount:
    source: str  # on the host
    target: str  # in the container
    readonly: bool = True

    def arg(self) -> str:
        return f"{self.source}:{self.target}{':ro' if self.readonly else ''}"


@dataclass(frozen=True)
class ContainerSpec:
    component: str  # key in [monitoring.images]: prometheus, node_exporter, ...
    name: str  # container name on the host
    image: str  # reference from the config (tag or digest); run by digest
    args: tuple[str, ...]
    health: str  # URL on the host that answers 200 when the component is ready
    mounts: tuple[Mount, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    user: str = NOBODY
    extra: tuple[str, ...] = ()  # more `docker run` flags
    reload: str = "none"  # what a config change needs: "hup" | "restart" | "none"
    config_dirs: tuple[str, ...] = ()  # host dirs whose files, when changed, need the reload
    data_dirs: tuple[str, ...] = ()  # host dirs the component writes (owned by its user)
    secret_dirs: tuple[str, ...] = ()  # host dirs of 0400 secrets (owned by its user)


def specs(s: Settings, images: dict[str, str]) -> list[ContainerSpec]:
    """The stack of one host, in start order (exporters first, Prometheus after what it scrapes,
    Grafana last). ``images``: component -> reference (Grafana only when it has one)."""
    m = s.mon
    etc, data, sec = s.etc, s.data, s.secrets
    out = [
        ContainerSpec(
            component="node_exporter", name="ferry-node-exporter", image=images["node_exporter"],
            args=(f"--web.listen-address={LOOPBACK}:{m.node_exporter_port}",
                  "--path.rootfs=/host",
                  "--collector.textfile.directory=/textfile"),
            health=f"http://{LOOPBACK}:{m.node_exporter_port}/metrics",
            # the host's filesystems, processes and network, read-only
            mounts=(Mount("/", "/host"), Mount(s.textfile_dir, "/textfile")),
            extra=("--pid", "host"),
        ),
        ContainerSpec(
            component="nginx_exporter", name="ferry-nginx-exporter", image=images["nginx_exporter"],
            args=(f"-nginx.scrape-uri={s.stub_status_url}",
                  f"-web.listen-address={LOOPBACK}:{m.nginx_exporter_port}"),
            health=f"http://{LOOPBACK}:{m.nginx_exporter_port}/metrics",
        ),
        ContainerSpec(
            component="blackbox_exporter", name="ferry-blackbox-exporter", image=images["blackbox_exporter"],
            args=("--config.file=/etc/blackbox/blackbox.yml",
                  f"--web.listen-address={LOOPBACK}:{m.blackbox_port}"),
            health=f"http://{LOOPBACK}:{m.blackbox_port}/-/healthy",
            mounts=(Mount(f"{etc}/blackbox", "/etc/blackbox"),),
            reload="hup", config_dirs=(f"{etc}/blackbox",),
        ),
        ContainerSpec(
            component="alertmanager", name="ferry-alertmanager", image=images["alertmanager"],
            args=("--config.file=/etc/alertmanager/alertmanager.yml",
                  "--storage.path=/alertmanager",
                  f"--web.listen-address={LOOPBACK}:{m.alertmanager_port}",
                  # one Alertmanager per host: no gossip port (it would listen on 0.0.0.0:9094)
                  "--cluster.listen-address="),
            health=f"http://{LOOPBACK}:{m.alertmanager_port}/-/ready",
            mounts=(Mount(f"{etc}/alertmanager", "/etc/alertmanager"),
                    Mount(f"{sec}/alertmanager", "/run/secrets/alertmanager"),
                    Mount(f"{data}/alertmanager", "/alertmanager", readonly=False)),
            reload="hup", config_dirs=(f"{etc}/alertmanager",),
            data_dirs=(f"{data}/alertmanager",), secret_dirs=(f"{sec}/alertmanager",),
        ),
        ContainerSpec(
            component="prometheus", name="ferry-prometheus", image=images["prometheus"],
            args=("--config.file=/etc/prometheus/prometheus.yml",
                  "--storage.tsdb.path=/prometheus",
                  f"--storage.tsdb.retention.time={m.retention}",
                  f"--storage.tsdb.retention.size={m.retention_size}",
                  f"--web.listen-address={LOOPBACK}:{m.prometheus_port}",
                  f"--web.external-url=http://{LOOPBACK}:{m.prometheus_port}/"),
            health=f"http://{LOOPBACK}:{m.prometheus_port}/-/ready",
            mounts=(Mount(f"{etc}/prometheus", "/etc/prometheus"),
                    Mount(f"{data}/prometheus", "/prometheus", readonly=False)),
            # file_sd targets are re-read on their own: a release does not reload Prometheus
            reload="hup", config_dirs=(f"{etc}/prometheus",),
            data_dirs=(f"{data}/prometheus",),
        ),
    ]
    if images.get("grafana"):
        out.append(ContainerSpec(
            component="grafana", name="ferry-grafana", image=images["grafana"],
            args=(),
            health=f"http://{LOOPBACK}:{m.grafana_port}/api/health",
            mounts=(Mount(f"{etc}/grafana/provisioning", "/etc/grafana/provisioning"),
                    Mount(f"{etc}/grafana/dashboards", "/etc/grafana/dashboards"),
                    Mount(f"{sec}/grafana", "/run/secrets/grafana"),
                    Mount(f"{data}/grafana", GRAFANA_DATA, readonly=False)),
            env=tuple(sorted(grafana_env(s).items())),
            user=GRAFANA_USER,
            # datasources are read at start only
            reload="restart", config_dirs=(f"{etc}/grafana",),
            data_dirs=(f"{data}/grafana",), secret_dirs=(f"{sec}/grafana",),
        ))
    return out


def grafana_env(s: Settings) -> dict[str, str]:
    """Grafana's settings (GF_<SECTION>_<KEY>): loopback only, no anonymous access, no sign-up,
    no calls home; the admin password comes from a 0400 file (``__FILE``), never the env."""
    m = s.mon
    return {
        "GF_SERVER_HTTP_ADDR": LOOPBACK,
        "GF_SERVER_HTTP_PORT": str(m.grafana_port),
        "GF_SERVER_ROOT_URL": f"http://{LOOPBACK}:{m.grafana_port}/",
        "GF_SECURITY_ADMIN_USER": "admin",
        "GF_SECURITY_ADMIN_PASSWORD__FILE": "/run/secrets/grafana/admin_password",
        "GF_SECURITY_DISABLE_GRAVATAR": "true",
        "GF_SECURITY_COOKIE_SAMESITE": "strict",
        "GF_AUTH_ANONYMOUS_ENABLED": "false",
        "GF_AUTH_DISABLE_LOGIN_FORM": "false",
        "GF_USERS_ALLOW_SIGN_UP": "false",
        "GF_USERS_ALLOW_ORG_CREATE": "false",
        "GF_ANALYTICS_REPORTING_ENABLED": "false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
        "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES": "false",
        "GF_NEWS_NEWS_FEED_ENABLED": "false",
        "GF_PATHS_PROVISIONING": "/etc/grafana/provisioning",
        # the root filesystem is read-only: logs go to stdout (docker's rotated json log, not
        # /var/log/grafana), everything Grafana writes goes to its data mount
        "GF_LOG_MODE": "console",
        "GF_PATHS_DATA": GRAFANA_DATA,
        "GF_PATHS_LOGS": f"{GRAFANA_DATA}/log",
        "GF_PATHS_PLUGINS": f"{GRAFANA_DATA}/plugins",
        # read by the provisioning files in ferry/assets/monitoring/grafana/provisioning/
        "FERRY_PROMETHEUS_URL": f"http://{LOOPBACK}:{m.prometheus_port}",
        "FERRY_ALERTMANAGER_URL": f"http://{LOOPBACK}:{m.alertmanager_port}",
        "FERRY_DASHBOARDS_DIR": "/etc/grafana/dashboards",
        "FERRY_SCRAPE_INTERVAL": m.scrape_interval,
    }


def spec_hash(spec: ContainerSpec, image_ref: str) -> str:
    doc = {"image": image_ref, "args": spec.args, "mounts": [x.arg() for x in spec.mounts], "env": spec.env,
           "user": spec.user, "extra": spec.extra, "name": spec.name}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def run_argv(docker: tuple[str, ...], spec: ContainerSpec, image_ref: str) -> list[str]:
    """``image_ref`` is the pinned ``repo@sha256:...`` the host resolved."""
    argv = [*docker, "run", "--detach", "--name", spec.name,
            "--network", "host", "--restart", "unless-stopped",
            "--read-only", "--tmpfs", "/tmp:rw,size=64m",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--user", spec.user,
            "--log-driver", "json-file", "--log-opt", "max-size=10m", "--log-opt", "max-file=3",
            "--label", f"{LABEL}={spec.component}",
            "--label", f"{LABEL}.spec={spec_hash(spec, image_ref)}"]
    for mnt in spec.mounts:
        argv += ["--volume", mnt.arg()]
    for k, v in spec.env:
        argv += ["--env", f"{k}={v}"]
    argv += list(spec.extra)
    return [*argv, image_ref, *spec.args]


@dataclass(frozen=True)
class Action:
    """What ``up`` does to one container, decided from what runs now (pure)."""

    spec: ContainerSpec
    do: str  # "create" | "replace" | "reload" | "restart" | "start" | "none"
    why: str = ""
    argv: tuple[tuple[str, ...], ...] = field(default_factory=tuple)


def decide(docker: tuple[str, ...], spec: ContainerSpec, image_ref: str, actual: dict | None,
           config_changed: bool) -> Action:
    """``actual``: {"running": bool, "spec": label value} of the container by that name, or None."""
    want = spec_hash(spec, image_ref)
    run = tuple(run_argv(docker, spec, image_ref))
    if actual is None:
        return Action(spec, "create", "not running yet", (run,))
    if actual.get("spec") != want:
        return Action(spec, "replace", "image or settings changed",
                      (tuple([*docker, "rm", "--force", spec.name]), run))
    if not actual.get("running"):
        return Action(spec, "start", "stopped", (tuple([*docker, "start", spec.name]),))
    if config_changed and spec.reload == "hup":
        return Action(spec, "reload", "config changed", (tuple([*docker, "kill", "--signal", "HUP", spec.name]),))
    if config_changed and spec.reload == "restart":
        return Action(spec, "restart", "config changed", (tuple([*docker, "restart", spec.name]),))
    return Action(spec, "none", "up to date")

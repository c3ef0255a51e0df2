"""ferry.toml read once into frozen dataclasses, validated before any host is touched.

Every error names the file, the key and the fix. Unknown keys are errors (a typo must not be
silently ignored). Secrets never live here: ``deploy.secrets`` names environment variables
whose values are read at deploy time from the environment or ``deploy.env_file``, or AWS
references (``NAME=aws-sm:...``, ``NAME=ssm:...``) read at deploy time by ferry/aws/secrets.py.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_CONFIG = "ferry.toml"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_PLATFORM_RE = re.compile(r"^linux/(amd64|arm64)$")


def parse_duration(value: Any, where: str) -> float:
    """'500ms', '1s', '15m', '2h' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration like \"30s\", got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(f"{where}: must not be negative (got {value})")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value.strip())
        if m:
            n = float(m.group(1))
            return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    raise ConfigError(f"{where}: expected a duration like \"30s\", \"15m\" or \"500ms\", got {value!r}")


@dataclass(frozen=True)
class AppConfig:
    name: str
    domain: str | None = None


@dataclass(frozen=True)
class ImageConfig:
    repository: str
    base: str
    source: str
    entrypoint: tuple[str, ...]
    requirements: str | None = None
    port: int = 8000
    platforms: tuple[str, ...] = ("linux/amd64",)
    python: str = "3.11"
    workdir: str = "/app"
    user: str = "65532:65532"
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    exclude: tuple[str, ...] = ("__pycache__", "*.pyc", ".git", ".venv", "tests")
    # where registry credentials come from: "auto" tries the environment
    # (FERRY_REGISTRY_USERNAME/PASSWORD), then ~/.docker/config.json, then ECR for *.ecr.* hosts
    auth: str = "auto"
    insecure: bool = False  # plain HTTP; implied for 127.0.0.1/localhost
    # the image's Python for console-script shebangs (e.g. "/usr/local/bin/python3"); empty: the
    # base image's `dev.ferry.base.interpreter` label (ferry's bases), else "/usr/bin/env python3"
    interpreter: str = ""
    # the wheels' platform tag: glibc of the base image or older (Debian 12 has 2.36)
    manylinux: str = "manylinux_2_28"
    # Debian packages for the app (libpq5, sqlite3, ffmpeg): resolved against the base's own
    # suite and architecture, one layer between the base and the dependencies
    packages: tuple[str, ...] = ()
    # build steps, each an argv run in a sandbox over the assembled image (bubblewrap), e.g.
    # [["python3", "manage.py", "collectstatic", "--noinput"]]; what they write is one layer
    build: tuple[tuple[str, ...], ...] = ()
    build_env: dict[str, str] = field(default_factory=dict)
    build_network: bool = False  # build steps run without a network unless this is true
    # the source files the build steps read (patterns as image.exclude's: a name anywhere, or a
    # path from the source folder; a folder matched brings all it holds), e.g. ["static",
    # "mysite/settings.py"] for collectstatic: the build layer is then remade only when these,
    # the layers under the source or the steps change, not on every edit of the app's code.
    # Empty: every source file is an input.
    build_inputs: tuple[str, ...] = ()
    # a uv workspace: the member package whose dependencies (from the workspace's uv.lock) go in
    package: str | None = None


@dataclass(frozen=True)
class Health:
    path: str = "/healthz"
    interval: float = 1.0  # between the answers that must pass in a row
    timeout: float = 60.0
    healthy_after: int = 2
    # between polls until the first healthy answer, while the app boots (Docker's
    # HEALTHCHECK --start-interval): the boot is noticed within this, not a whole interval
    start_interval: float = 0.1


@dataclass(frozen=True)
class Resources:
    memory: str | None = None  # docker --memory, e.g. "512m"
    cpus: str | None = None  # docker --cpus, e.g. "1.5"


@dataclass(frozen=True)
class ProcessConfig:
    """[processes.NAME]: a background process (Celery, RQ, a scheduler loop) from the app's image,
    with the app's env, secrets and volumes; containers <app>-<name>-<n>."""

    command: tuple[str, ...]
    replicas: int = 1
    stop_timeout: float = 30.0  # SIGTERM, then this long before SIGKILL
    healthy_after: float = 5.0  # running, not restarting, this long: the gate (without `health`)
    health: tuple[str, ...] = ()  # or a command run in the container (docker exec) that exits 0


@dataclass(frozen=True)
class DeployConfig:
    hosts: tuple[str, ...] = ()
    stack: str | None = None  # read hosts from `pulumi stack output` of this stack
    stack_outputs: str | None = None  # or from an exported JSON file
    ssh_key: str | None = None
    ssh_port: int = 22  # for hosts from a stack (deploy.hosts name their own port)
    root: str = "/opt/ferry"
    colours: dict[str, int] = field(default_factory=lambda: {"blue": 8081, "green": 8082})
    health: Health = field(default_factory=Health)
    drain_timeout: float = 30.0
    keep_previous: float = 900.0
    keep_releases: int = 5
    env: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    env_file: str | None = None
    resources: Resources = field(default_factory=Resources)
    restart: str = "unless-stopped"
    docker: str = "docker"
    docker_host: str | None = None
    nginx: str = "nginx"
    nginx_conf: str = "/etc/nginx/nginx.conf"
    post_deploy: tuple[str, ...] = ()
    # run once per release, on the first host, in a one-off container of the new image before
    # the new colour starts (migrations): Heroku's release phase
    release_command: tuple[str, ...] = ()
    release_timeout: float = 600.0
    # NAME -> path in the container; on the host <root>/<app>/volumes/NAME, owned by the image's
    # user, mounted into both colours, the release command, workers and `ferry exec`
    volumes: dict[str, str] = field(default_factory=dict)
    parallel: int = 1  # hosts swapped at a time


@dataclass(frozen=True)
class ProxyConfig:
    listen: str = "0.0.0.0"
    http_port: int = 80
    https_port: int = 443
    public_url: str | None = None  # how users reach the app; derived from domain/ports if unset
    max_body: str = "100m"  # nginx client_max_body_size: uploads
    read_timeout: float = 60.0  # nginx proxy_read_timeout (long polls, SSE)
    gzip: bool = True  # compress text responses
    # URL prefix -> volume name (deploy.volumes): nginx serves its files itself, e.g.
    # serve = { "/media/" = "media" }
    serve: dict[str, str] = field(default_factory=dict)
    # addresses whose X-Forwarded-For is trusted for the client IP (set_real_ip_from); behind
    # the stack's load balancer its VPC CIDR is added from the stack outputs
    real_ip_from: tuple[str, ...] = ()
    # a folder of the repository with its own nginx templates (site.conf.j2, proxy.conf.j2,
    # upstream.conf.j2, tls.conf.j2) overriding ferry's; unset: ferry's own
    templates: str | None = None


ACME_DIRECTORIES = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
_KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096")
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


@dataclass(frozen=True)
class TlsConfig:
    """[tls]: ACME certificates through nginx (ferry/certs, nginx/TLS.md)."""

    enabled: bool = False
    # a directory URL, or "letsencrypt" / "letsencrypt-staging"
    acme_directory: str = ACME_DIRECTORIES["letsencrypt"]
    email: str | None = None
    ca_bundle: str | None = None  # CA to trust for the ACME server itself (pebble in tests)
    hsts_max_age: int = 31536000
    renew_before_days: int = 30
    domains: tuple[str, ...] = ()  # more names on the certificate besides app.domain (e.g. www.)
    key_type: str = "ecdsa-p256"
    eab_kid: str | None = None  # external account binding (ZeroSSL, Google Trust Services, ...)
    eab_hmac_env: str = "FERRY_ACME_EAB_HMAC_KEY"  # the HMAC key is a secret: named, never written here
    dns_check: bool = True  # the domain must resolve to the host before the CA is asked
    resolver: str | None = None  # "IP[:port]" for the DNS pre-check; system resolver when unset
    public_addresses: tuple[str, ...] = ()  # what the domain must resolve to; the hosts' addresses when unset
    # node_exporter's textfile collector on the host; unset: the monitoring stack's textfile
    # directory (<monitoring root>/textfile) with [monitoring] enabled, else TLS_METRICS_DIR
    metrics_dir: str | None = None
    renewal: str = "auto"  # auto (systemd timer if the host runs systemd, else cron), systemd, cron, none
    host_python: str = "/usr/bin/python3"  # runs the renewer on the host (Debian: python3-acme)
    timeout: float = 120.0  # how long the CA may take to validate and issue

    def __post_init__(self) -> None:
        if self.acme_directory in ACME_DIRECTORIES:
            object.__setattr__(self, "acme_directory", ACME_DIRECTORIES[self.acme_directory])
        if not self.acme_directory.startswith("https://"):
            raise ConfigError(f"tls.acme_directory: {self.acme_directory!r} is not an https:// URL",
                              'use "letsencrypt", "letsencrypt-staging" or the CA\'s directory URL')
        if self.email is not None and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", self.email):
            raise ConfigError(f"tls.email: {self.email!r} is not an email address",
                              "the CA writes to it about expiring certificates; e.g. email = \"ops@example.com\"")
        if self.hsts_max_age < 0:
            raise ConfigError("tls.hsts_max_age: must not be negative", "31536000 is one year; 0 turns HSTS off")
        if not (1 <= self.renew_before_days <= 60):
            raise ConfigError(f"tls.renew_before_days: {self.renew_before_days} is out of range",
                              "use 1-60 (30 is what certbot does for 90-day certificates)")
        for d in self.domains:
            if not _HOSTNAME_RE.match(d):
                raise ConfigError(f"tls.domains: {d!r} is not a DNS name", 'e.g. domains = ["www.example.com"]')
        if self.key_type not in _KEY_TYPES:
            raise ConfigError(f"tls.key_type: {self.key_type!r} is not supported", f"use one of {', '.join(_KEY_TYPES)}")
        if not _ENV_NAME_RE.match(self.eab_hmac_env):
            raise ConfigError(f"tls.eab_hmac_env: {self.eab_hmac_env!r} is not an environment variable name",
                              "name the variable that holds the HMAC key, e.g. FERRY_ACME_EAB_HMAC_KEY")
        if self.resolver is not None:
            host, _, port = self.resolver.rpartition(":") if self.resolver.count(":") == 1 else (self.resolver, "", "")
            try:
                ipaddress.ip_address(host or self.resolver)
                if port and not (0 < int(port) < 65536):
                    raise ValueError
            except ValueError:
                raise ConfigError(f"tls.resolver: {self.resolver!r} is not IP[:port]",
                                  'e.g. resolver = "1.1.1.1" or "127.0.0.1:8053"') from None
        for a in self.public_addresses:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise ConfigError(f"tls.public_addresses: {a!r} is not an IP address",
                                  'e.g. public_addresses = ["203.0.113.7"] (the Elastic IP)') from None
        if self.metrics_dir is not None and not self.metrics_dir.startswith("/"):
            raise ConfigError(f"tls.metrics_dir: {self.metrics_dir!r} must be an absolute path on the host",
                              "node_exporter's --collector.textfile.directory, e.g. /var/lib/prometheus/node-exporter")
        if self.renewal not in ("auto", "systemd", "cron", "none"):
            raise ConfigError(f"tls.renewal: {self.renewal!r} is not known", "use auto, systemd, cron or none")
        if not self.host_python.startswith("/"):
            raise ConfigError(f"tls.host_python: {self.host_python!r} must be an absolute path",
                              "e.g. /usr/bin/python3 (with Debian's python3-acme installed)")
        if self.timeout <= 0:
            raise ConfigError("tls.timeout: must be positive", 'e.g. timeout = "120s"')


# Prometheus' own formats, checked here so a typo fails before any host is touched
_PROM_DURATION_RE = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_PROM_SIZE_RE = re.compile(r"^\d+(B|KB|MB|GB|TB|PB|EB)$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_METRIC_PREFIX_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _check_prom_duration(where: str, value: str, example: str) -> None:
    if not _PROM_DURATION_RE.match(value):
        raise ConfigError(f"{where}: {value!r} is not a Prometheus duration", f'e.g. {where.rsplit(".", 1)[1]} = "{example}"')


@dataclass(frozen=True)
class MonitoringImages:
    """One image per component, from the user's registry. Production pins each by digest
    (``repo@sha256:...``); ``ferry monitoring images --push`` builds them from Debian's
    binaries and prints the pinned references. Grafana has no Debian package: mirror the
    official image into your registry and name it here, or leave it unset (not started)."""

    prometheus: str = "127.0.0.1:5000/ferry/prometheus:2.42.0"
    alertmanager: str = "127.0.0.1:5000/ferry/alertmanager:0.25.0"
    node_exporter: str = "127.0.0.1:5000/ferry/node-exporter:1.5.0"
    nginx_exporter: str = "127.0.0.1:5000/ferry/nginx-exporter:0.11.0"
    blackbox_exporter: str = "127.0.0.1:5000/ferry/blackbox-exporter:0.23.0"
    grafana: str | None = None
    # beside each PostgreSQL accessory (`ferry accessory images --push`); default: the app's
    # registry's ferry/postgres-exporter:bookworm
    postgres_exporter: str | None = None

    def __post_init__(self) -> None:
        for name in ("prometheus", "alertmanager", "node_exporter", "nginx_exporter", "blackbox_exporter", "grafana"):
            ref = getattr(self, name)
            if ref is None:
                continue
            if not re.match(r"^[a-z0-9][a-z0-9._:/-]*(@sha256:[0-9a-f]{64}|:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$", ref) \
                    and not re.match(r"^[a-z0-9][a-z0-9._:/-]*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}@sha256:[0-9a-f]{64}$", ref):
                raise ConfigError(f"monitoring.images.{name}: {ref!r} is not an image reference with a tag or digest",
                                  f'e.g. {name} = "registry.example.com/ferry/{name.replace("_", "-")}@sha256:<64 hex>"')


@dataclass(frozen=True)
class AlertingConfig:
    """Where alerts go and when they fire. Secrets are named by environment variable, never
    written here: they are copied to the host as 0400 files the containers read."""

    receiver: str = "none"  # none | email | slack | webhook
    email_to: tuple[str, ...] = ()
    email_from: str | None = None
    smarthost: str | None = None  # "smtp.example.com:587"
    smtp_username: str | None = None
    smtp_password_env: str | None = None  # env var holding the SMTP password
    slack_webhook_env: str = "FERRY_SLACK_WEBHOOK_URL"  # env var holding the webhook URL
    slack_channel: str | None = None
    # receiver = "webhook": Alertmanager POSTs its JSON to this URL. Alertmanager 0.25 cannot
    # read a webhook URL from a file, so the URL lives here and must not carry a secret; a
    # bearer token, if the endpoint wants one, comes from the variable webhook_token_env names.
    webhook_url: str | None = None
    webhook_token_env: str | None = None
    # a dead man's switch (healthchecks.io, Dead Man's Snitch, ...): Alertmanager POSTs the
    # always-firing Watchdog alert here every few minutes; when the pings stop, that service
    # alerts you. Unset: the Watchdog goes to no receiver at all. A ping URL can only say
    # "alerting works", so it lives here (Alertmanager 0.25 cannot read a webhook URL from a file).
    deadman_url: str | None = None
    group_wait: str = "30s"
    group_interval: str = "5m"
    repeat_interval: str = "4h"
    # thresholds the rules are rendered with
    availability_slo: float = 99.9  # percent of requests that are not 5xx, over 30 days
    latency_p99: str = "500ms"
    cert_expiry_days: int = 14
    disk_fill_hours: int = 24  # alert when the disk is predicted full within this many hours
    memory_available_percent: int = 10
    both_colours_grace: str = "10m"  # beyond deploy.keep_previous

    def __post_init__(self) -> None:
        w = "monitoring.alerts"
        if self.receiver not in ("none", "email", "slack", "webhook"):
            raise ConfigError(f"{w}.receiver: {self.receiver!r} is not known", "use none, email, slack or webhook")
        if self.receiver == "webhook" and not self.webhook_url:
            raise ConfigError(f"{w}: receiver = \"webhook\" needs webhook_url",
                              'e.g. webhook_url = "https://alerts.example.com/alertmanager"')
        if self.webhook_url is not None:
            if not re.match(r"^https?://[^/\s@]+(/\S*)?$", self.webhook_url):
                raise ConfigError(f"{w}.webhook_url: {self.webhook_url!r} is not an http(s) URL without credentials",
                                  'e.g. webhook_url = "https://alerts.example.com/alertmanager"; '
                                  "a token goes in the variable webhook_token_env names")
            if re.search(r"[?&](token|key|secret|password|api_key|apikey|sig)=", self.webhook_url, re.I):
                raise ConfigError(f"{w}.webhook_url: the URL carries a secret in its query",
                                  "ferry.toml is not the place for it: put the token in an environment variable "
                                  "and name it in webhook_token_env (sent as a bearer token)")
        if self.receiver == "email":
            missing = [k for k in ("email_from", "smarthost") if not getattr(self, k)]
            if not self.email_to:
                missing.insert(0, "email_to")
            if missing:
                raise ConfigError(f"{w}: receiver = \"email\" needs {', '.join(missing)}",
                                  'e.g. email_to = ["ops@example.com"], email_from = "ferry@example.com", '
                                  'smarthost = "smtp.example.com:587"')
            if not re.match(r"^[A-Za-z0-9.-]+:\d+$", self.smarthost or ""):
                raise ConfigError(f"{w}.smarthost: {self.smarthost!r} is not host:port", 'e.g. "smtp.example.com:587"')
            for addr in (*self.email_to, self.email_from):
                if not re.match(r"^[^@\s]+@[^@\s]+$", addr or ""):
                    raise ConfigError(f"{w}: {addr!r} is not an email address", 'e.g. "ops@example.com"')
            if self.smtp_username and not self.smtp_password_env:
                raise ConfigError(f"{w}.smtp_password_env: needed with smtp_username",
                                  'name the environment variable that holds the password, e.g. "FERRY_SMTP_PASSWORD"')
        for k in ("smtp_password_env", "slack_webhook_env", "webhook_token_env"):
            v = getattr(self, k)
            if v is not None and not _ENV_NAME_RE.match(v):
                raise ConfigError(f"{w}.{k}: {v!r} is not an environment variable name", "name the variable, not its value")
        for k, example in (("group_wait", "30s"), ("group_interval", "5m"), ("repeat_interval", "4h"),
                           ("latency_p99", "500ms"), ("both_colours_grace", "10m")):
            _check_prom_duration(f"{w}.{k}", getattr(self, k), example)
        if self.deadman_url is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", self.deadman_url):
            raise ConfigError(f"{w}.deadman_url: {self.deadman_url!r} is not an http(s) URL",
                              'e.g. deadman_url = "https://hc-ping.com/<uuid>"')
        if not (50.0 <= self.availability_slo < 100.0):
            raise ConfigError(f"{w}.availability_slo: {self.availability_slo} is not a percentage below 100",
                              "e.g. availability_slo = 99.9 (100 leaves no error budget to burn)")
        if not (1 <= self.cert_expiry_days <= 90):
            raise ConfigError(f"{w}.cert_expiry_days: {self.cert_expiry_days} is out of range", "use 1-90, e.g. 14")
        if not (1 <= self.disk_fill_hours <= 24 * 14):
            raise ConfigError(f"{w}.disk_fill_hours: {self.disk_fill_hours} is out of range", "use 1-336, e.g. 24")
        if not (1 <= self.memory_available_percent <= 50):
            raise ConfigError(f"{w}.memory_available_percent: {self.memory_available_percent} is out of range",
                              "use 1-50, e.g. 10")


@dataclass(frozen=True)
class MonitoringConfig:
    """The Prometheus/Grafana stack beside the app (ferry/monitoring). Every server binds to
    127.0.0.1 on the host: reach it through `ferry monitoring open` (an SSH tunnel)."""

    enabled: bool = False  # the deployer records ferry_deploy_* metrics and keeps scrape targets current
    # a folder of the repository (relative to ferry.toml) replacing ferry's packaged templates,
    # rules and Grafana provisioning as a whole; unset: ferry's own (ferry/assets/monitoring)
    dir: str | None = None
    root: str | None = None  # on the host; default <deploy.root>/_monitoring (monitoring_root)
    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    grafana_port: int = 3000
    node_exporter_port: int = 9100
    nginx_exporter_port: int = 9113
    blackbox_port: int = 9115
    retention: str = "15d"
    retention_size: str = "2GB"
    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    # nginx stub_status, loopback only; unset: the local target's own (local.nginx_status_port)
    # when deploy.nginx_conf is the local target's, else HOST_STUB_STATUS_URL (scripts/prepare-host)
    stub_status_url: str | None = None
    probe_url: str | None = None  # what the blackbox exporter checks; default: the app's public URL
    metrics_path: str = "/metrics"
    metrics_prefix: str | None = None  # <prefix>_requests_total ...; default: app.name with _ for -
    grafana_admin_password_env: str = "FERRY_GRAFANA_ADMIN_PASSWORD"
    images: MonitoringImages = field(default_factory=MonitoringImages)
    alerts: AlertingConfig = field(default_factory=AlertingConfig)

    def __post_init__(self) -> None:
        w = "monitoring"
        ports = {k: getattr(self, k) for k in ("prometheus_port", "alertmanager_port", "grafana_port",
                                                "node_exporter_port", "nginx_exporter_port", "blackbox_port")}
        for k, port in ports.items():
            if not (1024 <= port < 65536):
                raise ConfigError(f"{w}.{k}: {port} is not a usable port", "use 1024-65535")
        seen: dict[int, str] = {}
        for k, port in ports.items():
            if port in seen:
                raise ConfigError(f"{w}: {seen[port]} and {k} are both {port}", "give each component its own port")
            seen[port] = k
        _check_prom_duration(f"{w}.retention", self.retention, "15d")
        _check_prom_duration(f"{w}.scrape_interval", self.scrape_interval, "15s")
        _check_prom_duration(f"{w}.evaluation_interval", self.evaluation_interval, "15s")
        if not _PROM_SIZE_RE.match(self.retention_size):
            raise ConfigError(f"{w}.retention_size: {self.retention_size!r} is not a size", 'e.g. retention_size = "2GB"')
        if self.stub_status_url is not None and not re.match(r"^https?://[^/\s]+/\S*$", self.stub_status_url):
            raise ConfigError(f"{w}.stub_status_url: {self.stub_status_url!r} is not an http(s) URL with a path",
                              'e.g. "http://127.0.0.1:8079/stub_status"')
        if self.probe_url is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", self.probe_url):
            raise ConfigError(f"{w}.probe_url: {self.probe_url!r} is not an http(s) URL", 'e.g. "https://hello.example.com/"')
        if not self.metrics_path.startswith("/"):
            raise ConfigError(f"{w}.metrics_path: {self.metrics_path!r} must start with /", 'e.g. "/metrics"')
        if self.metrics_prefix is not None and not _METRIC_PREFIX_RE.match(self.metrics_prefix):
            raise ConfigError(f"{w}.metrics_prefix: {self.metrics_prefix!r} is not a metric name prefix",
                              'letters, digits and _, e.g. "hello" for hello_requests_total')
        if not _ENV_NAME_RE.match(self.grafana_admin_password_env):
            raise ConfigError(f"{w}.grafana_admin_password_env: {self.grafana_admin_password_env!r} is not an "
                              "environment variable name", "name the variable, not the password")
        if self.root is not None and not self.root.startswith("/"):
            raise ConfigError(f"{w}.root: {self.root!r} must be an absolute path on the host", 'e.g. "/opt/ferry/_monitoring"')


# nginx's stub_status as scripts/prepare-host configures it on a real host (loopback only)
HOST_STUB_STATUS_URL = "http://127.0.0.1:9180/stub_status"
# where the TLS renewer writes its metrics when [monitoring] is off (a node_exporter of your own)
TLS_METRICS_DIR = "/var/lib/prometheus/node-exporter"


def monitoring_root(m: MonitoringConfig, deploy_root: str) -> str:
    """The stack's directory on the host: ``monitoring.root`` or <deploy.root>/_monitoring
    ("_" never starts an app name: no collision with an app's folder)."""
    return m.root or f"{deploy_root.rstrip('/')}/_monitoring"


def textfile_dir(m: MonitoringConfig, deploy_root: str) -> str:
    """The stack's node_exporter reads *.prom here (deploy events, TLS renewal metrics)."""
    return f"{monitoring_root(m, deploy_root)}/textfile"


@dataclass(frozen=True)
class BackupConfig:
    keep: int = 7  # dumps kept under <root>/<app>/backups/<accessory>/
    s3_bucket: str | None = None  # also upload each dump here (boto3, the deployer's credentials)
    s3_prefix: str = ""


ACCESSORY_KINDS = ("postgres", "redis", "rds", "image")


@dataclass(frozen=True)
class AccessoryConfig:
    """[accessories.NAME]: a service beside the app (Kamal's accessories). ``postgres`` and
    ``redis`` run on the (first) host from images assembled from Debian's binaries, bound to
    127.0.0.1, data in a volume; ``rds`` is the stack's RDS instance (stack outputs + its
    Secrets Manager secret); ``image`` is any image pinned by digest."""

    kind: str = "image"
    version: str | None = None  # postgres major (15 bookworm, 17 trixie, 18 forky); redis: the suite's
    image: str | None = None  # repo@sha256:...: overrides the built image (or the image of kind "image")
    port: int | None = None  # on 127.0.0.1; default 5432 (postgres), 6379 (redis)
    url_env: str | None = None  # the app's env gets the connection URL under this name (a secret)
    database: str | None = None  # postgres database and user; default the app's name
    user: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()  # kind "image": the container's arguments
    volume: str | None = None  # kind "image": container path of its data volume
    host: str | None = None  # which of deploy.hosts runs it; default the first
    backup: BackupConfig = field(default_factory=BackupConfig)


@dataclass(frozen=True)
class LocalConfig:
    state_dir: str = "/var/lib/ferry-local"
    registry_port: int = 5000
    basic_registry_port: int = 5001
    token_registry_port: int = 5002
    ssh_port: int = 2222
    nginx_status_port: int = 8079  # nginx's stub_status (and its health check), loopback only
    # nginx's worker_shutdown_timeout: after a reload (any app's swap), old workers close the
    # WebSockets, SSE streams and long polls they still hold after this long. One value for
    # the whole nginx (a main-context directive): make it the largest deploy.drain_timeout of
    # the apps it serves (prepare-host --worker-shutdown-timeout on a real host)
    worker_shutdown_timeout: float = 30.0


@dataclass(frozen=True)
class Config:
    path: Path
    app: AppConfig
    image: ImageConfig
    deploy: DeployConfig = field(default_factory=DeployConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    processes: dict[str, ProcessConfig] = field(default_factory=dict)
    accessories: dict[str, AccessoryConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # tls.metrics_dir defaults to the textfile directory the monitoring stack reads
        if self.tls.metrics_dir is None:
            d = textfile_dir(self.monitoring, self.deploy.root) if self.monitoring.enabled else TLS_METRICS_DIR
            object.__setattr__(self, "tls", dataclasses.replace(self.tls, metrics_dir=d))

    @property
    def root(self) -> Path:
        """The directory ferry.toml lives in: relative paths are resolved from here."""
        return self.path.parent

    def resolve(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else (self.root / p)

    @property
    def url(self) -> str:
        if self.proxy.public_url:
            return self.proxy.public_url
        host = self.app.domain or ("127.0.0.1" if self.proxy.listen in ("0.0.0.0", "") else self.proxy.listen)
        if self.tls.enabled:
            port = "" if self.proxy.https_port == 443 else f":{self.proxy.https_port}"
            return f"https://{host}{port}"
        port = "" if self.proxy.http_port == 80 else f":{self.proxy.http_port}"
        return f"http://{host}{port}"


# --- generic, typed section reader ----------------------------------------------------------

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "a table"
    if tp is float:
        return "a number"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str, fname: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        non_none = [a for a in args if a is not type(None)]
        if value is None:
            return None
        return _convert(value, non_none[0], where, fname)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return _read_section(value, tp, where)
    if origin is tuple:
        if isinstance(value, str):
            raise ConfigError(f"{where}: expected a list, got the string {value!r}", f'write ["{value}"]')
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_convert(v, args[0], f"{where}[{i}]", fname) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table like {{ KEY = \"value\" }}, got {value!r}")
        return {str(k): _convert(v, args[1], f"{where}.{k}", fname) for k, v in value.items()}
    if tp is float:
        if fname in _DURATIONS:
            return parse_duration(value, where)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


_DURATIONS = {"interval", "start_interval", "timeout", "drain_timeout", "keep_previous", "release_timeout", "stop_timeout",
              "healthy_after", "read_timeout", "worker_shutdown_timeout"}


def _read_section(data: dict, cls: type, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}", f"known keys here: {known}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], key, name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise ConfigError(f"{key}: missing", f"add `{name} = ...` under [{where or name}]")
    return cls(**kwargs)


_SHELLS = ("sh", "bash", "dash", "ash", "zsh")
_PORT_VAR_RE = re.compile(r"\$(PORT\b|\{PORT\})")
_PORT_TYPO_RE = re.compile(r"\{\s*port\s*\}", re.IGNORECASE)


def _check_port_refs(key: str, argv: tuple[str, ...]) -> None:
    """An exec-form command gets no shell, so `$PORT` would reach the server as those five
    characters: refuse it and name `{port}`, which ferry replaces itself."""
    if not argv or argv[0].rsplit("/", 1)[-1] in _SHELLS:
        return
    for a in argv:
        if _PORT_VAR_RE.search(a):
            raise ConfigError(f"{key}: {a!r} uses $PORT, but the command runs without a shell, so nothing expands it",
                              f"write {_PORT_VAR_RE.sub('{port}', a)!r}: ferry puts the colour's port there")
        for m in _PORT_TYPO_RE.finditer(a):
            if m.group(0) != "{port}":
                raise ConfigError(f"{key}: {a!r} has {m.group(0)!r}, which is not the port placeholder",
                                  "write {port} (lower case, no spaces)")


def _validate(cfg: Config) -> None:
    a, i, d = cfg.app, cfg.image, cfg.deploy
    if not _NAME_RE.match(a.name):
        raise ConfigError(f"app.name: {a.name!r} is not a valid name",
                          "use lower-case letters, digits and dashes (it names containers and directories)")
    if not i.entrypoint:
        raise ConfigError("image.entrypoint: must not be empty", 'e.g. entrypoint = ["python3", "-m", "hello"]')
    _check_port_refs("image.entrypoint", i.entrypoint)
    for name, proc in cfg.processes.items():
        _check_port_refs(f"processes.{name}.command", proc.command)
        if any("{port}" in a for a in proc.command):
            # workers share the host's network with web: the colour's port is web's to bind
            raise ConfigError(f"processes.{name}.command: a worker gets no port ({{port}} is the web colour's, "
                              "and the worker would bind it beside the web server)",
                              "drop {port}; a process that serves HTTP belongs in image.entrypoint")
    for p in i.platforms:
        if not _PLATFORM_RE.match(p):
            raise ConfigError(f"image.platforms: {p!r} is not supported", 'use "linux/amd64" and/or "linux/arm64"')
    if not i.platforms:
        raise ConfigError("image.platforms: must name at least one platform", 'e.g. platforms = ["linux/amd64"]')
    if not re.match(r"^3\.\d+$", i.python):
        raise ConfigError(f"image.python: {i.python!r} is not a Python version", 'e.g. python = "3.11"')
    if i.auth not in ("auto", "env", "docker-config", "ecr", "anonymous"):
        raise ConfigError(f"image.auth: {i.auth!r} is not known", "use auto, env, docker-config, ecr or anonymous")
    if not (0 < i.port < 65536):
        raise ConfigError(f"image.port: {i.port} is not a TCP port", "use 1-65535")
    src = cfg.resolve(i.source)
    if not src.is_dir():
        raise ConfigError(f"image.source: {i.source!r} is not a directory (looked in {src})",
                          "point it at the folder with your service's code")
    if i.requirements and not cfg.resolve(i.requirements).is_file():
        raise ConfigError(f"image.requirements: {i.requirements!r} does not exist",
                          "point it at requirements.txt, pyproject.toml or pylock.toml, or remove the key")
    if set(d.colours) != {"blue", "green"}:
        raise ConfigError(f"deploy.colours: must name exactly blue and green (got {sorted(d.colours)})",
                          "colours = { blue = 8081, green = 8082 }")
    ports = list(d.colours.values())
    if ports[0] == ports[1]:
        raise ConfigError(f"deploy.colours: ports must differ (blue={d.colours['blue']}, green={d.colours['green']})",
                          "give each colour its own port")
    for colour, port in d.colours.items():
        if not (1024 <= port < 65536):
            raise ConfigError(f"deploy.colours.{colour}: {port} is not a usable port", "use 1024-65535")
    if d.hosts and d.stack:
        raise ConfigError("deploy: set either hosts or stack, not both", "remove one of them")
    for h in d.hosts:
        if not re.match(r"^([A-Za-z0-9._-]+@)?[A-Za-z0-9._-]+(:\d+)?$", h):
            raise ConfigError(f"deploy.hosts: {h!r} is not user@host[:port]", 'e.g. hosts = ["root@203.0.113.7"]')
    h = d.health
    if not h.path.startswith("/"):
        raise ConfigError(f"deploy.health.path: {h.path!r} must start with /", 'e.g. path = "/healthz"')
    if h.healthy_after < 1:
        raise ConfigError("deploy.health.healthy_after: must be at least 1", "healthy_after = 2")
    if h.interval <= 0 or h.timeout <= 0 or h.start_interval <= 0:
        raise ConfigError("deploy.health: interval, start_interval and timeout must be positive",
                          'interval = "1s", start_interval = "100ms", timeout = "60s"')
    if d.keep_releases < 1:
        raise ConfigError("deploy.keep_releases: must be at least 1", "keep_releases = 5")
    from .aws.secrets import parse_entries  # pure: syntax only, nothing is read from AWS here

    parse_entries(d.secrets)
    if d.restart not in ("no", "always", "unless-stopped", "on-failure"):
        raise ConfigError(f"deploy.restart: {d.restart!r} is not a Docker restart policy",
                          "use no, always, unless-stopped or on-failure")
    _validate_real_apps(cfg)
    p = cfg.proxy
    if p.http_port == p.https_port:
        raise ConfigError("proxy: http_port and https_port must differ", "e.g. 80 and 443")
    if p.http_port in ports or p.https_port in ports:
        raise ConfigError("proxy: nginx's ports collide with deploy.colours", "give nginx and each colour their own ports")


_DEB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_SIZE_RE = re.compile(r"^\d+[kKmMgG]?$")
_CONTAINER_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]*$")


def _argv(where: str, argv: tuple[str, ...], example: str) -> None:
    if not argv or not all(isinstance(a, str) and a for a in argv):
        raise ConfigError(f"{where}: expected a command as a list of words", f"e.g. {example}")


def _validate_real_apps(cfg: Config) -> None:
    """The keys real apps need: system packages, build steps, release command, volumes,
    processes, proxy limits and accessories."""
    i, d, p = cfg.image, cfg.deploy, cfg.proxy
    for name in i.packages:
        if not _DEB_NAME_RE.match(name):
            raise ConfigError(f"image.packages: {name!r} is not a Debian package name",
                              'e.g. packages = ["libpq5", "sqlite3"]')
    for n, step in enumerate(i.build):
        _argv(f"image.build[{n}]", step, 'build = [["python3", "manage.py", "collectstatic", "--noinput"]]')
    if i.build_inputs and not i.build:
        raise ConfigError("image.build_inputs: there are no image.build steps to read them",
                          'add the steps, e.g. build = [["python3", "manage.py", "collectstatic", "--noinput"]], '
                          "or remove build_inputs")
    for pat in i.build_inputs:
        if not pat.strip() or pat.strip().startswith("#") or ".." in pat.split("/"):
            raise ConfigError(f"image.build_inputs: {pat!r} is not a pattern of source files",
                              'a name anywhere ("static") or a path from the source folder ("mysite/settings.py")')
    for k in i.build_env:
        if not _ENV_NAME_RE.match(k):
            raise ConfigError(f"image.build_env: {k!r} is not an environment variable name", 'e.g. build_env = { DJANGO_SETTINGS_MODULE = "mysite.settings" }')
    if i.package is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", i.package):
        raise ConfigError(f"image.package: {i.package!r} is not a package name", 'the workspace member, e.g. package = "app"')
    if d.release_command:
        _argv("deploy.release_command", d.release_command, 'release_command = ["python3", "manage.py", "migrate", "--noinput"]')
    if d.release_timeout <= 0:
        raise ConfigError("deploy.release_timeout: must be positive", 'e.g. release_timeout = "10m"')
    if d.parallel < 1:
        raise ConfigError("deploy.parallel: must be at least 1", "parallel = 1 swaps one host at a time")
    seen_paths: dict[str, str] = {}
    for name, path in d.volumes.items():
        if not _NAME_RE.match(name):
            raise ConfigError(f"deploy.volumes: {name!r} is not a valid volume name",
                              "lower-case letters, digits and dashes, e.g. volumes = { media = \"/app/media\" }")
        if not _CONTAINER_PATH_RE.match(path) or path.rstrip("/") in ("", "/proc", "/sys", "/dev", "/etc", "/usr", "/bin"):
            raise ConfigError(f"deploy.volumes.{name}: {path!r} is not a usable absolute path in the container",
                              'e.g. media = "/app/media"')
        if path.rstrip("/") in seen_paths:
            raise ConfigError(f"deploy.volumes: {seen_paths[path.rstrip('/')]} and {name} both mount {path}",
                              "give each volume its own path")
        seen_paths[path.rstrip("/")] = name
    for name, proc in cfg.processes.items():
        w = f"processes.{name}"
        if not _NAME_RE.match(name) or name in ("blue", "green", "release", "exec"):
            raise ConfigError(f"{w}: {name!r} is not a usable process name",
                              "lower-case letters, digits and dashes, not blue/green/release/exec; e.g. [processes.worker]")
        _argv(f"{w}.command", proc.command, 'command = ["celery", "-A", "proj", "worker"]')
        if not (0 <= proc.replicas <= 32):
            raise ConfigError(f"{w}.replicas: {proc.replicas} is out of range", "use 0-32 (0 stops the process)")
        if proc.health:
            _argv(f"{w}.health", proc.health, 'health = ["celery", "-A", "proj", "inspect", "ping"]')
    if not _SIZE_RE.match(p.max_body):
        raise ConfigError(f"proxy.max_body: {p.max_body!r} is not an nginx size",
                          'a number with k, m or g, e.g. max_body = "100m" ("0" for no limit)')
    if p.read_timeout <= 0:
        raise ConfigError("proxy.read_timeout: must be positive", 'e.g. read_timeout = "60s"')
    for prefix, volume in p.serve.items():
        if prefix == "/":
            raise ConfigError("proxy.serve: '/' is not a usable prefix: it would take every request from the app",
                              'name a folder, e.g. serve = { "/media/" = "media" }')
        if not re.match(r"^/[A-Za-z0-9._~/-]*/$", prefix):
            raise ConfigError(f"proxy.serve: {prefix!r} is not a URL prefix like \"/media/\"",
                              "start and end it with /; letters, digits and . _ ~ - between")
        segments = prefix.strip("/").split("/")
        if "" in segments or any(seg in (".", "..") for seg in segments):
            raise ConfigError(f"proxy.serve: {prefix!r} is not a usable prefix",
                              "name a folder without empty, . or .. parts, e.g. \"/media/\"")
        if prefix.startswith("/.well-known/acme-challenge/"):
            raise ConfigError(f"proxy.serve: {prefix!r} is the ACME webroot's (certificates), never a volume's",
                              "serve the volume under another prefix, e.g. \"/media/\"")
        if volume not in d.volumes:
            raise ConfigError(f"proxy.serve.{prefix}: {volume!r} is not one of deploy.volumes ({', '.join(sorted(d.volumes)) or 'none'})",
                              'declare it, e.g. [deploy] volumes = { media = "/app/media" }')
    for cidr in p.real_ip_from:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"proxy.real_ip_from: {cidr!r} is not an address or CIDR", 'e.g. real_ip_from = ["10.0.0.0/16"]') from None
    if p.templates is not None and not cfg.resolve(p.templates).is_dir():
        raise ConfigError(f"proxy.templates: {p.templates!r} is not a directory (looked in {cfg.resolve(p.templates)})",
                          "point it at a folder with your own site.conf.j2 / proxy.conf.j2, or remove the key")
    ports = {"deploy.colours": set(d.colours.values()), "proxy": {p.http_port, p.https_port}}
    for name, a in cfg.accessories.items():
        w = f"accessories.{name}"
        if not _NAME_RE.match(name):
            raise ConfigError(f"{w}: {name!r} is not a usable name", "lower-case letters, digits and dashes, e.g. [accessories.db]")
        if a.kind not in ACCESSORY_KINDS:
            raise ConfigError(f"{w}.kind: {a.kind!r} is not known", f"use one of {', '.join(ACCESSORY_KINDS)}")
        if a.kind == "image" and not a.image:
            raise ConfigError(f"{w}: kind \"image\" needs image = \"repo@sha256:...\"", 'or kind = "postgres" / "redis"')
        if a.image is not None and not re.match(r"^[a-z0-9][a-z0-9._:/-]*@sha256:[0-9a-f]{64}$", a.image):
            raise ConfigError(f"{w}.image: {a.image!r} is not pinned by digest", 'e.g. image = "registry.example.com/db@sha256:<64 hex>"')
        if a.kind == "postgres" and a.version is not None and a.version not in ("15", "17", "18"):
            raise ConfigError(f"{w}.version: PostgreSQL {a.version} is not one a Debian suite ships",
                              "use 15 (bookworm), 17 (trixie) or 18 (forky)")
        if a.url_env is not None and not _ENV_NAME_RE.match(a.url_env):
            raise ConfigError(f"{w}.url_env: {a.url_env!r} is not an environment variable name", 'e.g. url_env = "DATABASE_URL"')
        if a.kind == "rds":
            _validate_rds(cfg, w, a)
        if a.port is not None:
            if not (1024 <= a.port < 65536):
                raise ConfigError(f"{w}.port: {a.port} is not a usable port", "use 1024-65535")
            for what, taken in ports.items():
                if a.port in taken:
                    raise ConfigError(f"{w}.port: {a.port} is already used by {what}", "give the accessory its own port")
            ports[w] = {a.port}
        for k in ("database", "user"):
            v = getattr(a, k)
            if v is not None and not re.match(r"^[a-z_][a-z0-9_]{0,62}$", v):
                raise ConfigError(f"{w}.{k}: {v!r} is not a PostgreSQL identifier", "lower-case letters, digits and _")
        if a.volume is not None and not _CONTAINER_PATH_RE.match(a.volume):
            raise ConfigError(f"{w}.volume: {a.volume!r} is not an absolute path", 'e.g. volume = "/data"')
        if a.backup.keep < 1:
            raise ConfigError(f"{w}.backup.keep: must be at least 1", "keep = 7")


def _validate_rds(cfg: Config, w: str, a: AccessoryConfig) -> None:
    """kind "rds": the stack's RDS instance; ferry runs nothing, it only hands the app its URL,
    built at deploy time from the stack outputs and the secret RDS keeps (ferry/aws/secrets.py)."""
    if not (cfg.deploy.stack or cfg.deploy.stack_outputs):
        raise ConfigError(f"{w}: kind \"rds\" reads the database from the Pulumi stack, and deploy.stack is not set",
                          'set [deploy] stack = "dev" (or stack_outputs = "stack-outputs.json"), with database = true in the stack')
    if not a.url_env:
        raise ConfigError(f"{w}: kind \"rds\" needs url_env, the variable the app reads its URL from",
                          'e.g. url_env = "DATABASE_URL"')
    for key in ("version", "image", "port", "user", "command", "volume", "host"):
        if getattr(a, key):
            raise ConfigError(f"{w}.{key}: does not apply to kind \"rds\" (the stack sets up the instance)",
                              "remove it; the RDS settings are stack config keys (infra/README.md)")
    if a.env:
        raise ConfigError(f"{w}.env: does not apply to kind \"rds\"", "remove it")
    from .aws.secrets import parse_entries

    if a.url_env in {r.name for r in parse_entries(cfg.deploy.secrets)} or a.url_env in cfg.deploy.env:
        raise ConfigError(f"{w}.url_env: {a.url_env} is also set by deploy.secrets or deploy.env",
                          "let one of them set it")


def parse(data: dict, path: Path) -> Config:
    """Validate a parsed TOML document (pure: no hosts, no network)."""
    where = str(path.name)
    try:
        for required in ("app", "image"):
            if required not in data:
                raise ConfigError(f"[{required}]: missing section", f"add a [{required}] table")
        sections = {f.name for f in dataclasses.fields(Config)} - {"path"}
        unknown = sorted(set(data) - sections)
        if unknown:
            raise ConfigError(f"[{unknown[0]}]: unknown section", f"known sections: {', '.join(sorted(sections))}")
        kwargs: dict[str, Any] = {}
        hints = typing.get_type_hints(Config)
        for name in sections:
            if name in data:
                if not isinstance(data[name], dict):
                    raise ConfigError(f"{name}: expected a [{name}] table")
                if dataclasses.is_dataclass(hints[name]):
                    kwargs[name] = _read_section(data[name], hints[name], name)
                else:  # [processes.NAME], [accessories.NAME]: a table of sections
                    kwargs[name] = _convert(data[name], hints[name], name, name)
        cfg = Config(path=path, **kwargs)
        _validate(cfg)
        return cfg
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.message}", e.hint) from None


def load(path: str | os.PathLike | None = None) -> Config:
    p = Path(path or DEFAULT_CONFIG).absolute()
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file", "run ferry in the folder with ferry.toml, or pass -c PATH")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p.name}: not valid TOML: {e}", "fix the syntax at the line named") from None
    return parse(data, p)


def read_secrets(cfg: Config, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Values of ``deploy.secrets`` from the environment, then ``deploy.env_file``; AWS
    references and kind "rds" accessories from AWS (ferry/aws/secrets.py). Called when a deploy,
    release or rollback starts, before any host is touched."""
    env = dict(os.environ if environ is None else environ)
    file_values: dict[str, str] = {}
    if cfg.deploy.env_file:
        f = cfg.resolve(cfg.deploy.env_file)
        if not f.is_file():
            raise ConfigError(f"deploy.env_file: {f} does not exist", "create it (mode 0600) or remove the key")
        for n, line in enumerate(f.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "=" not in line:
                raise ConfigError(f"{f}:{n}: expected KEY=value")
            k, v = line.split("=", 1)
            file_values[k.strip()] = v.strip()
    from .aws.secrets import aws_values, parse_entries

    out = {}
    for ref in parse_entries(cfg.deploy.secrets):
        if ref.source != "env":
            continue
        if ref.name in env:
            out[ref.name] = env[ref.name]
        elif ref.name in file_values:
            out[ref.name] = file_values[ref.name]
        else:
            raise ConfigError(f"deploy.secrets: {ref.name} is not set",
                              f"export {ref.name}=... or put it in deploy.env_file")
    # NAME=aws-sm:... / NAME=ssm:... and kind "rds" accessories' url_env, read now (deploy time)
    # with the deployer's credentials; nothing is asked of AWS when there are none
    out.update(aws_values(cfg, environ=env))
    return out

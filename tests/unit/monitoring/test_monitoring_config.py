"""[monitoring] in ferry.toml: defaults, and every wrong value named with its fix."""

from __future__ import annotations

import pytest

from ferry.errors import ConfigError
from ferry.monitoring.settings import prom_duration, prom_seconds, settings

from .helpers import config


def test_defaults_put_every_component_on_loopback_ports_and_the_stack_beside_the_apps():
    s = settings(config(), "root@127.0.0.1:2222")
    assert s.prometheus_url == "http://127.0.0.1:9090"
    assert s.grafana_url == "http://127.0.0.1:3000"
    assert s.alertmanager_url == "http://127.0.0.1:9093"
    assert s.root == "/opt/ferry/_monitoring"
    assert s.prefix == "hello"
    assert s.probe_url == "http://127.0.0.1:8080/"
    assert s.host == "127.0.0.1"
    assert s.docker == ("docker", "-H", "unix:///var/lib/ferry-local/docker.sock")


def test_metric_prefix_defaults_to_the_app_name_with_underscores():
    assert settings(config(app="my-shop")).prefix == "my_shop"
    assert settings(config('metrics_prefix = "shop"', app="my-shop")).prefix == "shop"


@pytest.mark.parametrize("line, message", [
    ('retention = "15 days"', "monitoring.retention: '15 days' is not a Prometheus duration"),
    ('scrape_interval = "5"', "monitoring.scrape_interval: '5' is not a Prometheus duration"),
    ('retention_size = "2 gigs"', "monitoring.retention_size: '2 gigs' is not a size"),
    ("prometheus_port = 9093", "monitoring: prometheus_port and alertmanager_port are both 9093"),
    ("grafana_port = 80", "monitoring.grafana_port: 80 is not a usable port"),
    ('stub_status_url = "127.0.0.1:8079"', "monitoring.stub_status_url: '127.0.0.1:8079' is not an http(s) URL"),
    ('probe_url = "hello.example.com"', "monitoring.probe_url: 'hello.example.com' is not an http(s) URL"),
    ('metrics_prefix = "hello-app"', "monitoring.metrics_prefix: 'hello-app' is not a metric name prefix"),
    ('grafana_admin_password_env = "s3cret pass"', "is not an environment variable name"),
    ('root = "opt/monitoring"', "monitoring.root: 'opt/monitoring' must be an absolute path"),
    ("images = { prometheus = \"prom/prometheus\" }", "monitoring.images.prometheus: 'prom/prometheus' is not an image reference"),
    ("alerts = { receiver = \"pager\" }", "monitoring.alerts.receiver: 'pager' is not known"),
    ("alerts = { receiver = \"email\" }", "monitoring.alerts: receiver = \"email\" needs email_to, email_from, smarthost"),
    ('alerts = { receiver = "email", email_to = ["ops@example.com"], email_from = "f@example.com", '
     'smarthost = "smtp.example.com" }', "monitoring.alerts.smarthost: 'smtp.example.com' is not host:port"),
    ('alerts = { receiver = "email", email_to = ["ops"], email_from = "f@example.com", '
     'smarthost = "smtp.example.com:587" }', "monitoring.alerts: 'ops' is not an email address"),
    ('alerts = { receiver = "email", email_to = ["ops@example.com"], email_from = "f@example.com", '
     'smarthost = "smtp.example.com:587", smtp_username = "u" }', "monitoring.alerts.smtp_password_env: needed with smtp_username"),
    ('alerts = { slack_webhook_env = "https://hooks.slack.com/x" }', "is not an environment variable name"),
    ('alerts = { receiver = "webhook" }', 'monitoring.alerts: receiver = "webhook" needs webhook_url'),
    ('alerts = { receiver = "webhook", webhook_url = "alerts.example.com/x" }', "is not an http(s) URL"),
    ('alerts = { receiver = "webhook", webhook_url = "https://u:pw@alerts.example.com/x" }',
     "is not an http(s) URL without credentials"),
    ('alerts = { receiver = "webhook", webhook_url = "https://alerts.example.com/x?token=abc" }',
     "monitoring.alerts.webhook_url: the URL carries a secret in its query"),
    ('alerts = { receiver = "webhook", webhook_url = "https://a.example.com/", webhook_token_env = "s3cr3t!" }',
     "monitoring.alerts.webhook_token_env: 's3cr3t!' is not an environment variable name"),
    ("alerts = { availability_slo = 100 }", "monitoring.alerts.availability_slo: 100.0 is not a percentage below 100"),
    ('alerts = { latency_p99 = "half a second" }', "monitoring.alerts.latency_p99: 'half a second' is not a Prometheus duration"),
    ("alerts = { cert_expiry_days = 0 }", "monitoring.alerts.cert_expiry_days: 0 is out of range"),
    ('alerts = { deadman_url = "hc-ping.com/abc" }', "monitoring.alerts.deadman_url: 'hc-ping.com/abc' is not an http"),
    ("unknown_key = 1", "monitoring: unknown key 'unknown_key'"),
])
def test_a_wrong_value_is_refused_with_the_key_and_the_fix(line, message):
    with pytest.raises(ConfigError) as e:
        config(line)
    assert message in str(e.value)
    assert str(e.value).startswith("ferry.toml: ")


def test_a_monitoring_port_taken_by_a_colour_is_refused_when_resolving():
    with pytest.raises(ConfigError, match="monitoring.node_exporter_port: 8081 is also deploy.colours.blue"):
        settings(config("node_exporter_port = 8081"))


def test_prometheus_durations_convert_both_ways():
    assert prom_seconds("1h30m") == 5400
    assert prom_seconds("500ms") == 0.5
    assert prom_duration(1500) == "25m"
    assert prom_duration(5400) == "1h30m"
    assert prom_duration(0.5) == "500ms"
    with pytest.raises(ValueError):
        prom_seconds("90")


# --- one owner for the exporters: the stack, with the addresses prepare-host gives the host ----

def _prepare_host_stub_status_listen() -> str:
    """The `listen` line of the stub_status server scripts/prepare-host writes on a real host."""
    import re

    from .helpers import ROOT

    text = (ROOT / "scripts" / "prepare-host").read_text()
    block = text[text.index("location = /stub_status") - 400:text.index("location = /stub_status")]
    (listen,) = re.findall(r"listen (127\.0\.0\.1:\d+);", block)
    return listen


def test_on_a_real_host_the_nginx_exporter_reads_the_stub_status_prepare_host_configures():
    remote = config(hosts='["admin@203.0.113.7"]')
    s = settings(remote, "admin@203.0.113.7")
    assert s.stub_status_url == f"http://{_prepare_host_stub_status_listen()}/stub_status"
    assert s.stub_status_url == "http://127.0.0.1:9180/stub_status"


def test_on_the_local_target_it_reads_the_local_nginx_status_port_and_an_explicit_url_wins():
    import tomllib

    from ferry.config import parse

    from .helpers import BASE, ROOT

    # the local target is known by its nginx: deploy.nginx_conf under local.state_dir
    local = BASE.replace("[proxy]", 'nginx_conf = "/var/lib/ferry-local/nginx/nginx.conf"\n\n[proxy]')
    doc = tomllib.loads(local + '\n[local]\nnginx_status_port = 18079\n[monitoring]\n')
    assert settings(parse(doc, ROOT / "ferry.toml")).stub_status_url == "http://127.0.0.1:18079/stub_status"
    # loopback SSH alone does not make a host the local target: /etc/nginx is prepare-host's
    assert settings(config()).stub_status_url == "http://127.0.0.1:9180/stub_status"
    mine = config('stub_status_url = "http://127.0.0.1:7000/status"')
    assert settings(mine).stub_status_url == "http://127.0.0.1:7000/status"


def test_the_repositorys_ferry_toml_is_the_local_target_and_reads_8079():
    from ferry.config import load

    from .helpers import ROOT

    assert settings(load(ROOT / "ferry.toml")).stub_status_url == "http://127.0.0.1:8079/stub_status"


def test_tls_metrics_go_where_the_stacks_node_exporter_reads_when_monitoring_is_on():
    on = config("enabled = true")
    assert on.tls.metrics_dir == settings(on).textfile_dir == "/opt/ferry/_monitoring/textfile"
    moved = config('enabled = true\nroot = "/srv/mon"')
    assert moved.tls.metrics_dir == settings(moved).textfile_dir == "/srv/mon/textfile"
    off = config("enabled = false")
    assert off.tls.metrics_dir == "/var/lib/prometheus/node-exporter"  # a node_exporter of your own
    mine = config("enabled = true", extra='\n[tls]\nmetrics_dir = "/var/lib/node-exporter"\n')
    assert mine.tls.metrics_dir == "/var/lib/node-exporter"


def test_the_certificate_renewer_writes_into_the_stacks_textfile_directory():
    import tomllib

    from ferry.certs import manage
    from ferry.config import parse

    from .helpers import BASE, ROOT

    doc = tomllib.loads(BASE.replace('name = "hello"', 'name = "hello"\ndomain = "hello.example.com"')
                        + '\n[tls]\nenabled = true\n[monitoring]\nenabled = true\n')
    cfg = parse(doc, ROOT / "ferry.toml")
    assert manage.settings(cfg).metrics_dir == settings(cfg).textfile_dir


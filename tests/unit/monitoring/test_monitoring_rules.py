"""The rendered Prometheus config, rules and Alertmanager config, checked by Prometheus' own
tools (promtool, amtool: offline, no server), and every alert covered by a promtool test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ferry.monitoring import render
from ferry.monitoring.generated import render_all
from ferry.monitoring.settings import settings

from .helpers import ROOT, config

MONITORING = ROOT / "monitoring"
TESTS = MONITORING / "rules" / "tests"
# promtool and amtool come from Debian's prometheus and prometheus-alertmanager (`make setup`)

VARIANTS = {
    "defaults": "",
    "email, stricter SLO, slower latency target": """
        scrape_interval = "30s"
        retention = "30d"
        probe_url = "https://hello.example.com/"
        [monitoring.alerts]
        receiver = "email"
        email_to = ["ops@example.com", "dev@example.com"]
        email_from = "ferry@example.com"
        smarthost = "smtp.example.com:587"
        smtp_username = "ferry"
        smtp_password_env = "SMTP_PASSWORD"
        availability_slo = 99.95
        latency_p99 = "1s500ms"
        cert_expiry_days = 21
    """,
    "slack": 'alerts = { receiver = "slack", slack_channel = "#ops" }',
    "webhook": 'alerts = { receiver = "webhook", webhook_url = "https://alerts.example.com/am", '
               'webhook_token_env = "ALERT_TOKEN" }',
}
PEOPLE = {"defaults": "none", "slack": "slack", "webhook": "webhook"}


def run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=120)


def write_rendered(tmp: Path, monitoring: str) -> Path:
    s = settings(config(monitoring), "root@203.0.113.7")
    from ferry.monitoring.targets import Slot, targets_json

    for rel, text in render.example(s, targets_json(s, [Slot("blue", "r1", "v1")], "blue")).items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rendered_prometheus_config_passes_promtool(tmp_path, variant):
    out = write_rendered(tmp_path, VARIANTS[variant])
    r = run(["promtool", "check", "config", "--syntax-only", str(out / "prometheus.yml")])
    assert r.returncode == 0, r.stdout + r.stderr
    rules = sorted((out / "rules").glob("*.yml"))
    assert [p.name for p in rules] == ["hello-accessories.yml", "hello-deploy.yml", "hello-slo.yml", "host.yml", "stack.yml"]
    r = run(["promtool", "check", "rules", *map(str, rules)])
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rendered_alertmanager_config_passes_amtool(tmp_path, variant):
    out = write_rendered(tmp_path, VARIANTS[variant])
    r = run(["amtool", "check-config", str(out / "alertmanager.yml")])
    assert r.returncode == 0, r.stdout + r.stderr
    doc = yaml.safe_load((out / "alertmanager.yml").read_text())
    text = (out / "alertmanager.yml").read_text()
    # secrets are files the container reads, never values in the config
    assert "https://hooks" not in text and "password:" not in text
    receiver = doc["route"]["receiver"]
    assert receiver == PEOPLE.get(variant, "email")
    if receiver == "email":
        assert doc["global"]["smtp_auth_password_file"] == "/run/secrets/alertmanager/smtp_password"
        assert doc["receivers"][0]["email_configs"][0]["to"] == "ops@example.com, dev@example.com"
    if receiver == "slack":
        assert doc["receivers"][0]["slack_configs"][0]["api_url_file"] == "/run/secrets/alertmanager/slack_webhook_url"
    if receiver == "webhook":
        # the URL is in the config (Alertmanager 0.25 reads no url_file); the token is a file
        assert doc["receivers"][0]["webhook_configs"] == [{
            "url": "https://alerts.example.com/am", "send_resolved": True,
            "http_config": {"authorization": {"type": "Bearer",
                                              "credentials_file": "/run/secrets/alertmanager/webhook_token"}}}]
    # exactly one receiver for people, and it is the one the route names
    assert [r["name"] for r in doc["receivers"] if r["name"] != "deadman"] == [receiver]


def test_a_webhook_without_a_token_sends_no_authorization(tmp_path):
    out = write_rendered(tmp_path, 'alerts = { receiver = "webhook", webhook_url = "http://127.0.0.1:8999/hook" }')
    am = out / "alertmanager.yml"
    r = run(["amtool", "check-config", str(am)])
    assert r.returncode == 0, r.stdout + r.stderr
    (hook,) = [r for r in yaml.safe_load(am.read_text())["receivers"] if r["name"] == "webhook"]
    assert hook["webhook_configs"] == [{"url": "http://127.0.0.1:8999/hook", "send_resolved": True}]
    assert routes(am, "alertname=InstanceDown", "severity=page") == "webhook"
    assert routes(am, "alertname=Watchdog", "severity=none") == "deadman"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rendered_blackbox_config_passes_the_exporters_own_check(tmp_path, variant):
    out = write_rendered(tmp_path, VARIANTS[variant])
    r = run(["prometheus-blackbox-exporter", f"--config.file={out / 'blackbox.yml'}", "--config.check"])
    assert r.returncode == 0, r.stdout + r.stderr
    # and the check can fail: an unknown key is refused
    bad = out / "blackbox.yml"
    bad.write_text(bad.read_text().replace("valid_status_codes", "valid_status_codez"))
    assert run(["prometheus-blackbox-exporter", f"--config.file={bad}", "--config.check"]).returncode != 0


def routes(path: Path, *labels: str) -> str:
    r = run(["amtool", "config", "routes", "test", f"--config.file={path}", *labels])
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_watchdog_goes_to_the_dead_mans_switch_and_never_to_people(tmp_path, variant):
    out = write_rendered(tmp_path, VARIANTS[variant])
    am = out / "alertmanager.yml"
    people = PEOPLE.get(variant, "email")
    assert routes(am, "alertname=Watchdog", "severity=none", "host=web-1") == "deadman"
    assert routes(am, "alertname=InstanceDown", "severity=page") == people
    assert routes(am, "alertname=DeployFailed", "severity=ticket") == people
    deadman = next(r for r in yaml.safe_load(am.read_text())["receivers"] if r["name"] == "deadman")
    assert deadman == {"name": "deadman"}  # no deadman_url: a receiver that sends nothing


def test_with_a_deadman_url_the_watchdog_pings_it(tmp_path):
    out = write_rendered(tmp_path, 'alerts = { receiver = "slack", deadman_url = "https://hc-ping.com/0f0e" }')
    am = out / "alertmanager.yml"
    r = run(["amtool", "check-config", str(am)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert routes(am, "alertname=Watchdog", "severity=none") == "deadman"
    assert routes(am, "alertname=InstanceDown", "severity=page") == "slack"
    doc = yaml.safe_load(am.read_text())
    deadman = next(r for r in doc["receivers"] if r["name"] == "deadman")
    assert deadman["webhook_configs"] == [{"url": "https://hc-ping.com/0f0e", "send_resolved": False}]
    route = next(r for r in doc["route"]["routes"] if r["receiver"] == "deadman")
    assert route["continue"] is False and route["repeat_interval"] == "5m"
    watchdog = yaml.safe_load((out / "rules" / "stack.yml").read_text())
    (rule,) = [r for g in watchdog["groups"] for r in g["rules"] if r.get("alert") == "Watchdog"]
    assert rule["expr"] == "vector(1)" and rule["labels"] == {"severity": "none"}


def test_thresholds_from_the_config_reach_the_rules(tmp_path):
    out = write_rendered(tmp_path, VARIANTS["email, stricter SLO, slower latency target"])
    slo = (out / "rules" / "hello-slo.yml").read_text()
    assert "(14.4 * 0.0005)" in slo and ") > 1.5\n" in slo
    stack = (out / "rules" / "stack.yml").read_text()
    assert "/ 86400 < 21" in stack
    deploy = yaml.safe_load((out / "rules" / "hello-deploy.yml").read_text())
    both = next(r for g in deploy["groups"] for r in g["rules"] if r.get("alert") == "BothColoursRunningTooLong")
    assert both["for"] == "25m"  # keep_previous 15m + grace 10m


def test_prometheus_scrapes_only_loopback_and_both_colours_through_file_sd():
    s = settings(config(), "root@127.0.0.1:2222")
    doc = yaml.safe_load(render.prometheus_yml(s))
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert set(jobs) == {"prometheus", "alertmanager", "node", "nginx", "blackbox", "probe", "apps"}
    for name in ("prometheus", "alertmanager", "node", "nginx", "blackbox"):
        for target in jobs[name]["static_configs"][0]["targets"]:
            assert target.startswith("127.0.0.1:")
    assert jobs["apps"]["file_sd_configs"][0]["files"] == ["/etc/prometheus/targets/*.json"]
    assert jobs["probe"]["relabel_configs"][-1]["replacement"] == "127.0.0.1:9115"
    assert doc["global"]["external_labels"] == {"host": "127.0.0.1"}
    assert doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9093"]


def alerts_in(rule_files: list[Path]) -> set[str]:
    names = set()
    for p in rule_files:
        for g in yaml.safe_load(p.read_text())["groups"]:
            names |= {r["alert"] for r in g["rules"] if "alert" in r}
    return names


def test_every_alert_has_a_promtool_test_that_expects_it_to_fire():
    rules = sorted((MONITORING / "rendered" / "rules").glob("*.yml"))
    alerts = alerts_in(rules)
    fired = set()
    for t in TESTS.glob("*.yml"):
        for group in yaml.safe_load(t.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    fired.add(case["alertname"])
    assert len(alerts) >= 20
    assert alerts - fired == set(), "alerts without a test that makes them fire"
    assert fired - alerts == set(), "tests for alerts that no longer exist"


def test_promtool_unit_tests_pass():
    r = run(["promtool", "test", "rules", *sorted(p.name for p in TESTS.glob("*.yml"))], cwd=TESTS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(list(TESTS.glob("*.yml")))


def test_a_broken_rule_makes_promtool_test_fail(tmp_path):
    """The promtool tests can fail: raise the paging threshold and the fast-burn test breaks."""
    work = tmp_path / "monitoring"
    shutil.copytree(MONITORING / "rendered", work / "rendered")
    shutil.copytree(TESTS, work / "rules" / "tests")
    slo = work / "rendered" / "rules" / "hello-slo.yml"
    slo.write_text(slo.read_text().replace("(14.4 * 0.001)", "(40 * 0.001)").replace("(6 * 0.001)", "(40 * 0.001)"))
    r = run(["promtool", "test", "rules", "app-slo_test.yml"], cwd=work / "rules" / "tests")
    assert r.returncode != 0
    assert "AppErrorBudgetBurnFast" in r.stdout + r.stderr


def test_checked_in_rendered_files_and_dashboards_match_the_repositorys_ferry_toml():
    from ferry.config import load

    r = render_all(load(ROOT / "ferry.toml"), check=True)
    assert r["stale"] == [], "run `ferry monitoring render` and commit the result"

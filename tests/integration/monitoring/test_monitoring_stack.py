"""The stack on the local target, for real: `ferry monitoring up` starts every component as a
container (images built from Debian's binaries, pinned by digest), a release of the sample
service goes out, some traffic goes through nginx, and then every target is up and every query
of every dashboard panel returns data from the real Prometheus."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from ferry.config import load
from ferry.monitoring import dashboards
from ferry.monitoring.settings import settings

from .conftest import APP, ROOT, STACK_ROOT, ferry, ferry_json, prom, wait_for, write_config

pytestmark = pytest.mark.integration


def traffic(url: str, n: int = 240) -> dict[int, int]:
    """A bounded mix through nginx: pages, health, version, a slow-ish call, and a request the
    sample answers with a 500 (a bad ?s=), so the error panels have something to show."""
    codes: dict[int, int] = {}
    paths = ["/", "/", "/", "/healthz", "/version", "/slow?s=0.05", "/slow?s=oops", "/nope"]
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=5, trust_env=False) as c:
        for i in range(n):
            if time.monotonic() > deadline:
                break
            r = c.get(url + paths[i % len(paths)])
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
    return codes


def empty_queries(docs: dict[str, dict], window: float = 600) -> list[str]:
    """Every panel and annotation query, as Grafana would send it over the last ``window``
    seconds; the ones that return no series."""
    end = time.time()
    empty = []
    for name, doc in docs.items():
        for where, expr in dashboards.queries(doc):
            q = dashboards.interpolate(expr, rate_interval="20s", range_=f"{int(window)}s")
            data = prom("/api/v1/query_range", query=q, start=end - window, end=end, step=5)
            if not data["result"]:
                empty.append(f"{name}: {where}: {q}")
    return empty


def test_monitoring_up_release_and_traffic_leave_no_dashboard_panel_empty(e2e_app, monitoring_images):
    up = ferry_json(e2e_app.config, "monitoring", "up")
    assert up["ok"] and up["prometheus_url"] == "http://127.0.0.1:9090"
    for c in up["hosts"][0]["components"]:
        assert "@sha256:" in c["image"], c  # every container runs by digest
    assert {c["component"] for c in up["hosts"][0]["components"]} == {
        "prometheus", "alertmanager", "node_exporter", "nginx_exporter", "blackbox_exporter"}

    # a release: the deployer records its events (start, success) for the textfile collector
    rel = ferry_json(e2e_app.config, "release", "--version", "e2e1", timeout=900)["hosts"][0]
    release_id = rel["release"]
    events = Path(f"{STACK_ROOT}/textfile/ferry_deploy_{APP}.prom").read_text()
    assert f'ferry_deploy_events_total{{app="{APP}",event="success"}} 1' in events
    assert f'ferry_release_info{{app="{APP}",release="{release_id}",version="e2e1"' in events

    codes = traffic(e2e_app.url)
    assert codes.get(200, 0) > 100 and codes.get(500, 0) > 0, codes
    # a counter's first scrape is its baseline: more traffic once Prometheus has seen the 5xx
    # series, so rates over it are real increases
    def scraped():
        r = prom("/api/v1/query",
                 query=f'hello_requests_total{{job="{APP}", release="{release_id}", status="500"}}')["result"]
        return bool(r), r

    wait_for("the 5xx series to be scraped", scraped, timeout=60)
    codes = traffic(e2e_app.url, n=120)
    assert codes.get(500, 0) > 0, codes

    # the targets: the host-wide ones and this app's colour and probe all up
    def ours_up():
        ts = prom("/api/v1/targets", state="active")["activeTargets"]
        mine = [t for t in ts if t["labels"]["job"] in ("prometheus", "alertmanager", "node", "nginx", "blackbox")
                or t["labels"].get("app") == APP]
        jobs = {t["labels"]["job"] for t in mine}
        ok = jobs == {"prometheus", "alertmanager", "node", "nginx", "blackbox", "probe", APP} and \
            all(t["health"] == "up" for t in mine)
        return ok, mine if ok else "\n".join(f"{t['labels']} {t['health']} {t['lastError']}" for t in mine)

    targets = wait_for("every target of the stack and the app to be up", ours_up, timeout=90)
    app_targets = [t for t in targets if t["labels"]["job"] == APP]
    assert app_targets[0]["labels"]["colour"] in ("blue", "green")
    assert app_targets[0]["labels"]["role"] == "live"
    assert app_targets[0]["labels"]["release"] == release_id

    # every panel of every dashboard (this app's service dashboard, host, nginx) has data
    s = settings(load(e2e_app.config), "root@127.0.0.1:2222")
    docs = {name: json.loads(text) for name, text in dashboards.generate(s).items()}
    assert set(docs) == {f"{APP}-service.json", "host.json", "nginx.json"}
    n = sum(len(dashboards.queries(d)) for d in docs.values())
    assert n > 40
    def all_have_data():
        empty = empty_queries(docs)
        return not empty, "\n".join(empty)

    wait_for(f"all {n} dashboard queries to return data", all_have_data, timeout=120, every=5)

    # the SLO recording rules work on the real series: 1 request in 8 was a 500 (scrapes of
    # /metrics do not count), so the ratio is well above 0 and below 1
    def ratio():
        r = prom("/api/v1/query", query=f'app:request_errors:ratio_rate5m{{app="{APP}"}}')["result"]
        return bool(r) and 0 < float(r[0]["value"][1]) < 1, r and float(r[0]["value"][1])

    assert 0.02 < wait_for("the 5xx ratio to be recorded", ratio, timeout=60) < 0.5


def app_targets() -> list[dict]:
    return [t for t in prom("/api/v1/targets", state="active")["activeTargets"] if t["labels"].get("job") == APP]


def test_a_second_release_is_scraped_in_both_colours_and_marked_for_both_releases(e2e_app):
    """ARCHITECTURE: the deployer rewrites targets/<app>.json at every release, both colours
    labelled colour, release, role=live|idle; the previous colour keeps running (keep_previous
    = 10m here), so after a second release Prometheus scrapes both, and the deploy annotation
    series (ferry_deploy_last_event_timestamp_seconds) exists for each release."""
    live = [t for t in app_targets() if t["labels"].get("role") == "live"]
    if not live:  # run on its own: the first release of this module has not happened
        ferry_json(e2e_app.config, "release", "--version", "e2e1", timeout=900)
        live = wait_for("the first release's live target", lambda: (
            bool(ts := [t for t in app_targets() if t["labels"].get("role") == "live"]), ts), timeout=60)
    (first,) = live
    first_release, first_colour = first["labels"]["release"], first["labels"]["colour"]

    rel = ferry_json(e2e_app.config, "release", "--version", "e2e2", timeout=900)["hosts"][0]
    second_release = rel["release"]
    assert second_release != first_release
    events = Path(f"{STACK_ROOT}/textfile/ferry_deploy_{APP}.prom").read_text()
    assert f'ferry_release_info{{app="{APP}",release="{second_release}",version="e2e2"' in events

    def both_colours():
        ts = app_targets()
        by_colour = {t["labels"]["colour"]: t for t in ts}
        want = {c: (r, role) for c, r, role in (
            (first_colour, first_release, "idle"),
            ({"blue": "green", "green": "blue"}[first_colour], second_release, "live"))}
        got = {c: (t["labels"].get("release"), t["labels"].get("role")) for c, t in by_colour.items()}
        live_up = any(t["labels"].get("role") == "live" and t["health"] == "up" for t in ts)
        ok = len(ts) == 2 and got == want and live_up
        return ok, ts if ok else "\n".join(f"{t['labels']} {t['health']} {t['lastError']}" for t in ts) or "no targets"

    targets = wait_for("both colours of the app in Prometheus' targets", both_colours, timeout=90)
    # the previous colour still runs (keep_previous): it is scraped too, as idle
    for t in targets:
        assert t["labels"]["app"] == APP and t["labels"]["job"] == APP
    def all_up():
        ts = app_targets()
        return len(ts) == 2 and all(t["health"] == "up" for t in ts), [(t["labels"], t["health"]) for t in ts]

    wait_for("the idle colour to be scraped", all_up, timeout=60)

    # the release series of both releases (what the dashboards' Deploys annotation queries)
    def marked():
        end = time.time()
        data = prom("/api/v1/query_range", query=f'ferry_deploy_last_event_timestamp_seconds{{app="{APP}", event="success"}}',
                    start=end - 1800, end=end, step=5)["result"]
        releases = {r["metric"].get("release") for r in data}
        return {first_release, second_release} <= releases, releases

    wait_for("a deploy annotation series for both releases", marked, timeout=60)
    def info():
        end = time.time()
        data = prom("/api/v1/query_range", query=f'ferry_release_info{{app="{APP}"}}', start=end - 1800, end=end, step=5)["result"]
        got = {(r["metric"].get("release"), r["metric"].get("version")) for r in data}
        return {(second_release, "e2e2")} <= got and first_release in {r for r, _ in got}, got

    wait_for("ferry_release_info for both releases", info, timeout=60)


def test_status_reports_urls_components_and_targets(e2e_app):
    r = ferry_json(e2e_app.config, "monitoring", "status")
    assert r["prometheus_url"] == "http://127.0.0.1:9090"
    assert "grafana_url" in r and r["grafana_url"] is None  # no Grafana image named: not started
    h = r["hosts"][0]
    assert h["healthy"] is True
    assert {c["component"]: c["state"] for c in h["components"]}["grafana"] == "not configured"
    assert h["targets_up"] >= 7


def test_tls_renewal_metrics_reach_prometheus_through_the_stacks_node_exporter(e2e_app):
    """tls.metrics_dir defaults to the stack's textfile directory with [monitoring] on: what the
    renewer writes there is scraped (and CertificateRenewalFailing can fire on it)."""
    cfg = load(e2e_app.config)
    assert cfg.tls.metrics_dir == f"{STACK_ROOT}/textfile"
    from ferry.certs.renewer import metric_path

    path = Path(metric_path(cfg.tls.metrics_dir, APP))
    path.write_text('ferry_certificate_renewal_success{app="%s",domain="%s.example.com"} 0\n' % (APP, APP))
    try:
        def seen():
            r = prom("/api/v1/query", query=f'ferry_certificate_renewal_success{{app="{APP}", job="node"}}')["result"]
            return bool(r) and r[0]["value"][1] == "0", r

        wait_for("the renewal metric to be scraped from the textfile directory", seen, timeout=60)
    finally:
        path.unlink(missing_ok=True)


def test_status_is_unhealthy_when_a_container_is_down_even_if_its_url_answers(e2e_app, docker_cli, tmp_path):
    """What a Debian exporter on the same port did: the URL answers, ferry's container does not run."""
    subprocess.run([*docker_cli, "stop", "ferry-nginx-exporter"], check=True, capture_output=True, timeout=60)
    (tmp_path / "metrics").write_text("# an impostor on the exporter's port\n")
    impostor = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "9113",
                                 "--directory", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for("the impostor to answer", lambda: (_answers("http://127.0.0.1:9113/metrics"), None), timeout=20, every=0.2)
        r = ferry(e2e_app.config, "monitoring", "status", "--json", check=False)
        assert r.returncode != 0
        h = json.loads(r.stdout)["hosts"][0]
        nginx = next(c for c in h["components"] if c["component"] == "nginx_exporter")
        assert nginx["state"] == "exited" and nginx["healthy"] is False, nginx
        assert h["healthy"] is False
    finally:
        impostor.terminate()
        impostor.wait(timeout=10)
    up = ferry_json(e2e_app.config, "monitoring", "up")
    acts = {c["component"]: c["action"] for c in up["hosts"][0]["components"]}
    assert acts["nginx_exporter"] == "start", acts
    assert ferry_json(e2e_app.config, "monitoring", "status")["hosts"][0]["healthy"] is True


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_second_up_changes_nothing(e2e_app):
    r = ferry_json(e2e_app.config, "monitoring", "up")
    h = r["hosts"][0]
    assert h["changed"] is False, h
    assert {c["action"] for c in h["components"]} == {"none"}


def rules_digest() -> str:
    h = hashlib.sha256()
    for p in sorted(Path(f"{STACK_ROOT}/etc/prometheus/rules").glob("*.yml")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_a_broken_rule_template_is_refused_by_the_hosts_promtool_and_nothing_changes(
        e2e_app, monitoring_images, tmp_path):
    broken = tmp_path / "monitoring"
    shutil.copytree(ROOT / "ferry" / "assets" / "monitoring", broken)
    slo = broken / "rules" / "app-slo.yml.j2"
    slo.write_text(slo.read_text().replace("histogram_quantile(0.99,", "histogram_quantile(0.99,, ", 1))
    cfg = write_config(tmp_path / "ferry.toml", monitoring_images, monitoring_dir=broken)
    before = rules_digest()
    r = ferry(cfg, "monitoring", "up", check=False)
    assert r.returncode == 2, r.stderr
    assert "prometheus rejects the rendered config" in r.stderr and "nothing was changed on the host" in r.stderr
    assert rules_digest() == before
    assert httpx.get("http://127.0.0.1:9090/-/ready", timeout=5, trust_env=False).status_code == 200


def test_a_broken_blackbox_template_is_refused_by_the_hosts_exporter_and_nothing_changes(
        e2e_app, monitoring_images, tmp_path):
    broken = tmp_path / "monitoring"
    shutil.copytree(ROOT / "ferry" / "assets" / "monitoring", broken)
    bb = broken / "blackbox.yml.j2"
    bb.write_text(bb.read_text().replace("valid_status_codes:", "valid_status_codez:", 1))
    cfg = write_config(tmp_path / "ferry.toml", monitoring_images, monitoring_dir=broken)
    before = Path(f"{STACK_ROOT}/etc/blackbox/blackbox.yml").read_text()
    r = ferry(cfg, "monitoring", "up", check=False)
    assert r.returncode == 2, r.stderr
    assert "blackbox_exporter rejects the rendered config" in r.stderr and "valid_status_codez" in r.stderr
    assert Path(f"{STACK_ROOT}/etc/blackbox/blackbox.yml").read_text() == before


def test_open_on_the_local_target_points_at_the_urls_without_a_tunnel(e2e_app):
    r = ferry_json(e2e_app.config, "monitoring", "open")
    assert r["command"] is None and r["prometheus_url"] == "http://127.0.0.1:9090"
    shifted = ferry_json(e2e_app.config, "monitoring", "open", "--offset", "10000")
    assert shifted["command"][:2] == ["ssh", "-N"] and "127.0.0.1:19090:127.0.0.1:9090" in shifted["command"]


# --- an alert delivered end to end: rule -> Prometheus -> Alertmanager -> a webhook ---------------

PROBE_RULE = """# test only: fires at once, so a bounded test sees it delivered
groups:
  - name: e2e-webhook
    rules:
      - alert: FerryE2EWebhookProbe
        expr: vector(1)
        labels:
          severity: page
          app: %(app)s
          e2e_nonce: "%(nonce)s"
        annotations:
          summary: "the webhook receiver works (%(nonce)s)"
"""


class _Hook(http.server.BaseHTTPRequestHandler):
    """Records (path, Authorization, body) of every POST in server.received."""

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append((self.path, self.headers.get("Authorization"), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_an_alert_reaches_a_webhook_receiver_with_its_labels(e2e_app, monitoring_images, tmp_path):
    """receiver = "webhook" with a bearer token from the environment: a test-only rule that
    fires at once (no `for`) must arrive at a webhook on 127.0.0.1, as Alertmanager's JSON,
    with its labels and the token; afterwards the stack is put back as the module left it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.received = []
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    nonce = uuid.uuid4().hex[:12]
    token = uuid.uuid4().hex
    mon = tmp_path / "monitoring"
    shutil.copytree(ROOT / "ferry" / "assets" / "monitoring", mon)
    # a host-wide rule file (no dash): the next `up` without it deletes it from the host
    (mon / "rules" / "e2ewebhook.yml.j2").write_text(PROBE_RULE % {"app": APP, "nonce": nonce})
    cfg = write_config(tmp_path / "ferry.toml", monitoring_images, monitoring_dir=mon, extra=f"""
[monitoring.alerts]
receiver = "webhook"
webhook_url = "http://127.0.0.1:{port}/alerts"
webhook_token_env = "FERRY_E2E_WEBHOOK_TOKEN"
group_wait = "1s"
group_interval = "5s"
""")
    try:
        up = ferry_json(cfg, "monitoring", "up", env={"FERRY_E2E_WEBHOOK_TOKEN": token})
        assert up["ok"], up
        am = Path(f"{STACK_ROOT}/etc/alertmanager/alertmanager.yml").read_text()
        assert f"http://127.0.0.1:{port}/alerts" in am and token not in am  # the token is a file, never in the config

        def delivered():
            for path, auth, body in list(server.received):
                doc = json.loads(body)
                for a in doc.get("alerts", []):
                    if a["labels"].get("e2e_nonce") == nonce:
                        return True, (path, auth, doc, a)
            return False, [json.loads(b).get("commonLabels") for _, _, b in list(server.received)] or "nothing received"

        path, auth, doc, alert = wait_for("the probe alert at the webhook", delivered, timeout=120, every=1)
        assert path == "/alerts" and auth == f"Bearer {token}"
        assert doc["receiver"] == "webhook" and doc["version"] == "4"
        assert alert["status"] == "firing"
        labels = alert["labels"]
        assert labels["alertname"] == "FerryE2EWebhookProbe" and labels["severity"] == "page"
        assert labels["app"] == APP and labels["host"]  # the host comes from Prometheus' external labels
        assert alert["annotations"]["summary"] == f"the webhook receiver works ({nonce})"
    finally:
        # put the stack back: the module's own config (no probe rule, no webhook), the token gone
        restored = ferry_json(e2e_app.config, "monitoring", "up")
        Path(f"{STACK_ROOT}/secrets/alertmanager/webhook_token").unlink(missing_ok=True)
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert restored["ok"]
    assert not Path(f"{STACK_ROOT}/etc/prometheus/rules/e2ewebhook.yml").exists()
    assert f"127.0.0.1:{port}" not in Path(f"{STACK_ROOT}/etc/alertmanager/alertmanager.yml").read_text()
    assert ferry_json(e2e_app.config, "monitoring", "up")["hosts"][0]["changed"] is False

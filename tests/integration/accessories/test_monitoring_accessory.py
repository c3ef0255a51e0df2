"""With [monitoring] on, a PostgreSQL accessory gets postgres_exporter and a scrape target; a
real Prometheus (Debian's) scraping the target file sees pg_up 1, then 0 when the database
stops; `down` removes the exporter and its target."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import httpx

PROM_PORT_OFFSET = 19  # within the test's port slot


def wait_for(what: str, fn, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


def query(port: int, expr: str) -> list:
    """The instant vector, or [] while Prometheus is still starting."""
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}, timeout=5)
    except httpx.HTTPError:
        return []
    return r.json()["data"]["result"] if r.status_code == 200 else []


def test_exporter_and_scrape_target_follow_the_database(acc_app, docker_cli, tmp_path):
    port = acc_app.base_port + 10
    mon = tmp_path / "monitoring"
    acc_app.write(f'[accessories.db]\nkind = "postgres"\nport = {port}\n',
                  extra=f'[monitoring]\nenabled = true\nroot = "{mon}"\n')
    r = acc_app.json("accessory", "up", "db")
    assert any("exporter" in s for s in r["steps"])
    target_file = mon / "etc" / "prometheus" / "targets" / f"{acc_app.name}-db.json"
    assert json.loads(target_file.read_text()) == [
        {"targets": [f"127.0.0.1:{port + 1}"], "labels": {"job": "postgres", "app": acc_app.name, "accessory": "db"}}]
    # a second up changes nothing
    assert not acc_app.json("accessory", "up", "db")["changed"]

    # Debian's Prometheus, scraping exactly that file every second
    prom_port = acc_app.base_port + PROM_PORT_OFFSET
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(f"""global: {{scrape_interval: 3s, scrape_timeout: 2500ms, evaluation_interval: 3s}}
scrape_configs:
  - job_name: apps
    file_sd_configs: [{{files: ["{target_file.parent}/*.json"], refresh_interval: 1s}}]
""")
    log = open(tmp_path / "prometheus.log", "w")
    prom = subprocess.Popen([shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={cfg}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=log, stderr=log, start_new_session=True)
    try:
        up = wait_for("pg_up 1", lambda: [x for x in query(prom_port, f'pg_up{{app="{acc_app.name}"}}')
                                          if x["value"][1] == "1"])
        assert up[0]["metric"]["job"] == "postgres" and up[0]["metric"]["accessory"] == "db"

        subprocess.run([*docker_cli, "stop", f"{acc_app.name}-db"], check=True, capture_output=True)
        wait_for("pg_up 0", lambda: [x for x in query(prom_port, f'pg_up{{app="{acc_app.name}"}}')
                                     if x["value"][1] == "0"])
    finally:
        os.killpg(prom.pid, signal.SIGTERM)
        prom.wait(timeout=30)
        log.close()

    acc_app.run("accessory", "down", "db")
    assert not target_file.exists()
    gone = subprocess.run([*docker_cli, "inspect", f"{acc_app.name}-db-exporter"], capture_output=True)
    assert gone.returncode != 0

"""Fixtures for the monitoring stack on the local target: its images built from Debian's
binaries and pushed once per session, and an app of its own (name, nginx port, colour ports)
whose release the stack watches."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ferry.local.appconfig import app_toml

ROOT = Path(__file__).resolve().parents[3]
FERRY = [sys.executable, "-m", "ferry"]
APP = "mon-e2e"
HTTP_PORT, BLUE, GREEN = 17480, 17483, 17484
PROMETHEUS = "http://127.0.0.1:9090"
STACK_ROOT = "/opt/ferry/_monitoring"


def ferry(config: Path, *args: str, check: bool = True, timeout: float = 900,
          env: dict | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([*FERRY, "-c", str(config), *args], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})}, cwd=ROOT)
    if check and r.returncode != 0:
        raise AssertionError(f"ferry {' '.join(args)} exited {r.returncode}:\n{r.stderr[-4000:]}")
    return r


def ferry_json(config: Path, *args: str, **kw) -> dict:
    return json.loads(ferry(config, *args, "--json", **kw).stdout)


def wait_for(what: str, fn, timeout: float = 120.0, every: float = 2.0):
    """Poll ``fn`` -> (done, value) until done; at the deadline fail showing the last value."""
    deadline = time.monotonic() + timeout
    while True:
        done, value = fn()
        if done:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last:\n{value}")
        time.sleep(every)


def prom(path: str, **params) -> dict:
    r = httpx.get(f"{PROMETHEUS}{path}", params=params, timeout=10, trust_env=False)  # loopback: never a proxy
    r.raise_for_status()
    return r.json()["data"]


@pytest.fixture(scope="session")
def monitoring_images(local_target) -> dict[str, str]:
    """The stack's images, built with ferry's own image code and pushed: component -> repo@digest."""
    r = subprocess.run([*FERRY, "monitoring", "images", "--push", "--registry", "127.0.0.1:5000",
                        "--prefix", "ferry", "--json"], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return {p["component"].replace("-", "_"): p["reference"] for p in json.loads(r.stdout)["pushed"]}


def write_config(path: Path, images: dict[str, str], monitoring_dir: Path | None = None, extra: str = "") -> Path:
    """monitoring_dir: the repository's own templates (monitoring.dir); None: ferry's packaged ones."""
    pinned = ", ".join(f'{k} = "{v}"' for k, v in sorted(images.items()))
    path.write_text(app_toml(app=APP, source=ROOT / "examples/hello", http_port=HTTP_PORT, blue=BLUE, green=GREEN,
                             drain_timeout="5s", extra=f"""
[monitoring]
enabled = true
{f'dir = "{monitoring_dir}"' if monitoring_dir else ""}
metrics_prefix = "hello"          # the sample's metric names: hello_requests_total, ...
scrape_interval = "5s"            # short, so a bounded test sees several scrapes
evaluation_interval = "5s"
images = {{ {pinned} }}
{extra}
"""))
    return path


@dataclass
class E2EApp:
    config: Path
    url: str


@pytest.fixture(scope="module")
def e2e_app(local_target, monitoring_images, tmp_path_factory, docker_cli):
    tmp = tmp_path_factory.mktemp("mon-e2e")
    cfg = write_config(tmp / "ferry.toml", monitoring_images)
    yield E2EApp(cfg, f"http://127.0.0.1:{HTTP_PORT}")
    # leave the shared stack watching nothing of ours: the app, its nginx site, its targets,
    # probe and rules go; the stack itself stays up (like the local target) for the next run
    subprocess.run([*docker_cli, "rm", "-f", f"{APP}-blue", f"{APP}-green"], capture_output=True)
    shutil.rmtree(f"/opt/ferry/{APP}", ignore_errors=True)
    subprocess.run(["nginx", "-c", local_target["nginx_conf"], "-s", "reload"], capture_output=True)
    for p in (f"{STACK_ROOT}/etc/prometheus/targets/{APP}.json", f"{STACK_ROOT}/etc/prometheus/probes/{APP}.json",
              f"{STACK_ROOT}/etc/prometheus/rules/{APP}-slo.yml", f"{STACK_ROOT}/etc/prometheus/rules/{APP}-deploy.yml",
              f"{STACK_ROOT}/textfile/ferry_deploy_{APP}.prom"):
        Path(p).unlink(missing_ok=True)
    subprocess.run([*docker_cli, "kill", "--signal", "HUP", "ferry-prometheus"], capture_output=True)

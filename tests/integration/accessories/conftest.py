"""Accessories on the local target: the images built from Debian's packages and pushed to
the local registry once per session, and one app per test (name "acc-...", ports in
37000-37999, its own directory under /opt/ferry) with everything removed afterwards."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ferry.local.appconfig import EXAMPLE, app_toml

FERRY = [sys.executable, "-m", "ferry"]
ROOT_DIR = "/opt/ferry"
_slots = itertools.count(0)


def ferry(config: Path, *args: str, check: bool = True, timeout: float = 600, env: dict | None = None,
          stdin: str | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([*FERRY, "-c", str(config), *args], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})}, input=stdin)
    if check and r.returncode != 0:
        raise AssertionError(f"ferry {' '.join(args)} exited {r.returncode}:\n{r.stderr[-4000:]}")
    return r


def ferry_json(config: Path, *args: str, **kw) -> dict:
    return json.loads(ferry(config, *args, "--json", **kw).stdout)


@pytest.fixture(scope="session")
def accessory_images(local_target) -> dict[str, dict]:
    """PostgreSQL 15, Redis and postgres_exporter built by `ferry accessory images --push` (cached after the first
    run: the same packages give the same digests), by name."""
    r = subprocess.run([*FERRY, "accessory", "images", "--push", "--postgres", "15", "--json"],
                       capture_output=True, text=True, timeout=1200, cwd="/")
    assert r.returncode == 0, r.stderr[-3000:]
    return {p["name"]: p for p in json.loads(r.stdout)["pushed"]}


@dataclass
class AccApp:
    name: str
    config: Path
    base_port: int
    tmp: Path

    @property
    def dir(self) -> str:
        return f"{ROOT_DIR}/{self.name}"

    def write(self, accessories: str, extra: str = "", deploy_extra: str = "") -> Path:
        p = self.base_port
        self.config.write_text(app_toml(app=self.name, source=EXAMPLE, http_port=p, blue=p + 3, green=p + 4,
                                        repository=f"127.0.0.1:5000/ferry-test/{self.name}",
                                        deploy_extra=deploy_extra, extra=extra + "\n" + accessories))
        return self.config

    def run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return ferry(self.config, *args, **kw)

    def json(self, *args: str, **kw) -> dict:
        return ferry_json(self.config, *args, **kw)

    def password(self, name: str) -> str:
        return Path(f"{self.dir}/accessories/{name}.password").read_text().strip()


@pytest.fixture
def acc_app(request, tmp_path, local_target, docker_cli, accessory_images) -> AccApp:
    n = next(_slots)
    base = 37000 + 20 * n + (os.getpid() % 10) * 200
    name = "acc-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))[:24].strip("-")
    a = AccApp(name, tmp_path / "ferry.toml", base, tmp_path)
    _clean(docker_cli, name, local_target)
    yield a
    _clean(docker_cli, name, local_target)


def _clean(docker_cli: list[str], name: str, local_target: dict) -> None:
    out = subprocess.run([*docker_cli, "ps", "-aq", "--filter", f"name=^{name}-"], capture_output=True, text=True)
    ids = out.stdout.split()
    if ids:
        subprocess.run([*docker_cli, "rm", "-f", *ids], capture_output=True)
    shutil.rmtree(f"{ROOT_DIR}/{name}", ignore_errors=True)
    subprocess.run(["nginx", "-c", local_target["nginx_conf"], "-s", "reload"], capture_output=True)


def started_at(docker_cli: list[str], container: str) -> str:
    r = subprocess.run([*docker_cli, "inspect", "--format", "{{.State.StartedAt}}", container],
                       capture_output=True, text=True, check=True)
    return r.stdout.strip()

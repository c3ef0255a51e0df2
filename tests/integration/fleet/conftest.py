"""Fixtures for the fleet layer's tests on the local target: the sample service built once, and
an isolated app per test (name prefixed "fleet-", colour ports in 35000-35999, its own
directory), removed again after the test."""

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
REPO = "127.0.0.1:5000/ferry-test/fleet-hello"
SECRET = "s3cret-for-fleet"
_ports = itertools.count(0)


def ferry(config: Path, *args: str, check: bool = True, timeout: float = 300, input: str | None = None,
          ) -> subprocess.CompletedProcess:
    r = subprocess.run([*FERRY, "-c", str(config), *args], capture_output=True, text=True, timeout=timeout,
                       input=input, env={**os.environ, "FLEET_SECRET": SECRET})
    if check and r.returncode != 0:
        raise AssertionError(f"ferry {' '.join(args)} exited {r.returncode}:\n{r.stderr[-4000:]}")
    return r


@pytest.fixture(scope="session")
def fleet_image(local_target, tmp_path_factory) -> str:
    """The sample service, built and pushed once: repo@digest."""
    tmp = tmp_path_factory.mktemp("fleet-build")
    cfg = tmp / "ferry.toml"
    cfg.write_text(app_toml(app="fleet-build", source=EXAMPLE, http_port=35000, blue=35003, green=35004,
                            repository=REPO))
    return json.loads(ferry(cfg, "build", "--push", "--tag", "fleet", "--json", timeout=900).stdout)["image"]


@dataclass
class App:
    name: str
    config: Path
    http_port: int
    image: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dir(self) -> Path:
        return Path("/opt/ferry") / self.name

    def write(self, hosts: list[str] | None = None, deploy_extra: str = "") -> None:
        text = app_toml(app=self.name, source=EXAMPLE, http_port=self.http_port, blue=self.http_port + 3,
                        green=self.http_port + 4, repository=REPO,
                        deploy_extra=(
                            # gunicorn's access log on stdout: what `ferry logs` must show
                            'env = { FLEET_GREETING = "ahoy", GUNICORN_CMD_ARGS = "--access-logfile -" }\n'
                            'secrets = ["FLEET_SECRET"]\n'
                            'volumes = { data = "/data" }\n' + deploy_extra))
        if hosts is not None:
            text = text.replace('hosts = ["root@127.0.0.1:2222"]', "hosts = " + json.dumps(hosts))
        self.config.write_text(text)

    def deploy(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return ferry(self.config, "deploy", self.image, "--version", "v1", *args, check=check)

    def status(self) -> dict:
        return json.loads(ferry(self.config, "status", "--json", check=False).stdout)


@pytest.fixture
def app(request, fleet_image, tmp_path, local_target, docker_cli) -> App:
    n = next(_ports)
    base = 35010 + 10 * n + (os.getpid() % 40) * 20 % 900
    name = "fleet-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))[:24].strip("-")
    a = App(name, tmp_path / "ferry.toml", base, fleet_image)
    a.write()
    yield a
    # leave nothing behind: containers (colours and one-off ones), the app's directory, its site
    ps = subprocess.run([*docker_cli, "ps", "-aq", "--filter", f"name=^{name}-"], capture_output=True, text=True)
    if ps.stdout.split():
        subprocess.run([*docker_cli, "rm", "-f", *ps.stdout.split()], capture_output=True)
    shutil.rmtree(a.dir, ignore_errors=True)
    subprocess.run(["nginx", "-c", local_target["nginx_conf"], "-s", "reload"], capture_output=True)

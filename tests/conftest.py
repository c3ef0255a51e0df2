"""Shared fixtures. The local target is started once per session by ferry's own code
(`ferry local up`, idempotent) and shared; each test isolates itself by app name, ports and
directories. It is never stopped here: `make test` leaves it up for the next run, and
`ferry local down` stops it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FERRY = [sys.executable, "-m", "ferry"]


@pytest.fixture(scope="session")
def local_target() -> dict:
    """Addresses of the running local target (see ARCHITECTURE.md): docker_host, registry,
    registry_basic, registry_token, registry_user, registry_password, ssh, ssh_key, nginx_conf,
    base_image."""
    r = subprocess.run([*FERRY, "local", "up", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        pytest.fail(f"ferry local up failed:\n{r.stderr[-3000:]}")
    info = json.loads(r.stdout)
    info["registry_password"] = Path(info["registry_password_file"]).read_text().strip()
    return info


@pytest.fixture(scope="session")
def docker_cli(local_target) -> list[str]:
    """argv prefix for the local target's Docker engine (Debian's 20.10 client)."""
    docker = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"
    return [docker, "-H", local_target["docker_host"]]


@pytest.fixture(scope="module")
def moto_endpoint():
    """A moto server (a real HTTP endpoint on 127.0.0.1, ephemeral port) for ferry's boto3
    code; fake credentials only, so nothing can reach AWS."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                     "AWS_DEFAULT_REGION": "eu-west-1", "FERRY_AWS_ENDPOINT_URL": endpoint}.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        yield endpoint
    server.stop()

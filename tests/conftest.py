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

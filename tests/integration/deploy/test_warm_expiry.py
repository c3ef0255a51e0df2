"""The warm colour's expiry: a timer on the host (no ferry process stays alive) stops the
previous colour after keep_previous, unless by then it is live again."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request

import pytest

pytestmark = pytest.mark.integration


def keep_previous(app, value: str) -> None:
    text = app.config.read_text()
    text, n = re.subn(r'(?m)^keep_previous = .*$', f'keep_previous = "{value}"', text)
    assert n == 1
    app.config.write_text(text)


def running(docker_cli, name: str) -> bool | None:
    r = subprocess.run([*docker_cli, "inspect", "--format", "{{.State.Running}}", name], capture_output=True, text=True)
    return None if r.returncode else r.stdout.strip() == "true"


def live_version(app) -> str:
    with urllib.request.urlopen(app.url + "/version", timeout=10) as r:
        return json.loads(r.read())["version"]


def test_the_previous_colour_is_stopped_by_the_host_once_keep_previous_is_over(app, docker_cli):
    keep_previous(app, "2s")
    app.deploy("v1")
    old = f"{app.name}-{app.live()['colour']}"
    app.deploy("v2")
    deadline = time.monotonic() + 60  # bounded: the timer fires 2 s after the release
    while running(docker_cli, old) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert running(docker_cli, old) is False, f"{old} still runs long after keep_previous"
    assert live_version(app) == "v2"


def test_a_colour_that_is_live_again_is_not_stopped_by_its_old_timer(app, docker_cli):
    keep_previous(app, "8s")
    app.deploy("v1")
    first = f"{app.name}-{app.live()['colour']}"
    app.deploy("v2")
    out = json.loads(subprocess.run([*app_ferry(app), "rollback", "--json"], capture_output=True, text=True,
                                    check=True).stdout)
    assert out["hosts"][0]["version"] == "v1" and out["hosts"][0]["warm"] is True
    time.sleep(11)  # past the 8 s timer set when v1 went warm
    assert running(docker_cli, first) is True
    assert live_version(app) == "v1"


def app_ferry(app) -> list[str]:
    from .conftest import FERRY

    return [*FERRY, "-c", str(app.config)]

"""`ferry init` on Flask's tutorial app, then the image it configured: built and pushed to the
local registry, and run on the local Docker engine the way a deploy starts a colour (the
entrypoint's `{port}` replaced by ferry's own argv builder), answering on its pages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from ferry import config
from ferry.deploy import docker as D

from .flaskr import FILES

pytestmark = pytest.mark.integration

FERRY = [sys.executable, "-m", "ferry"]
REPOSITORY = "127.0.0.1:5000/ferry-test/apps-flaskr"
PORT = 31090
CONTAINER = "apps-flaskr-init"


def run(argv, cwd, timeout=600):
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=os.environ)


@pytest.fixture
def flaskr(tmp_path):
    app = tmp_path / "flask-tutorial"
    for rel, text in FILES.items():
        p = app / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return app


@pytest.fixture
def container(docker_cli):
    yield CONTAINER
    subprocess.run([*docker_cli, "rm", "-f", CONTAINER], capture_output=True)


def test_init_configures_the_flask_tutorial_and_its_image_builds_and_serves(flaskr, local_target, docker_cli, container):
    r = run([*FERRY, "init", "--json"], flaskr)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["plan"]["framework"] == "flask"
    assert out["plan"]["entrypoint"] == ["gunicorn", "--bind", "127.0.0.1:{port}", "flaskr:create_app()"]
    assert out["plan"]["requirements"] == "requirements.txt" and out["plan"]["notes"] == []
    toml = flaskr / "ferry.toml"
    text = toml.read_text()
    assert text.startswith("# ferry.toml, written by `ferry init` for a flask app.")

    # a second run changes nothing and says why
    again = run([*FERRY, "init"], flaskr)
    assert again.returncode == 2 and "never overwrites" in again.stderr
    assert toml.read_text() == text

    # this test's own repository in the shared registry; everything else as init wrote it
    toml.write_text(text.replace('repository = "127.0.0.1:5000/flaskr"', f'repository = "{REPOSITORY}"'))
    built = run([*FERRY, "build", "--push", "--json"], flaskr, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    image = json.loads(built.stdout)["image"]
    assert image.startswith(REPOSITORY + "@sha256:")

    cfg = config.load(toml)
    before, after = D.entrypoint_override(cfg, PORT)
    assert before == ["--entrypoint", "gunicorn"]
    assert after == ["--bind", f"127.0.0.1:{PORT}", "flaskr:create_app()"]
    started = subprocess.run([*docker_cli, "run", "--detach", "--name", container, "--network", "host",
                              "--env", f"PORT={PORT}", *before, image, *after], capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 30
    page = None
    while time.monotonic() < deadline:
        try:
            page = httpx.get(f"http://127.0.0.1:{PORT}/auth/login", timeout=2, trust_env=False)
            break
        except httpx.TransportError:
            time.sleep(0.2)
    logs = subprocess.run([*docker_cli, "logs", container], capture_output=True, text=True)
    assert page is not None, logs.stdout + logs.stderr
    assert page.status_code == 200 and "<h1>Log In</h1>" in page.text, page.text[:500]
    hello = httpx.get(f"http://127.0.0.1:{PORT}/hello", timeout=5, trust_env=False)
    assert hello.text == "Hello, World!"

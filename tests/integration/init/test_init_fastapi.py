"""`ferry init` on a FastAPI project locked with uv (fastapi[standard], so `fastapi run`), then
`ferry release` with the config it wrote: built, pushed, started blue/green on the local target
with `{port}` filled in, answering through nginx."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import httpx
import pytest

pytestmark = pytest.mark.integration

FERRY = [sys.executable, "-m", "ferry"]
APP = "apps-items"
HTTP_PORT, HTTPS_PORT, BLUE, GREEN = 31085, 31086, 31097, 31098

FILES = {
    "pyproject.toml": '''[project]
name = "items"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["fastapi[standard]>=0.115"]
''',
    "app/__init__.py": "",
    "app/main.py": '''from fastapi import FastAPI

app = FastAPI(title="items")


@app.get("/healthz")
def healthz() -> dict:
    return {"ok": True}


@app.get("/items/{item_id}")
def item(item_id: int) -> dict:
    return {"id": item_id}
''',
}


@pytest.fixture
def items(tmp_path):
    app = tmp_path / "items"
    for rel, text in FILES.items():
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        (app / rel).write_text(text)
    r = subprocess.run([sys.executable, "-m", "uv", "lock", "--quiet"], capture_output=True, text=True, cwd=app,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return app


@pytest.fixture
def clean(local_target, docker_cli):
    yield
    subprocess.run([*docker_cli, "rm", "-f", f"{APP}-blue", f"{APP}-green"], capture_output=True)
    shutil.rmtree(f"/opt/ferry/{APP}", ignore_errors=True)
    subprocess.run(["nginx", "-c", local_target["nginx_conf"], "-s", "reload"], capture_output=True)


def test_init_then_release_a_uv_locked_fastapi_app_that_answers_through_nginx(items, clean):
    r = subprocess.run([*FERRY, "init", "--json"], capture_output=True, text=True, cwd=items, timeout=120)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)["plan"]
    assert plan["entrypoint"] == ["fastapi", "run", "app/main.py", "--host", "127.0.0.1", "--port", "{port}"]
    assert plan["requirements"] == "pyproject.toml" and plan["health_path"] == "/healthz"

    # this test's own name and ports on the shared local target; the rest as init wrote it
    toml = items / "ferry.toml"
    text = toml.read_text()
    for old, new in (('name = "items"', f'name = "{APP}"'),
                     ('repository = "127.0.0.1:5000/items"', f'repository = "127.0.0.1:5000/ferry-test/{APP}"'),
                     ("http_port = 8090", f"http_port = {HTTP_PORT}"), ("https_port = 8453", f"https_port = {HTTPS_PORT}"),
                     ("[deploy]\n", f"[deploy]\ncolours = {{ blue = {BLUE}, green = {GREEN} }}\n")):
        assert old in text, old
        text = text.replace(old, new, 1)
    toml.write_text(text)

    released = subprocess.run([*FERRY, "release", "--version", "v1", "--json"], capture_output=True, text=True,
                              cwd=items, timeout=900, env=os.environ)
    assert released.returncode == 0, released.stderr[-3000:]
    got = httpx.get(f"http://127.0.0.1:{HTTP_PORT}/items/7", timeout=10, trust_env=False)
    assert got.status_code == 200 and got.json() == {"id": 7}
    assert got.headers.get("x-ferry-release")

"""`{port}` in image.entrypoint, for real: a server that takes its port only as an argument
(Python's http.server ignores $PORT) is deployed blue, then green, on the local target, and
answers through nginx each time on the colour's own port."""

from __future__ import annotations

import json
import shutil
import subprocess

import httpx
import pytest

from ferry.local.appconfig import app_toml

from .conftest import ferry, ferry_json

pytestmark = pytest.mark.integration

APP = "apps-port"
HTTP_PORT, BLUE, GREEN = 31080, 31083, 31084  # https_port is 31081
ENTRYPOINT = '["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1", "--directory", "/app/www"]'


def write_app(root, text: str):
    src = root / "src"
    (src / "www").mkdir(parents=True, exist_ok=True)
    (src / "www" / "index.html").write_text(text)
    (src / "www" / "healthz").write_text("ok\n")
    cfg = root / "ferry.toml"
    cfg.write_text(app_toml(app=APP, source=src, http_port=HTTP_PORT, blue=BLUE, green=GREEN, requirements=None,
                            health='path = "/healthz", interval = "300ms", timeout = "20s", healthy_after = 2',
                            drain_timeout="2s", keep_previous="0s")
                   .replace('entrypoint = ["python3", "-m", "gunicorn", "-c", "gunicorn.conf.py", "hello:app"]',
                            f"entrypoint = {ENTRYPOINT}"))
    return cfg


@pytest.fixture
def clean(local_target, docker_cli):
    yield
    subprocess.run([*docker_cli, "rm", "-f", f"{APP}-blue", f"{APP}-green"], capture_output=True)
    shutil.rmtree(f"/opt/ferry/{APP}", ignore_errors=True)
    subprocess.run(["nginx", "-c", local_target["nginx_conf"], "-s", "reload"], capture_output=True)


def container_args(docker_cli, name: str) -> list[str]:
    r = subprocess.run([*docker_cli, "inspect", "--format", "{{json .Path}}|{{json .Args}}", name],
                       capture_output=True, text=True, check=True)
    path, args = r.stdout.strip().split("|")
    return [json.loads(path), *json.loads(args)]


def test_an_entrypoint_naming_port_answers_through_nginx_on_each_colour(tmp_path, clean, docker_cli):
    cfg = write_app(tmp_path, "one\n")
    first = ferry_json(cfg, "build", "--push")["image"]
    # the image alone serves on image.port: `docker run IMAGE` works without ferry
    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--config", f"docker://{first}"],
                             capture_output=True, text=True, check=True)
    assert json.loads(inspect.stdout)["config"]["Entrypoint"] == [
        "python3", "-m", "http.server", "8000", "--bind", "127.0.0.1", "--directory", "/app/www"]

    ferry(cfg, "deploy", first, "--version", "one")
    assert container_args(docker_cli, f"{APP}-blue") == [
        "python3", "-m", "http.server", str(BLUE), "--bind", "127.0.0.1", "--directory", "/app/www"]
    r = httpx.get(f"http://127.0.0.1:{HTTP_PORT}/", timeout=10, trust_env=False)
    assert r.status_code == 200 and r.text == "one\n"

    cfg = write_app(tmp_path, "two\n")
    second = ferry_json(cfg, "build", "--push")["image"]
    assert second != first
    ferry(cfg, "deploy", second, "--version", "two")
    assert container_args(docker_cli, f"{APP}-green")[3] == str(GREEN)
    r = httpx.get(f"http://127.0.0.1:{HTTP_PORT}/", timeout=10, trust_env=False)
    assert r.status_code == 200 and r.text == "two\n"
    assert ferry_json(cfg, "status")["hosts"][0]["live"]["colour"] == "green"

"""`{port}` in image.entrypoint (a worker process gets none): the colour's port when the container
starts, image.port in the image itself, and `$PORT` in an exec-form command refused."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ferry.config import parse
from ferry.deploy import docker as D
from ferry.errors import ConfigError
from ferry.images.builder import check_entrypoint, image_config
from ferry.images.oci import Platform

ROOT = Path(__file__).resolve().parents[3]
IMAGE = "127.0.0.1:5000/hello@sha256:abc"


def cfg(entrypoint=None, processes=None):
    doc = tomllib.loads((ROOT / "ferry.toml").read_text())
    if entrypoint is not None:
        doc["image"]["entrypoint"] = entrypoint
    if processes is not None:
        doc["processes"] = processes
    return parse(doc, ROOT / "ferry.toml")


def test_entrypoint_with_port_starts_with_the_colours_port_in_its_place():
    c = cfg(["python3", "-m", "gunicorn", "--bind", "0.0.0.0:{port}", "--workers", "2", "hello:app"])
    green = D.run_argv(c, "green", IMAGE, "r1", "1.0", "sha256:abc")
    i = green.index(IMAGE)
    assert green[i - 2:] == ["--entrypoint", "python3", IMAGE,
                             "-m", "gunicorn", "--bind", "0.0.0.0:8082", "--workers", "2", "hello:app"]
    blue = D.run_argv(c, "blue", IMAGE, "r1", "1.0", "sha256:abc")
    assert blue[blue.index(IMAGE) - 2:] == ["--entrypoint", "python3", IMAGE,
                                            "-m", "gunicorn", "--bind", "0.0.0.0:8081", "--workers", "2", "hello:app"]
    # $PORT stays in the environment as before
    assert "PORT=8082" in green and "PORT=8081" in blue


def test_every_occurrence_is_replaced_and_a_port_only_argument_too():
    c = cfg(["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "{port}", "--root-path=/p{port}"])
    argv = D.run_argv(c, "blue", IMAGE, "r1", "1.0", "sha256:abc")
    assert argv[argv.index(IMAGE) - 2:] == ["--entrypoint", "uvicorn", IMAGE,
                                            "app.main:app", "--host", "0.0.0.0", "--port", "8081", "--root-path=/p8081"]
    assert D.with_port(("a{port}b{port}",), 31001) == ["a31001b31001"]


def test_entrypoint_without_port_runs_the_images_own():
    argv = D.run_argv(cfg(), "green", IMAGE, "r1", "1.0", "sha256:abc")
    assert argv[-1] == IMAGE and "--entrypoint" not in argv
    assert D.entrypoint_override(cfg(), 8082) == ([], [])


def test_the_image_itself_has_image_port_in_place_of_the_placeholder():
    c = cfg(["gunicorn", "--bind", "0.0.0.0:{port}", "hello:app"])
    from ferry.images.builder import BuildSpec

    spec = BuildSpec.from_config(c)
    out = image_config({"config": {}}, spec, Platform(), [])
    assert out["config"]["Entrypoint"] == ["gunicorn", "--bind", f"0.0.0.0:{spec.port}", "hello:app"]
    assert f"{spec.port}/tcp" in out["config"]["ExposedPorts"]


@pytest.mark.parametrize("entrypoint", [
    ("gunicorn", "--bind", "0.0.0.0:{port}", "hello:app"),
    ("gunicorn", "hello:app", "0.0.0.0:{port}"),
    ("python3", "-m", "gunicorn", "-b", "0.0.0.0:{port}", "hello:app"),
    ("uvicorn", "hello:app", "--host", "0.0.0.0", "--port", "{port}"),
    ("hypercorn", "--bind", "0.0.0.0:{port}", "hello:app"),
    ("fastapi", "run", "hello/__init__.py", "--port", "{port}"),
])
def test_the_builders_entrypoint_check_accepts_the_placeholder(entrypoint):
    check_entrypoint(entrypoint, {"hello/__init__.py"}, "/app",
                     ("gunicorn", "uvicorn", "hypercorn", "fastapi"), ("gunicorn", "uvicorn", "hypercorn", "fastapi"))


@pytest.mark.parametrize("arg, fix", [
    ("0.0.0.0:$PORT", "'0.0.0.0:{port}'"),
    ("0.0.0.0:${PORT}", "'0.0.0.0:{port}'"),
])
def test_dollar_port_in_an_exec_form_entrypoint_is_refused_naming_the_placeholder(arg, fix):
    with pytest.raises(ConfigError, match=r"image.entrypoint: .* uses \$PORT, but the command runs without a shell") as e:
        cfg(["gunicorn", "--bind", arg, "hello:app"])
    assert fix in str(e.value)


def test_a_misspelt_placeholder_is_refused():
    with pytest.raises(ConfigError, match=r"image.entrypoint: .* has '\{PORT\}', which is not the port placeholder"):
        cfg(["uvicorn", "hello:app", "--port", "{PORT}"])


def test_a_shell_expands_dollar_port_itself():
    c = cfg(["sh", "-c", "exec gunicorn --bind 0.0.0.0:$PORT hello:app"])
    assert c.image.entrypoint[2].endswith("$PORT hello:app")


def test_a_process_command_is_checked_the_same_way():
    with pytest.raises(ConfigError, match=r"processes.worker.command: .* uses \$PORT"):
        cfg(processes={"worker": {"command": ["python3", "-m", "worker", "--metrics-port", "$PORT"]}})


def test_a_worker_gets_no_port():
    """Workers share the host network with web: the colour's port is web's to bind."""
    with pytest.raises(ConfigError, match=r"processes.worker.command: a worker gets no port"):
        cfg(processes={"worker": {"command": ["python3", "-m", "worker", "--port", "{port}"]}})

"""A ferry.toml for monitoring tests: the sample app with [monitoring] settings on top."""

from __future__ import annotations

import tomllib
from pathlib import Path

from ferry.config import Config, parse

ROOT = Path(__file__).resolve().parents[3]

BASE = f"""
[app]
name = "hello"

[image]
repository = "127.0.0.1:5000/hello"
base = "127.0.0.1:5000/ferry/python:3.11"
source = "{ROOT / 'examples/hello'}"
entrypoint = ["python3", "-m", "hello"]

[deploy]
hosts = ["root@127.0.0.1:2222"]
colours = {{ blue = 8081, green = 8082 }}
keep_previous = "15m"
docker_host = "unix:///var/lib/ferry-local/docker.sock"

[proxy]
listen = "127.0.0.1"
http_port = 8080
https_port = 8443
"""


def config(monitoring: str = "", extra: str = "", app: str = "hello", hosts: str | None = None) -> Config:
    text = BASE.replace('name = "hello"', f'name = "{app}"')
    if hosts is not None:
        text = text.replace('hosts = ["root@127.0.0.1:2222"]', f"hosts = {hosts}")
    text += extra
    text += f"\n[monitoring]\n{monitoring}\n"
    return parse(tomllib.loads(text), ROOT / "ferry.toml")

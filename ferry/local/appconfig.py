"""ferry.toml for an app on the local target: one place for the addresses `ferry local up`
gives (registry, sshd and its key, dockerd's socket, nginx's config), so tests, benchmarks and
demos that deploy their own app only say what differs (name, source, ports)."""

from __future__ import annotations

from pathlib import Path

from ..config import LocalConfig

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "hello"


def app_toml(*, app: str, source: str | Path, http_port: int, blue: int, green: int,
             repository: str | None = None, requirements: str | Path | None = EXAMPLE / "requirements.txt",
             health: str = 'path = "/healthz", interval = "300ms", timeout = "30s", healthy_after = 2',
             drain_timeout: str = "20s", keep_previous: str = "10m", local: LocalConfig | None = None,
             deploy_extra: str = "", extra: str = "") -> str:
    """A complete ferry.toml (text) deploying ``source`` as ``app`` to this machine."""
    s = local or LocalConfig()
    state = s.state_dir
    req = f'requirements = "{requirements}"\n' if requirements else ""
    return f"""[app]
name = "{app}"

[image]
repository = "{repository or f'127.0.0.1:{s.registry_port}/ferry-test/{app}'}"
base = "127.0.0.1:{s.registry_port}/ferry/python:3.11"
source = "{source}"
{req}entrypoint = ["python3", "-m", "gunicorn", "-c", "gunicorn.conf.py", "hello:app"]
platforms = ["linux/amd64"]

[deploy]
hosts = ["root@127.0.0.1:{s.ssh_port}"]
ssh_key = "{state}/ssh/id_ed25519"
colours = {{ blue = {blue}, green = {green} }}
health = {{ {health} }}
drain_timeout = "{drain_timeout}"
keep_previous = "{keep_previous}"
docker_host = "unix://{state}/docker.sock"
nginx_conf = "{state}/nginx/nginx.conf"
{deploy_extra}
[proxy]
listen = "127.0.0.1"
http_port = {http_port}
https_port = {http_port + 1}
{extra}"""

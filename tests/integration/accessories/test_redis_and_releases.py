"""Redis with its password; and the app beside its accessories: the connection URL in its 0600
env file, and releases and a rollback that never restart an accessory."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess

from .conftest import ROOT_DIR, started_at

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def redis_call(port: int, *commands: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"".join(commands))
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


def test_redis_up_answers_ping_only_with_its_password_and_keeps_data_across_reboot(acc_app, docker_cli):
    port = acc_app.base_port + 11
    acc_app.write(f'[accessories.cache]\nkind = "redis"\nport = {port}\nurl_env = "REDIS_URL"\n')
    r = acc_app.json("accessory", "up", "cache")
    assert r["changed"] and r["image"].startswith("127.0.0.1:5000/ferry/redis@sha256:")
    pw = acc_app.password("cache")
    st = os.stat(f"{acc_app.dir}/accessories/cache.password")
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 65531

    assert redis_call(port, b"PING\r\n").startswith(b"-NOAUTH")
    assert redis_call(port, f"AUTH {pw}\r\nPING\r\nSET k kept\r\n".encode()) == b"+OK\r\n+PONG\r\n+OK\r\n"
    assert acc_app.run("accessory", "exec", "cache", "redis-cli", "ping").stdout.strip() == "PONG"
    assert acc_app.run("accessory", "exec", "-i", "cache", "redis-cli", stdin="GET k\n").stdout.strip() == "kept"
    s = acc_app.json("accessory", "status", "cache")["accessories"][0]
    assert s["healthy"] and s["state"] == "running"
    # the password is in no argv: not the container's, not its config
    inspect = subprocess.run([*docker_cli, "inspect", f"{acc_app.name}-cache"], capture_output=True, text=True).stdout
    assert pw not in inspect

    acc_app.run("accessory", "reboot", "cache")  # appendonly yes: the write survives a restart
    assert redis_call(port, f"AUTH {pw}\r\nGET k\r\n".encode()) == b"+OK\r\n$4\r\nkept\r\n"


def write_source(dest, greeting: str):
    src = dest / greeting
    shutil.copytree(os.path.join(ROOT, "examples", "hello"), src, ignore=shutil.ignore_patterns("__pycache__"))
    init = src / "hello" / "__init__.py"
    init.write_text(init.read_text().replace('GREETING = "hello from ferry"', f'GREETING = "hello from ferry ({greeting})"'))
    return src


def test_releases_and_a_rollback_never_restart_the_accessory_and_the_app_gets_its_url(acc_app, docker_cli):
    db_port = acc_app.base_port + 10
    accessories = (f'[accessories.db]\nkind = "postgres"\nport = {db_port}\nurl_env = "DATABASE_URL"\n')
    deploy_env = 'env = { DB_DSN = "host={db.host} port={db.port} dbname={db.name} user={db.user}" }\n'
    images = {}
    for v in ("v1", "v2"):
        src = write_source(acc_app.tmp, v)
        acc_app.write(accessories, deploy_extra=deploy_env)
        text = acc_app.config.read_text().replace(f'source = "{os.path.join(ROOT, "examples", "hello")}"',
                                                  f'source = "{src}"')
        assert text != acc_app.config.read_text()
        acc_app.config.write_text(text)
        images[v] = acc_app.json("build", "--push", "--tag", v, timeout=900)["image"]

    # a deploy before the accessory exists says what to do and changes nothing
    r = acc_app.run("deploy", images["v1"], "--version", "v1", check=False)
    assert r.returncode != 0 and "ferry accessory up db" in r.stderr

    acc_app.run("accessory", "up", "db")
    container = f"{acc_app.name}-db"
    before = started_at(docker_cli, container)

    acc_app.run("deploy", images["v1"], "--version", "v1")
    env_file = f"{ROOT_DIR}/{acc_app.name}/env"
    assert stat.S_IMODE(os.stat(env_file).st_mode) == 0o600
    env = dict(line.split("=", 1) for line in open(env_file).read().splitlines())
    user = acc_app.name.replace("-", "_")
    assert env["DATABASE_URL"] == f"postgresql://{user}:{acc_app.password('db')}@127.0.0.1:{db_port}/{user}"
    assert env["DB_DSN"] == f"host=127.0.0.1 port={db_port} dbname={user} user={user}"

    # the app reaches the database at the URL it was given
    live = acc_app.json("status")["hosts"][0]["live"]["colour"]
    probe = ("import os, socket, urllib.parse as u; p = u.urlparse(os.environ['DATABASE_URL']); "
             "socket.create_connection((p.hostname, p.port), 3); print('reached', p.port)")
    out = subprocess.run([*docker_cli, "exec", f"{acc_app.name}-{live}", "python3", "-c", probe],
                         capture_output=True, text=True)
    assert out.stdout.strip() == f"reached {db_port}", out.stderr

    acc_app.run("deploy", images["v2"], "--version", "v2")
    acc_app.run("rollback")
    assert acc_app.json("status")["hosts"][0]["live"]["version"] == "v1"
    assert started_at(docker_cli, container) == before
    assert acc_app.json("accessory", "status", "db")["accessories"][0]["healthy"]

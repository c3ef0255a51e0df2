"""An app that writes to its PostgreSQL accessory through DATABASE_URL: its rows survive two
releases, a rollback and an accessory reboot, and the releases fail no request while a load
reads the database through nginx."""

from __future__ import annotations

import os
import shutil
import textwrap

import httpx

from ferry.loadgen import Load

from .conftest import started_at

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

ROUTES = '''
import psycopg as _pg
from flask import request as _req


def _db():
    return _pg.connect(os.environ["DATABASE_URL"], connect_timeout=5)


@app.post("/rows")
def _add_row():
    with _db() as c:
        c.execute("create table if not exists rows(id serial primary key, body text not null, version text)")
        c.execute("insert into rows(body, version) values (%s, %s)", (_req.get_data(as_text=True), VERSION))
    return "ok\\n"


@app.get("/rows/count")
def _count_rows():
    with _db() as c:
        return f"{c.execute('select count(*) from rows').fetchone()[0]}\\n"
'''


def db_app_source(dest, version: str):
    src = dest / version
    shutil.copytree(os.path.join(ROOT, "examples", "hello"), src, ignore=shutil.ignore_patterns("__pycache__"))
    init = src / "hello" / "__init__.py"
    init.write_text(init.read_text().replace('GREETING = "hello from ferry"', f'GREETING = "db app {version}"')
                    + textwrap.dedent(ROUTES))
    req = src / "requirements.txt"
    req.write_text(req.read_text() + "psycopg==3.3.9\npsycopg-binary==3.3.9\ntyping-extensions==4.16.0\n")
    return src


def test_rows_survive_releases_a_rollback_and_a_reboot_with_no_failed_request(acc_app, docker_cli):
    db_port = acc_app.base_port + 10
    accessories = f'[accessories.db]\nkind = "postgres"\nport = {db_port}\nurl_env = "DATABASE_URL"\n'
    images = {}
    for v in ("v1", "v2"):
        src = db_app_source(acc_app.tmp, v)
        acc_app.write(accessories)
        hello = os.path.join(ROOT, "examples", "hello")
        text = acc_app.config.read_text().replace(f'source = "{hello}"', f'source = "{src}"') \
            .replace(f'requirements = "{hello}/requirements.txt"', f'requirements = "{src}/requirements.txt"')
        acc_app.config.write_text(text)
        images[v] = acc_app.json("build", "--push", "--tag", v, timeout=900)["image"]
    url = f"http://127.0.0.1:{acc_app.base_port}"

    acc_app.run("accessory", "up", "db")
    db_started = started_at(docker_cli, f"{acc_app.name}-db")
    acc_app.run("deploy", images["v1"], "--version", "v1")
    for i in range(5):
        assert httpx.post(f"{url}/rows", content=f"row {i}", timeout=10).status_code == 200

    def count() -> int:
        r = httpx.get(f"{url}/rows/count", timeout=10)
        assert r.status_code == 200, r.text
        return int(r.text)

    assert count() == 5
    load = Load(f"{url}/rows/count", concurrency=4, max_seconds=120, qps=20)
    try:
        acc_app.run("deploy", images["v2"], "--version", "v2")
        assert httpx.post(f"{url}/rows", content="from v2", timeout=10).status_code == 200
        acc_app.run("rollback")
    finally:
        stats = load.stop()
    assert stats["total"] > 50 and stats["failed"] == 0, stats
    assert acc_app.json("status")["hosts"][0]["live"]["version"] == "v1"
    assert count() == 6
    assert started_at(docker_cli, f"{acc_app.name}-db") == db_started

    acc_app.run("accessory", "reboot", "db")
    assert count() == 6

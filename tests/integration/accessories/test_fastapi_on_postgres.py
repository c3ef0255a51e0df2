"""examples/fastapi on a PostgreSQL accessory, released by ferry on the local target: the release
command (alembic upgrade head) migrates the accessory's database, notes written through the API
survive two releases, a rollback and an accessory reboot, and no request fails while the
releases and the rollback swap colours under a load that reads the database."""

from __future__ import annotations

import os
import shutil
import time

import httpx

from ferry.loadgen import Load

from .conftest import started_at

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
EXAMPLE = os.path.join(ROOT, "examples", "fastapi")


def example_config(app, src: str) -> str:
    """examples/fastapi/ferry.toml for this test's app: its name, ports and repository, the
    source copy, and a PostgreSQL accessory giving DATABASE_URL."""
    p = app.base_port
    text = open(os.path.join(EXAMPLE, "ferry.toml")).read()
    for old, new in (('name = "notes-api"', f'name = "{app.name}"'),
                     ('repository = "127.0.0.1:5000/examples-fastapi"',
                      f'repository = "127.0.0.1:5000/ferry-test/{app.name}"'),
                     ('source = "."', f'source = "{src}"'),
                     ('requirements = "pyproject.toml"', f'requirements = "{src}/pyproject.toml"'),
                     ("colours = { blue = 8096, green = 8097 }", f"colours = {{ blue = {p + 3}, green = {p + 4} }}"),
                     ("http_port = 8095", f"http_port = {p}"),
                     ("https_port = 8455", f"https_port = {p + 1}")):
        assert old in text, old
        text = text.replace(old, new)
    return text + f'\n[accessories.db]\nkind = "postgres"\nport = {p + 10}\nurl_env = "DATABASE_URL"\n'


def copy_example(dest, version: str) -> str:
    src = dest / version
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("__pycache__", ".venv", "data"))
    init = src / "app" / "__init__.py"
    init.write_text(init.read_text() + f"\n# release {version}\n")  # a new source layer: a new digest
    return str(src)


def test_fastapi_notes_survive_releases_a_rollback_and_a_reboot_with_no_failed_request(acc_app, docker_cli):
    images = {}
    for v in ("v1", "v2"):
        acc_app.config.write_text(example_config(acc_app, copy_example(acc_app.tmp, v)))
        images[v] = acc_app.json("build", "--push", "--tag", v, timeout=900)["image"]
    assert images["v1"] != images["v2"]
    url = f"http://127.0.0.1:{acc_app.base_port}"

    acc_app.run("accessory", "up", "db")
    db_started = started_at(docker_cli, f"{acc_app.name}-db")
    acc_app.run("deploy", images["v1"], "--version", "v1", timeout=600)
    # the release command migrated the accessory's database
    tables = acc_app.run("accessory", "exec", "db", "psql", "-tAc",
                         "select tablename from pg_tables where schemaname = 'public' order by 1").stdout.split()
    assert "alembic_version" in tables and len(tables) >= 2, tables

    for i in range(5):
        r = httpx.post(f"{url}/api/notes", json={"title": f"note {i}", "body": "kept"}, timeout=10)
        assert r.status_code in (200, 201), r.text

    def titles() -> list[str]:
        r = httpx.get(f"{url}/api/notes", timeout=10)
        assert r.status_code == 200, r.text
        return sorted(n["title"] for n in r.json())

    assert titles() == [f"note {i}" for i in range(5)]
    load = Load(f"{url}/api/notes", concurrency=4, max_seconds=180, qps=20)
    try:
        acc_app.run("deploy", images["v2"], "--version", "v2", timeout=600)
        assert titles() == [f"note {i}" for i in range(5)]
        assert httpx.post(f"{url}/api/notes", json={"title": "note v2", "body": "kept"}, timeout=10).status_code in (200, 201)
        acc_app.run("rollback", timeout=600)
    finally:
        stats = load.stop()
    assert stats["total"] > 50 and stats["failed"] == 0, stats
    assert acc_app.json("status")["hosts"][0]["live"]["version"] == "v1"
    assert titles() == sorted([f"note {i}" for i in range(5)] + ["note v2"])
    assert started_at(docker_cli, f"{acc_app.name}-db") == db_started  # releases never restarted it

    acc_app.run("accessory", "reboot", "db")
    deadline = time.monotonic() + 30
    while True:  # the app's pool reconnects on its next requests
        try:
            got = titles()
            break
        except (AssertionError, httpx.HTTPError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert got == sorted([f"note {i}" for i in range(5)] + ["note v2"])

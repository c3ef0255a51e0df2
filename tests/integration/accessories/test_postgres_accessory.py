"""A PostgreSQL accessory on the local target: started, checked, entered, stopped and started
again with its data; rebooted onto another image digest with its data; a major change refused."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import psycopg
import pytest

from ferry.images.oci import OCI_CONFIG, Blob, Image, canonical_json
from ferry.images.publish import RegistryPublisher
from ferry.images.registry import RegistryClient

from .conftest import FERRY, started_at


def pg(app, port: int) -> str:
    return f"postgresql://{app.name.replace('-', '_')}:{app.password('db')}@127.0.0.1:{port}/{app.name.replace('-', '_')}"


def db_toml(port: int, version: str = "15", image: str | None = None) -> str:
    img = f'image = "{image}"\n' if image else ""
    return f'[accessories.db]\nkind = "postgres"\nversion = "{version}"\nport = {port}\nurl_env = "DATABASE_URL"\n{img}'


def test_up_status_exec_down_up_keeps_the_data(acc_app, docker_cli):
    port = acc_app.base_port + 10
    acc_app.write(db_toml(port))
    r = acc_app.json("accessory", "up", "db")
    assert r["changed"] and r["image"].startswith("127.0.0.1:5000/ferry/postgres@sha256:")

    # a second up changes nothing
    again = acc_app.json("accessory", "up", "db")
    assert not again["changed"] and again["started"] == r["started"]

    pw_file = f"{acc_app.dir}/accessories/db.password"
    st = os.stat(pw_file)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 65530
    assert acc_app.password("db") not in acc_app.config.read_text()

    s = acc_app.json("accessory", "status", "db")["accessories"][0]
    assert s["healthy"] and s["data_version"] == "15" and s["port"] == port

    # the server runs as its own uid, listens on loopback only, and needs the password over TCP
    inspect = json.loads(subprocess.run([*docker_cli, "inspect", f"{acc_app.name}-db"], capture_output=True,
                                        text=True, check=True).stdout)[0]
    assert inspect["Config"]["User"] == "65530:65530" and inspect["HostConfig"]["NetworkMode"] == "host"
    assert acc_app.password("db") not in json.dumps(inspect)
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
    local = [line.split()[3] for line in listening.splitlines()]
    assert local == [f"127.0.0.1:{port}"]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg(acc_app, port).replace(acc_app.password("db"), "wrong"), connect_timeout=5)

    out = acc_app.run("accessory", "exec", "db", "psql", "-c", "create table notes(t text); "
                      "insert into notes values ('kept')").stdout
    assert "INSERT 0 1" in out

    d = acc_app.json("accessory", "down", "db")
    assert d["changed"]
    assert subprocess.run([*docker_cli, "inspect", f"{acc_app.name}-db"], capture_output=True).returncode != 0
    assert os.path.exists(f"{acc_app.dir}/volumes/db/pgdata/PG_VERSION")

    acc_app.run("accessory", "up", "db")
    with psycopg.connect(pg(acc_app, port), connect_timeout=5) as c:
        assert c.execute("select t from notes").fetchall() == [("kept",)]


def variant_of(reference: str, repository: str) -> str:
    """The same image with one more label: another digest, same files. Pushed as a new tag."""
    import httpx

    registry, rest = reference.split("/", 1)
    repo, digest = rest.split("@")
    with RegistryClient(registry) as client:
        manifest, _, _ = client.get_manifest(repo, digest)
        m = json.loads(manifest)
        cfg = json.loads(httpx.get(f"http://{registry}/v2/{repo}/blobs/{m['config']['digest']}").content)
        cfg["config"]["Labels"]["dev.ferry.test.variant"] = "reboot"
        layers = tuple(Blob(l["digest"], l["size"], l["mediaType"], source=repo) for l in m["layers"])
        from ferry.images.oci import Platform

        img = Image(Blob.from_bytes(canonical_json(cfg), OCI_CONFIG), layers, Platform("linux", "amd64"))
        r = RegistryPublisher(client, repository).publish(img, ["15-variant"])
    return f"{registry}/{repository}@{r.digest}"


def test_reboot_to_a_new_digest_keeps_the_data(acc_app, accessory_images, docker_cli):
    port = acc_app.base_port + 10
    acc_app.write(db_toml(port))
    first = acc_app.json("accessory", "up", "db")
    acc_app.run("accessory", "exec", "db", "psql", "-c", "create table t(n int); insert into t values (41), (1)")

    other = variant_of(accessory_images["postgres"]["reference"], "ferry/postgres")
    assert other != first["image"]
    acc_app.write(db_toml(port, image=other))
    note = acc_app.json("accessory", "up", "db")
    assert not note["changed"] and "reboot" in note["note"]  # up never restarts a running accessory

    r = acc_app.json("accessory", "reboot", "db")
    assert r["image"] == other and r["started"] != first["started"]
    s = acc_app.json("accessory", "status", "db")["accessories"][0]
    assert s["digest"] == other.split("@")[1] and s["healthy"]
    with psycopg.connect(pg(acc_app, port), connect_timeout=5) as c:
        assert c.execute("select sum(n) from t").fetchone() == (42,)


def test_a_major_version_change_is_refused_and_nothing_changes(acc_app, docker_cli):
    port = acc_app.base_port + 10
    acc_app.write(db_toml(port))
    acc_app.run("accessory", "up", "db")
    before = started_at(docker_cli, f"{acc_app.name}-db")

    acc_app.write(db_toml(port, version="17"))
    for action in ("reboot", "up"):
        r = acc_app.run("accessory", action, "db", check=False)
        assert r.returncode != 0
        assert "made by PostgreSQL 15" in r.stderr and "dump and a restore" in r.stderr
        assert "ferry accessory backup db" in r.stderr and "ferry accessory restore db" in r.stderr
    assert started_at(docker_cli, f"{acc_app.name}-db") == before
    assert open(f"{acc_app.dir}/volumes/db/pgdata/PG_VERSION").read().strip() == "15"


def test_the_documented_major_upgrade_path_from_15_to_17_keeps_the_data(acc_app, local_target):
    """What the refusal says to do, done: back up under 15, down, move the volume aside, set 17
    (trixie's PostgreSQL, assembled by ferry), up, restore."""
    import shutil

    r = subprocess.run([*FERRY, "accessory", "images", "--push", "--postgres", "17", "--no-exporter", "--json"],
                       capture_output=True, text=True, timeout=1200, cwd="/")
    assert r.returncode == 0, r.stderr[-3000:]
    port = acc_app.base_port + 10
    acc_app.write(db_toml(port, version="15"))
    acc_app.run("accessory", "up", "db")
    acc_app.run("accessory", "exec", "db", "psql", "-c", "create table t(n int); insert into t values (15), (2)")
    dump = acc_app.json("accessory", "backup", "db")["file"]
    acc_app.run("accessory", "down", "db")
    shutil.move(f"{acc_app.dir}/volumes/db", f"{acc_app.dir}/volumes/db-15")

    acc_app.write(db_toml(port, version="17"))
    acc_app.run("accessory", "up", "db")
    assert acc_app.json("accessory", "status", "db")["accessories"][0]["data_version"] == "17"
    acc_app.run("accessory", "restore", "db", os.path.basename(dump))
    with psycopg.connect(pg(acc_app, port), connect_timeout=5) as c:
        assert c.execute("show server_version").fetchone()[0].startswith("17.")
        assert c.execute("select sum(n) from t").fetchone() == (17,)

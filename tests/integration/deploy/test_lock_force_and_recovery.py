"""The deploy lock's --force paths, and the host's recovery after a fault, on the local target.

A lock is faked as another ferry leaves it: the lock directory and its info.json on the host,
their mtime set back to make it old. After a fault, the next deploy of a good image must go
through under load with no failed request.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import ferry, ferry_json
from .test_release import assert_no_loss, version_through_nginx

pytestmark = pytest.mark.integration

DAYS = 3 * 24 * 3600


def plant_lock(app, *, machine: str, pid: int, age: float = 0.0) -> Path:
    d = Path(f"/opt/ferry/{app.name}/lock")
    d.mkdir()
    info = {"holder": "alice@ci-runner", "machine": machine, "pid": pid, "command": "deploy 2.0",
            "version": "2.0", "since": "2026-11-26T09:00:00Z"}
    (d / "info.json").write_text(json.dumps(info))
    t = time.time() - age
    os.utime(d / "info.json", (t, t))
    os.utime(d, (t, t))
    return d


def lock_info(d: Path) -> dict:
    return json.loads((d / "info.json").read_text())


def stale_by_age(app) -> Path:
    """Held by a ferry on another machine, untouched for days: stale by age only."""
    d = plant_lock(app, machine="ci-runner-7", pid=4242, age=DAYS)
    st = ferry_json(app.config, "lock", "status")["hosts"][0]["lock"]
    assert st["stale"] is True and "has not been touched" in st["stale_reason"], st
    return d


@pytest.fixture
def live_holder():
    p = subprocess.Popen(["sleep", "300"])  # another ferry still working on this machine
    yield p
    p.kill()
    p.wait()


def test_deploy_force_breaks_a_lock_stale_only_by_age(app, load):
    app.deploy("v1")
    d = stale_by_age(app)
    r = app.deploy("v2", check=False)
    assert r.returncode == 3, r.stderr
    assert "held by alice@ci-runner" in r.stderr and "stale: it has not been touched" in r.stderr
    assert "--force" in r.stderr
    assert lock_info(d)["machine"] == "ci-runner-7"  # reported, not broken
    assert app.live()["version"] == "v1"
    lo = load(app.url + "/")
    r = app.deploy("v2", "--force")
    assert_no_loss(lo.stop())
    assert "breaking a stale lock" in r.stderr
    assert version_through_nginx(app)["version"] == "v2"
    host = app.status()["hosts"][0]
    assert host["lock"] is None and host["live"]["version"] == "v2"


def test_rollback_force_breaks_a_lock_stale_only_by_age(app, load):
    app.deploy("v1")
    app.deploy("v2")
    d = stale_by_age(app)
    r = ferry(app.config, "rollback", check=False)
    assert r.returncode == 3 and "held by alice@ci-runner" in r.stderr, r.stderr
    assert lock_info(d)["machine"] == "ci-runner-7"
    assert version_through_nginx(app)["version"] == "v2"
    lo = load(app.url + "/")
    out = ferry_json(app.config, "rollback", "--force")
    assert_no_loss(lo.stop())
    assert out["hosts"][0]["action"] == "rolled-back" and out["hosts"][0]["version"] == "v1"
    assert version_through_nginx(app)["version"] == "v1"
    assert app.status()["hosts"][0]["lock"] is None


def test_release_force_breaks_a_lock_stale_only_by_age(app):
    app.deploy("v1")
    d = stale_by_age(app)
    r = ferry(app.config, "release", "--version", "rel-1", check=False)
    assert r.returncode == 3 and "held by alice@ci-runner" in r.stderr, r.stderr
    assert lock_info(d)["machine"] == "ci-runner-7"
    assert app.live()["version"] == "v1"
    out = ferry_json(app.config, "release", "--version", "rel-1", "--force")
    h = out["hosts"][0]
    assert h["action"] == "deployed" and h["version"] == "rel-1"
    assert version_through_nginx(app)["version"] == "rel-1"
    assert app.status()["hosts"][0]["lock"] is None


def test_a_live_lock_on_this_machine_is_never_broken_not_even_by_force(app, load, live_holder):
    app.deploy("v1")
    app.deploy("v2")
    d = plant_lock(app, machine=os.uname().nodename, pid=live_holder.pid)
    lo = load(app.url + "/")
    for argv in (["deploy", app.images["v3"], "--version", "v3"], ["deploy", app.images["v3"], "--version", "v3", "--force"],
                 ["rollback"], ["rollback", "--force"]):
        r = ferry(app.config, *argv, check=False)
        assert r.returncode == 3, (argv, r.stderr)
        assert f"held by alice@ci-runner (pid {live_holder.pid}" in r.stderr, r.stderr
        assert "wait for that deploy to finish" in r.stderr
    assert_no_loss(lo.stop())
    assert lock_info(d)["pid"] == live_holder.pid
    assert version_through_nginx(app)["version"] == "v2"


def test_a_live_lock_untouched_for_long_is_reported_stale_but_not_broken_automatically(app, live_holder):
    app.deploy("v1")
    d = plant_lock(app, machine=os.uname().nodename, pid=live_holder.pid, age=DAYS)
    r = app.deploy("v2", check=False)
    assert r.returncode == 3 and f"pid {live_holder.pid}" in r.stderr, r.stderr
    assert lock_info(d)["pid"] == live_holder.pid
    assert app.live()["version"] == "v1"


def test_lock_release_force_clears_a_lock_that_looks_alive(app, load, live_holder):
    app.deploy("v1")
    d = plant_lock(app, machine=os.uname().nodename, pid=live_holder.pid)
    r = ferry(app.config, "lock", "release", check=False)
    assert r.returncode == 1
    assert "looks alive" in r.stderr and "held by alice@ci-runner" in r.stderr and "--force" in r.stderr
    assert lock_info(d)["pid"] == live_holder.pid
    out = ferry_json(app.config, "lock", "release", "--force")
    h = out["hosts"][0]
    assert h["released"] is True and h["was"]["pid"] == live_holder.pid and h["was"]["stale"] is False
    assert not d.exists()
    assert ferry_json(app.config, "lock", "status")["hosts"][0]["lock"] is None
    lo = load(app.url + "/")
    app.deploy("v2")
    assert_no_loss(lo.stop())
    assert version_through_nginx(app)["version"] == "v2"


def _recovers(app, load) -> None:
    """After a failed deploy: nothing pending, no lock, and a good image deploys under load."""
    host = app.status()["hosts"][0]
    assert host["lock"] is None and host["pending"] == [] and host["repaired"] == [], host
    assert host["live"]["version"] == "v1" and host["health"]["ok"]
    lo = load(app.url + "/")
    out = ferry_json(app.config, "deploy", app.images["v2"], "--version", "v2")
    assert_no_loss(lo.stop())
    h = out["hosts"][0]
    assert h["action"] == "deployed" and h["version"] == "v2" and h["previous"] is not None
    assert version_through_nginx(app)["version"] == "v2"
    host = app.status()["hosts"][0]
    assert host["live"]["release"] == h["release"] and host["health"]["ok"] and host["lock"] is None


def test_host_recovers_after_the_registry_refuses_the_pull(app, load, local_target):
    app.deploy("v1")
    image = app.images["v2"].replace(local_target["registry"], local_target["registry_basic"])
    r = ferry(app.config, "deploy", image, "--version", "v2", check=False,
              env={"FERRY_REGISTRY_USERNAME": "ferry", "FERRY_REGISTRY_PASSWORD": "wrong"})
    assert r.returncode == 1 and "pull of" in r.stderr
    _recovers(app, load)


def test_host_recovers_after_a_container_exits_at_start(app, load):
    app.deploy("v1")
    r = app.deploy("crash", check=False)
    assert r.returncode == 1 and "exited at start" in r.stderr
    assert app.status()["hosts"][0]["releases"][0]["outcome"] == "failed"
    _recovers(app, load)

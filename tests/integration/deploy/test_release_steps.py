"""A release's new steps on the local target, for real: the release command, volumes and worker
processes, and the fault of each (failing, timing out, crashing, not creatable, ferry killed
mid-step). Every fault leaves traffic where it was (asked through nginx) and the next release
works. Apps are named deploy-*, colour ports in 34000-34999."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from ferry.loadgen import Load
from ferry.local.appconfig import app_toml

from .conftest import FERRY, ferry, ferry_json, write_variant

pytestmark = pytest.mark.integration

ROOT_DIR = "/opt/ferry"


def _py(code: str) -> str:
    """A TOML array running ``code`` with the image's python3."""
    return json.dumps(["python3", "-c", code])


# appends the release id to /data/releases.txt (how many times it ran is in the volume itself)
# and a row to a sqlite database there, as a migration would
MIGRATE = _py("import os, sqlite3; r = os.environ['FERRY_RELEASE']; open('/data/releases.txt', 'a').write(r + '\\n'); "
              "db = sqlite3.connect('/data/app.db'); db.execute('create table if not exists rows (who, release)'); "
              "db.execute('insert into rows values (?, ?)', ('migrate', r)); db.commit(); print('migrated', r)")
FAILING = _py("import sys; print('applying 0002_users'); "
              "print('error: relation \"users\" does not exist', file=sys.stderr); sys.exit(5)")
SLOW = _py("import time; print('migrating a big table', flush=True); time.sleep(120)")
WORKER = _py("import os, signal, sqlite3, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); "
             "open('/data/worker-' + os.environ['FERRY_RELEASE'], 'w').write('up'); "
             "db = sqlite3.connect('/data/app.db', timeout=30); db.execute('create table if not exists rows (who, release)'); "
             "db.execute('insert into rows values (?, ?)', ('worker-' + os.environ['FERRY_REPLICA'], "
             "os.environ['FERRY_RELEASE'])); db.commit(); db.close(); "
             "[time.sleep(1) for _ in iter(int, 1)]")
CRASHING = _py("import sys; print('worker: cannot reach the broker at redis://127.0.0.1:6399', flush=True); sys.exit(3)")


class StepsApp:
    """An app on the local target whose ferry.toml the test rewrites between releases."""

    def __init__(self, name: str, tmp: Path, port: int, images: dict, docker_cli: list[str]):
        self.name, self.tmp, self.http_port, self.images, self.docker = name, tmp, port, images, docker_cli
        self.config = tmp / "ferry.toml"
        self.src = write_variant(tmp, "v1")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def volumes(self) -> Path:
        return Path(ROOT_DIR) / self.name / "volumes"

    def configure(self, release_command: str | None = MIGRATE, worker: str | None = WORKER,
                  release_timeout: str = "60s", healthy_after: str = "2s") -> None:
        extra_deploy = 'volumes = { data = "/data" }\n'
        if release_command:
            extra_deploy += f"release_command = {release_command}\nrelease_timeout = \"{release_timeout}\"\n"
        extra = ""
        if worker:
            extra = (f"\n[processes.worker]\ncommand = {worker}\nreplicas = 2\nstop_timeout = \"5s\"\n"
                     f"healthy_after = \"{healthy_after}\"\n")
        self.config.write_text(app_toml(
            app=self.name, source=self.src, http_port=self.http_port, blue=self.http_port + 3,
            green=self.http_port + 4, repository="127.0.0.1:5000/ferry-test/hello",
            health='path = "/healthz", interval = "300ms", timeout = "20s", healthy_after = 2',
            deploy_extra=extra_deploy, extra=extra))

    def deploy(self, variant: str, check: bool = True) -> subprocess.CompletedProcess:
        return ferry(self.config, "deploy", self.images[variant], "--version", variant, "--json", check=check)

    def status(self) -> dict:
        return ferry_json(self.config, "status", check=False)["hosts"][0]

    def version_through_nginx(self) -> str:
        with urllib.request.urlopen(self.url + "/version", timeout=30) as r:
            return json.loads(r.read().decode())["version"]

    def containers(self) -> dict[str, str]:
        """name -> docker state of every container of the app."""
        r = subprocess.run([*self.docker, "ps", "--all", "--filter", f"label=dev.ferry.app={self.name}",
                            "--format", "{{.Names}} {{.State}}"], capture_output=True, text=True, check=True)
        return dict(line.split(" ", 1) for line in r.stdout.splitlines() if line.strip())

    def running_workers(self) -> list[str]:
        return sorted(n for n, s in self.containers().items() if "-worker-" in n and s == "running")

    def releases(self) -> list[dict]:
        return json.loads((Path(ROOT_DIR) / self.name / "releases.json").read_text())["releases"]


@pytest.fixture
def steps_app(request, hello_images, tmp_path, local_target, docker_cli):
    n = {"happy": 0, "failing": 1, "timeout": 2, "crash": 3, "volume": 4, "killed": 5}
    key = next(k for k in n if k in request.node.name)
    # FERRY_TEST_PREFIX / FERRY_TEST_PORT_BASE (as conftest's app): a session of its own when
    # several run these tests on one machine at once; 500 above the base, clear of conftest's apps
    name = f"{os.environ.get('FERRY_TEST_PREFIX', '')}deploy-{key}"
    base = int(os.environ["FERRY_TEST_PORT_BASE"]) + 500 if os.environ.get("FERRY_TEST_PORT_BASE") else 34100
    a = StepsApp(name, tmp_path, base + 10 * n[key], hello_images, docker_cli)
    yield a
    names = list(a.containers())
    if names:
        subprocess.run([*docker_cli, "rm", "-f", *names], capture_output=True)
    subprocess.run(["rm", "-rf", f"{ROOT_DIR}/{name}"], capture_output=True)
    subprocess.run(["nginx", "-c", local_target["nginx_conf"], "-s", "reload"], capture_output=True)


def rows(a: StepsApp) -> list[tuple[str, str]]:
    db = sqlite3.connect(a.volumes / "data" / "app.db")
    try:
        return sorted(db.execute("select who, release from rows").fetchall())
    finally:
        db.close()


def test_happy_release_command_volume_and_worker_survive_releases_and_a_rollback(steps_app):
    a = steps_app
    a.configure()
    one = json.loads(a.deploy("v1").stdout)["hosts"][0]
    assert one["release_command"]["exit_code"] == 0 and one["release_command"]["ok"] is True
    assert one["workers"] == [f"{a.name}-worker-1-blue", f"{a.name}-worker-2-blue"]
    data = a.volumes / "data"
    st = data.stat()
    assert (st.st_uid, st.st_gid, oct(st.st_mode & 0o777)) == (65532, 65532, "0o755")  # the image's user
    assert (data / "releases.txt").read_text().split() == [one["release"]]
    assert (data / f"worker-{one['release']}").read_text() == "up"  # the worker writes the volume too
    # the live web container writes a file into the volume: it must outlive everything below
    subprocess.run([*a.docker, "exec", f"{a.name}-blue", "python3", "-c",
                    "open('/data/upload.bin', 'wb').write(b'x' * 4096)"], check=True)

    lo = Load(a.url + "/", concurrency=8, max_seconds=300)
    try:
        two = json.loads(a.deploy("v2").stdout)["hosts"][0]
        assert a.version_through_nginx() == "v2"
        assert a.running_workers() == [f"{a.name}-worker-1-green", f"{a.name}-worker-2-green"]
        assert a.containers()[f"{a.name}-worker-1-blue"] == "exited"  # the old ones stopped (SIGTERM)
        back = ferry_json(a.config, "rollback")["hosts"][0]
    finally:
        result = lo.stop()
    assert result["total"] > 0 and result["failed"] == 0, result["raw"]
    assert back["warm"] is True and a.version_through_nginx() == "v1"
    assert (data / f"worker-{two['release']}").read_text() == "up"  # v2's workers ran, then stopped
    assert a.containers()[f"{a.name}-worker-1-green"] == "exited"  # stopped by the rollback (SIGTERM)
    assert back["workers"] == [f"{a.name}-worker-1-blue", f"{a.name}-worker-2-blue"]
    assert a.running_workers() == [f"{a.name}-worker-1-blue", f"{a.name}-worker-2-blue"]
    # a rollback does not run the release command
    assert (data / "releases.txt").read_text().split() == [one["release"], two["release"]]
    assert (data / "upload.bin").read_bytes() == b"x" * 4096
    # every row is there: each release's migration, and each worker start (v1, v2, v1 again)
    r1, r2 = one["release"], two["release"]
    assert rows(a) == sorted([("migrate", r1), ("migrate", r2)] + [(f"worker-{n}", r) for r in (r1, r2, r1)
                                                                   for n in (1, 2)])

    st = a.status()
    assert st["volumes"] == [{"name": "data", "path": "/data", "host_path": str(data),
                              "size": st["volumes"][0]["size"]}]
    assert st["volumes"][0]["size"] >= 4096
    assert [w["name"] for w in st["workers"][one["release"]] if w["running"]] == \
        [f"{a.name}-worker-1-blue", f"{a.name}-worker-2-blue"]
    ran = {r["id"]: r.get("release_command") for r in st["releases"]}
    assert ran[one["release"]]["exit_code"] == 0 and ran[two["release"]]["exit_code"] == 0
    assert ran[back["entry"]] is None  # the rollback's entry: nothing ran
    text = ferry(a.config, "status", check=False).stdout
    assert f"workers of {one['release']}" in text and "volume data" in text


def test_failing_release_command_stops_the_release_with_its_exit_code_and_output(steps_app):
    a = steps_app
    a.configure()
    a.deploy("v1")
    a.configure(release_command=FAILING)
    r = a.deploy("v2", check=False)
    assert r.returncode == 1, r.stderr
    err = json.loads(r.stdout)
    assert err["error"] == "ReleaseCommandFailed" and "exit code 5" in err["message"]
    assert 'relation "users" does not exist' in err["message"] and "applying 0002_users" in err["message"]
    assert "release: applying 0002_users" in r.stderr  # streamed as it ran
    assert a.version_through_nginx() == "v1"
    assert a.running_workers() == [f"{a.name}-worker-1-blue", f"{a.name}-worker-2-blue"]
    assert not any("green" in n or "-release-" in n for n in a.containers())
    last = a.releases()[-1]
    assert last["outcome"] == "failed" and "exit code 5" in last["note"]
    assert last["release_command"]["exit_code"] == 5
    a.configure()
    a.deploy("v2")
    assert a.version_through_nginx() == "v2"


def test_release_command_exceeding_its_timeout_is_killed_and_the_release_stops(steps_app):
    a = steps_app
    a.configure()
    a.deploy("v1")
    a.configure(release_command=SLOW, release_timeout="3s")
    r = a.deploy("v2", check=False)
    assert r.returncode == 1, r.stderr
    err = json.loads(r.stdout)
    assert err["error"] == "ReleaseCommandFailed" and "release_timeout (3s), killed" in err["message"]
    assert "migrating a big table" in err["message"]
    assert a.version_through_nginx() == "v1"
    assert not any("-release-" in n for n in a.containers())  # the one-off was removed
    assert a.releases()[-1]["outcome"] == "failed"
    a.configure()
    a.deploy("v2")
    assert a.version_through_nginx() == "v2"


def test_crashing_worker_stops_the_release_before_traffic_moves(steps_app):
    a = steps_app
    a.configure()
    a.deploy("v1")
    a.configure(worker=CRASHING)
    r = a.deploy("v2", check=False)
    assert r.returncode == 1, r.stderr
    err = json.loads(r.stdout)
    assert err["error"] == "WorkerFailed" and f"{a.name}-worker-" in err["message"]
    assert "cannot reach the broker" in err["message"]  # its log tail
    assert a.version_through_nginx() == "v1"
    assert a.running_workers() == [f"{a.name}-worker-1-blue", f"{a.name}-worker-2-blue"]
    assert not any(n.endswith("-green") for n in a.containers())
    assert a.releases()[-1]["outcome"] == "failed"
    a.configure()
    a.deploy("v2")
    assert a.version_through_nginx() == "v2"


def test_volume_that_cannot_be_created_is_an_error_before_anything_changes(steps_app):
    a = steps_app
    a.configure()
    a.deploy("v1")
    before = a.releases()
    # the volume is still there from v1: a new one whose path is a file cannot be created
    (a.volumes / "media").write_text("not a directory")
    a.config.write_text(a.config.read_text().replace('volumes = { data = "/data" }',
                                                     'volumes = { data = "/data", media = "/app/media" }'))
    r = a.deploy("v2", check=False)
    assert r.returncode == 1, r.stderr
    err = json.loads(r.stdout)
    assert err["error"] == "VolumeError" and str(a.volumes / "media") in err["message"]
    assert "move away what is there" in err["hint"]
    assert a.version_through_nginx() == "v1"
    assert a.releases() == before  # nothing recorded: nothing changed
    assert (a.volumes / "data" / "releases.txt").exists()
    (a.volumes / "media").unlink()
    a.deploy("v2")
    assert a.version_through_nginx() == "v2" and (a.volumes / "media").is_dir()


def test_ferry_killed_during_the_release_command_is_repaired_by_the_next_release(steps_app):
    a = steps_app
    a.configure()
    a.deploy("v1")
    a.configure(release_command=SLOW, release_timeout="5m")
    proc = subprocess.Popen([*FERRY, "-c", str(a.config), "deploy", a.images["v2"], "--version", "v2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while not any("-release-" in n and s == "running" for n, s in a.containers().items()):
            assert proc.poll() is None and time.monotonic() < deadline, "the release command never started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert a.version_through_nginx() == "v1"
    assert a.releases()[-1]["outcome"] == "in-progress"
    a.configure()
    out = json.loads(a.deploy("v2").stdout)["hosts"][0]
    assert any("traffic had not moved" in fix for fix in out["repaired"])
    assert a.version_through_nginx() == "v2"
    assert not any("-release-" in n for n in a.containers())  # the killed one-off was removed
    outcomes = [r["outcome"] for r in a.releases()]
    assert outcomes[-2:] == ["aborted", "success"]
    # the repair removed containers only: the volume keeps what v1's release wrote (the killed
    # command never got to write; the next release's did)
    assert len((a.volumes / "data" / "releases.txt").read_text().split()) == 2

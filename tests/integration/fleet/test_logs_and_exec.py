"""`ferry logs` and `ferry exec` against a release on the local target: the live colour's access
lines prefixed with host and container, a one-off container of the live release with the app's
env, secrets and volumes whose exit code is ferry's, `--live` inside the live container, and
neither touches the lock or what serves traffic."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
import uuid

import httpx
import pytest

from .conftest import FERRY, SECRET, ferry

pytestmark = pytest.mark.integration
HOST = "root@127.0.0.1:2222"


def hit(app, path: str) -> None:
    httpx.get(app.url + path, headers={"Host": "127.0.0.1"}, timeout=10)


def wait_for_line(app, needle: str, *args: str) -> subprocess.CompletedProcess:
    """`ferry logs` until a line holds ``needle`` (docker's json-file log is written as the app
    writes it; bounded: 20 tries)."""
    for _ in range(20):
        r = ferry(app.config, "logs", *args)
        if needle in r.stdout:
            return r
        time.sleep(0.25)
    raise AssertionError(f"no line with {needle!r} in `ferry logs {' '.join(args)}`:\n{r.stdout[-2000:]}")


@pytest.fixture
def live(app):
    app.deploy()
    (app.dir / "volumes" / "data").mkdir(parents=True, exist_ok=True)
    (app.dir / "volumes" / "data" / "seed.txt").write_text("kept in a volume\n")
    return app


def traffic(app) -> tuple:
    s = app.status()["hosts"][0]
    return (s["live"]["colour"], s["live"]["release"], (app.dir / "nginx" / "upstream.conf").read_text(), s["lock"])


def test_logs_show_the_live_colours_access_lines_prefixed_with_host_and_container(live):
    probe = f"/fleet-probe-{uuid.uuid4().hex[:8]}"
    hit(live, probe)
    r = wait_for_line(live, probe)
    line = next(x for x in r.stdout.splitlines() if probe in x)
    assert line.startswith(f"{HOST} {live.name}-blue | ") and "GET " + probe in line

    r = wait_for_line(live, probe, "--json", "--since", "10m", "--host", "127.0.0.1")
    docs = [json.loads(x) for x in r.stdout.splitlines()]
    mine = [d for d in docs if probe in d["line"]]
    assert mine and all(set(d) == {"host", "container", "stream", "line"} for d in docs)
    assert mine[0]["host"] == HOST and mine[0]["container"] == f"{live.name}-blue"
    assert mine[0]["stream"] in ("stdout", "stderr")


def test_logs_follow_streams_lines_as_they_come(live):
    p = subprocess.Popen([*FERRY, "-c", str(live.config), "logs", "--follow", "--json", "--tail", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        probe = f"/fleet-follow-{uuid.uuid4().hex[:8]}"
        seen = []
        for _ in range(40):  # bounded: one request and up to 0.5 s of waiting per round
            hit(live, probe)
            ready, _, _ = select.select([p.stdout], [], [], 0.5)
            if ready:
                seen.append(p.stdout.readline())
                if any(probe in s for s in seen):
                    break
        got = [json.loads(s) for s in seen if probe in s]
        assert got and got[0]["container"] == f"{live.name}-blue", "".join(seen)[-2000:]
    finally:
        p.kill()
        p.wait()


def test_exec_runs_a_one_off_container_with_the_apps_env_and_passes_its_exit_code(live, docker_cli):
    before = traffic(live)
    code = ("import os, sys; print(os.environ['FLEET_SECRET'], os.environ['FLEET_GREETING'], "
            "os.environ['FERRY_RELEASE'], os.getuid()); print(open('/data/seed.txt').read().strip()); "
            "print('to stderr', file=sys.stderr); sys.exit(3)")
    r = ferry(live.config, "exec", "--", "python3", "-c", code, check=False)
    assert r.returncode == 3, r.stderr
    release = before[1]
    assert r.stdout.splitlines()[0] == f"{SECRET} ahoy {release} 65532"  # the image's own user
    assert "kept in a volume" in r.stdout and "to stderr" in r.stderr
    # removed after, and nothing that serves traffic moved
    left = subprocess.run([*docker_cli, "ps", "-aq", "--filter", f"name=^{live.name}-exec-"], capture_output=True,
                          text=True)
    assert left.stdout.strip() == ""
    assert traffic(live) == before

    doc = json.loads(ferry(live.config, "exec", "--json", "--", "python3", "-c", "import sys; print('hi'); sys.exit(3)",
                           check=False).stdout)
    assert doc["exit_code"] == 3 and doc["stdout"] == "hi\n" and doc["live"] is False and doc["release"] == release
    assert ferry(live.config, "exec", "--", "python3", "-c", "pass").returncode == 0
    # the image has no `true`: docker's own 127 is passed through as it is
    assert ferry(live.config, "exec", "--", "true", check=False).returncode == 127


def test_exec_interactive_forwards_stdin(live):
    r = ferry(live.config, "exec", "-i", "--", "python3", "-c", "import sys; print(sys.stdin.read().upper())",
              input="ahoy from stdin\n")
    assert "AHOY FROM STDIN" in r.stdout


def test_exec_live_runs_inside_the_live_container(live):
    before = traffic(live)
    r = ferry(live.config, "exec", "--live", "--", "python3", "-c",
              "import os, sys; print(os.environ['FERRY_COLOUR'], os.environ['PORT']); sys.exit(4)", check=False)
    assert r.returncode == 4, r.stderr
    assert r.stdout.strip() == f"blue {live.http_port + 3}"
    assert traffic(live) == before


def test_bad_input_is_refused_before_any_host_is_touched_and_nothing_live_says_so(app):
    r = ferry(app.config, "logs", "--since", "yesterday", check=False)
    assert r.returncode == 2 and "--since 'yesterday'" in r.stderr
    r = ferry(app.config, "exec", "--host", "web-9.example", "--", "true", check=False)
    assert r.returncode == 2 and "not one of this app's hosts" in r.stderr
    # never deployed: nothing live to read or run
    r = ferry(app.config, "exec", "--", "true", check=False)
    assert r.returncode == 1 and "nothing is live" in r.stderr and "deploy first" in r.stderr
    r = ferry(app.config, "logs", check=False)
    assert r.returncode == 1 and "nothing is live" in r.stderr
    assert not os.path.exists(app.dir / "lock")

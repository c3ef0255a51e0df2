"""Blue/green on the local target, for real: sshd + Fabric, dockerd, nginx, the registry.

Every fault runs under a bounded load through nginx and must lose no request, leave the live
release where it was, say clearly what went wrong, and leave a host the next command can use.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from .conftest import FERRY, ferry, ferry_json

pytestmark = pytest.mark.integration


def get(url: str, timeout: float = 30) -> tuple[int, dict, str]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, dict(r.headers), r.read().decode()


def version_through_nginx(app) -> dict:
    return json.loads(get(app.url + "/version")[2])


def assert_no_loss(result: dict) -> None:
    assert result["total"] > 0, result["raw"]
    assert result["failed"] == 0, f"{result['failed']} of {result['total']} requests failed: {result['raw']}"


def test_first_deploy_then_swap_moves_traffic_with_no_failed_request(app, load):
    r = app.deploy("v1")
    assert f"url: {app.url}" in r.stdout
    live = app.live()
    assert live["colour"] == "blue" and live["version"] == "v1"
    assert version_through_nginx(app)["colour"] == "blue"

    lo = load(app.url + "/")
    out = ferry_json(app.config, "deploy", app.images["v2"], "--version", "v2")
    result = lo.stop()
    assert_no_loss(result)
    host = out["hosts"][0]
    assert host["action"] == "deployed" and host["colour"] == "green"
    v = version_through_nginx(app)
    assert v["colour"] == "green" and v["version"] == "v2" and v["release"] == host["release"]
    status = app.status()
    assert status["url"] == app.url
    assert status["hosts"][0]["live"]["release"] == host["release"]
    assert status["hosts"][0]["warm"][0]["colour"] == "blue"  # kept warm for rollback


def test_deploying_the_live_digest_again_is_a_no_op_that_says_so(app):
    app.deploy("v1")
    out = ferry_json(app.config, "deploy", app.images["v1"], "--version", "v1")
    assert out["hosts"][0]["action"] == "none"
    r = app.deploy("v1")
    assert "already live" in r.stdout + r.stderr


def test_in_flight_request_finishes_on_the_old_colour_after_the_swap(app):
    app.deploy("v1")
    result: dict = {}

    def slow():
        try:
            status, _, body = get(app.url + "/slow?s=5", timeout=60)
            result.update(status=status, body=json.loads(body))
        except Exception as e:  # noqa: BLE001 - the assertion below reports it
            result["error"] = repr(e)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(1.0)  # the request is now held by blue
    app.deploy("v2")
    t.join(60)
    assert result.get("status") == 200, result
    assert result["body"]["colour"] == "blue"
    assert version_through_nginx(app)["colour"] == "green"


def test_failed_health_check_leaves_traffic_on_the_live_release(app, load):
    app.deploy("v1")
    before = app.live()
    lo = load(app.url + "/")
    r = app.deploy("unhealthy", check=False)
    assert_no_loss(lo.stop())
    assert r.returncode == 1
    err = r.stderr
    assert "is not healthy" in err and "last status 503" in err and "the database is unreachable" in err
    assert "traffic stayed on the live colour" in err
    assert app.live() == before
    assert version_through_nginx(app)["version"] == "v1"
    # the host is usable: the next deploy goes through
    app.deploy("v2")
    assert version_through_nginx(app)["version"] == "v2"


def test_container_that_exits_at_start_is_reported_with_its_log(app, load):
    app.deploy("v1")
    lo = load(app.url + "/")
    r = app.deploy("crash", check=False)
    assert_no_loss(lo.stop())
    assert r.returncode == 1
    assert "exited at start" in r.stderr and "HELLO_REQUIRED" in r.stderr, r.stderr
    assert app.live()["version"] == "v1"
    host = app.status()["hosts"][0]
    assert host["releases"][0]["outcome"] == "failed"


def test_broken_nginx_template_is_rejected_by_nginx_t_and_the_old_config_keeps_serving(app, load, tmp_path):
    app.deploy("v1")
    broken = tmp_path / "nginx-templates"
    subprocess.run(["cp", "-r", str(os.path.join(os.path.dirname(__file__), "../../../ferry/assets/nginx")), str(broken)], check=True)
    (broken / "proxy.conf.j2").write_text((broken / "proxy.conf.j2").read_text() + "proxy_bogus_directive on;\n")
    lo = load(app.url + "/")
    r = app.deploy("v2", check=False, env={"FERRY_NGINX_TEMPLATES": str(broken)})
    assert_no_loss(lo.stop())
    assert r.returncode == 1
    assert "nginx -t rejected the new configuration" in r.stderr and "proxy_bogus_directive" in r.stderr
    assert version_through_nginx(app)["version"] == "v1"
    app.deploy("v2")  # with the good templates the next deploy works
    assert version_through_nginx(app)["version"] == "v2"


def test_lock_held_by_another_release_stops_the_deploy_and_says_who(app, load):
    app.deploy("v1")
    holder = subprocess.Popen(["sleep", "300"])  # a live "other ferry" on this machine
    try:
        info = {"holder": "alice@ci-runner", "machine": os.uname().nodename, "pid": holder.pid,
                "command": "deploy 2.0", "version": "2.0", "since": "2026-11-26T09:00:00Z"}
        os.makedirs(f"/opt/ferry/{app.name}/lock")
        with open(f"/opt/ferry/{app.name}/lock/info.json", "w") as f:
            json.dump(info, f)
        lo = load(app.url + "/")
        r = app.deploy("v2", check=False)
        assert_no_loss(lo.stop())
        assert r.returncode == 3
        assert "held by alice@ci-runner" in r.stderr and "since 2026-11-26T09:00:00Z" in r.stderr
        assert app.live()["version"] == "v1"
        st = ferry_json(app.config, "lock", "status")["hosts"][0]
        assert st["lock"]["holder"] == "alice@ci-runner" and st["lock"]["stale"] is False
        r = ferry(app.config, "lock", "release", check=False)
        assert r.returncode != 0 and "looks alive" in r.stderr
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: the lock is stale, reported so, and broken by release
    st = ferry_json(app.config, "lock", "status")["hosts"][0]
    assert st["lock"]["stale"] is True and "is gone" in st["lock"]["stale_reason"]
    ferry(app.config, "lock", "release")
    app.deploy("v2")
    assert app.live()["version"] == "v2"


def test_ferry_killed_mid_swap_is_repaired_by_the_next_command(app, load):
    app.deploy("v1")
    lo = load(app.url + "/")
    proc = subprocess.Popen([*FERRY, "-c", str(app.config), "deploy", app.images["v2"], "--version", "v2"],
                            stderr=subprocess.PIPE, text=True)
    seen = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if "swap nginx" in line or not line:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "swap nginx" in seen, seen
    time.sleep(1)
    st = app.status()  # finds the interrupted deploy and repairs it
    result = lo.stop()
    assert_no_loss(result)
    host = st["hosts"][0]
    assert host["repaired"], host
    assert host["pending"] == []
    assert host["live"]["version"] in ("v1", "v2")
    assert host["health"]["ok"]
    assert version_through_nginx(app)["version"] == host["live"]["version"]
    app.deploy("v3")  # and the next deploy goes through
    assert app.live()["version"] == "v3"


def test_registry_refusing_the_pull_leaves_the_live_release(app, load, local_target):
    app.deploy("v1")
    # the same image behind the registry that wants a password, with a wrong one
    image = app.images["v2"].replace(local_target["registry"], local_target["registry_basic"])
    lo = load(app.url + "/")
    r = ferry(app.config, "deploy", image, "--version", "v2", check=False,
              env={"FERRY_REGISTRY_USERNAME": "ferry", "FERRY_REGISTRY_PASSWORD": "wrong"})
    assert_no_loss(lo.stop())
    assert r.returncode == 1
    assert "pull of" in r.stderr and "failed" in r.stderr
    assert app.live()["version"] == "v1"


def test_port_of_the_idle_colour_already_taken_is_reported(app, load):
    app.deploy("v1")
    squatter = subprocess.Popen([sys.executable, "-m", "http.server", str(app.ports["green"]), "--bind", "127.0.0.1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                get(f"http://127.0.0.1:{app.ports['green']}/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        lo = load(app.url + "/")
        r = app.deploy("v2", check=False)
        assert_no_loss(lo.stop())
        assert r.returncode == 1
        assert f"port {app.ports['green']} for green is already taken" in r.stderr
        assert app.live()["version"] == "v1"
    finally:
        squatter.kill()
        squatter.wait()
    app.deploy("v2")
    assert app.live()["version"] == "v2"


def test_history_that_cannot_be_written_stops_before_traffic_moves(app, load, tmp_path):
    app.deploy("v1")
    history = f"/opt/ferry/{app.name}/releases.json"
    # the history file becomes read-only underneath ferry (as a full or read-only disk would)
    subprocess.run(["mount", "--bind", history, history], check=True)
    subprocess.run(["mount", "-o", "remount,ro,bind", history], check=True)
    try:
        lo = load(app.url + "/")
        r = app.deploy("v2", check=False)
        assert_no_loss(lo.stop())
        assert r.returncode == 1
        assert "cannot write" in r.stderr and "releases.json" in r.stderr
        assert app.live()["version"] == "v1"
        assert version_through_nginx(app)["version"] == "v1"
    finally:
        subprocess.run(["umount", history], check=True)
    app.deploy("v2")
    assert app.live()["version"] == "v2"


def test_bad_config_contacts_no_host(app):
    app.config.write_text(app.config.read_text().replace('hosts = ["root@127.0.0.1:2222"]',
                                                         'hosts = ["root@127.0.0.1:2222"]\nhostz = 1'))
    r = app.deploy("v1", check=False)
    assert r.returncode == 2
    assert "deploy: unknown key 'hostz'" in r.stderr
    assert not os.path.exists(f"/opt/ferry/{app.name}")  # nothing was touched on the host


def test_unreachable_host_is_a_clear_error(app):
    app.config.write_text(app.config.read_text().replace("127.0.0.1:2222", "127.0.0.1:2299"))
    r = app.deploy("v1", check=False)
    assert r.returncode == 1
    assert "cannot connect over SSH" in r.stderr


def test_warm_rollback_is_one_reload_and_cold_rollback_redeploys_the_old_digest(app, load, tmp_path):
    app.deploy("v1")
    app.deploy("v2")
    # a warm rollback pulls nothing, so it needs no registry credentials: it works even while
    # the credential helper is broken (a registry outage is when rollbacks happen)
    broken = tmp_path / "docker-config"
    broken.mkdir()
    (broken / "config.json").write_text('{"credsStore": "ferry-test-missing"}')
    lo = load(app.url + "/")
    out = ferry_json(app.config, "rollback", env={"DOCKER_CONFIG": str(broken)})
    assert_no_loss(lo.stop())
    h = out["hosts"][0]
    assert h["action"] == "rolled-back" and h["warm"] is True and h["version"] == "v1"
    assert version_through_nginx(app)["version"] == "v1"
    # two more releases: v1's container is replaced, so going back to it is a gated deploy
    app.deploy("v3")
    app.deploy("v4")
    v1 = next(r for r in app.status()["hosts"][0]["releases"] if r["version"] == "v1" and r["kind"] == "deploy")
    # a cold one must pull: with the helper broken it stops before traffic moves and says why
    r = ferry(app.config, "rollback", "--to", v1["id"], check=False, env={"DOCKER_CONFIG": str(broken)})
    assert r.returncode != 0 and "docker-credential-ferry-test-missing is not on PATH" in r.stderr, r.stderr
    assert version_through_nginx(app)["version"] == "v4"
    assert app.status()["hosts"][0]["lock"] is None
    out = ferry_json(app.config, "rollback", "--to", v1["id"])
    h = out["hosts"][0]
    assert h["version"] == "v1" and h.get("warm") is not True
    assert version_through_nginx(app)["version"] == "v1"


def test_nginx_names_the_answering_colour_to_ferrys_verify_only(app):
    app.deploy("v1")
    port = app.ports[app.live()["colour"]]
    req = urllib.request.Request(app.url + "/healthz", headers={"X-Ferry-Verify": "1"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers["X-Ferry-Upstream"] == f"127.0.0.1:{port}"
    status, headers, _ = get(app.url + "/healthz")
    assert status == 200 and "X-Ferry-Upstream" not in headers  # a user never sees the address


def test_rollback_with_nothing_before_says_so(app):
    app.deploy("v1")
    r = ferry(app.config, "rollback", check=False)
    assert r.returncode == 1 and "no earlier successful release" in r.stderr


def test_five_releases_and_two_rollbacks_under_16_way_load_lose_nothing(app, load):
    app.deploy("v1")
    lo = load(app.url + "/", concurrency=16, max_seconds=600)
    try:
        for v in ("v2", "v3", "v4", "v5", "v6"):
            app.deploy(v)
            assert version_through_nginx(app)["version"] == v
        ferry(app.config, "rollback")
        assert version_through_nginx(app)["version"] == "v5"
        ferry(app.config, "rollback")
        assert version_through_nginx(app)["version"] == "v4"
    finally:
        result = lo.stop()
    assert_no_loss(result)
    assert set(result["codes"]) == {200}, result["raw"]


def test_scripts_release_then_rollback_as_ci_runs_them(app, load):
    """scripts/release builds, pushes and deploys; a one-line change uploads only the source
    layer; scripts/rollback goes back with one reload. All with --json, no terminal."""
    env = {**os.environ, "FERRY_CONFIG": str(app.config)}
    root = os.path.join(os.path.dirname(__file__), "../../..")

    def script(name: str, *args: str) -> dict:
        r = subprocess.run([f"{root}/scripts/{name}", *args, "--json"], capture_output=True, text=True, env=env,
                           stdin=subprocess.DEVNULL, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout)

    first = script("release", "--version", "s1")
    assert first["hosts"][0]["action"] == "deployed" and first["build"]["image"] == first["image"]
    src = app.tmp / "src" / "v1" / "hello" / "__init__.py"
    # unique per run: the registry keeps every layer ever pushed, and a reproducible layer that
    # is already there is (rightly) not uploaded again
    change = f"one line changed at {time.time_ns()}"
    src.write_text(src.read_text().replace("hello from ferry (v1)", f"hello from ferry ({change})"))
    lo = load(app.url + "/")
    second = script("release", "--version", "s2")
    back = script("rollback")
    assert_no_loss(lo.stop())
    uploaded = [layer for layer in second["build"]["layers"] if layer["uploaded"]]
    assert [layer.get("role") for layer in uploaded] == ["source"], second["build"]["layers"]
    assert second["build"]["bytes_uploaded"] < 20_000
    assert back["hosts"][0]["warm"] is True and back["hosts"][0]["version"] == "s1"
    assert version_through_nginx(app)["version"] == "s1"


def test_secrets_reach_the_container_through_a_0600_env_file_and_nowhere_else(app, docker_cli):
    app.config.write_text(app.config.read_text().replace('keep_previous = "10m"',
                                                         'keep_previous = "10m"\nsecrets = ["HELLO_DB_PASSWORD"]'))
    secret = f"s3cret-{time.time_ns()}"
    r = app.deploy("v1", env={"HELLO_DB_PASSWORD": secret})
    env_file = f"/opt/ferry/{app.name}/env"
    assert oct(os.stat(env_file).st_mode & 0o777) == "0o600"
    assert open(env_file).read() == f"HELLO_DB_PASSWORD={secret}\n"
    inspect = json.loads(subprocess.run([*docker_cli, "inspect", f"{app.name}-blue"], capture_output=True,
                                        text=True, check=True).stdout)[0]
    assert f"HELLO_DB_PASSWORD={secret}" in inspect["Config"]["Env"]
    assert secret not in json.dumps(inspect["Config"]["Labels"]) and secret not in " ".join(inspect["Args"])
    assert secret not in r.stdout + r.stderr
    # a secret that is not set stops the deploy before any host is contacted
    assert "HELLO_DB_PASSWORD" not in os.environ
    r = app.deploy("v2", check=False)
    assert r.returncode == 2 and "deploy.secrets: HELLO_DB_PASSWORD is not set" in r.stderr
    assert app.live()["version"] == "v1"


def test_images_beyond_keep_releases_are_pruned_but_never_one_in_use(app, docker_cli):
    app.config.write_text(app.config.read_text().replace('keep_previous = "10m"',
                                                         'keep_previous = "10m"\nkeep_releases = 1'))
    for v in ("v1", "v2", "v3"):
        app.deploy(v)
    out = subprocess.run([*docker_cli, "images", "--digests", "--format", "{{.Digest}}",
                          "127.0.0.1:5000/ferry-test/hello"], capture_output=True, text=True, check=True).stdout
    on_host = set(out.split())
    digest = {v: app.images[v].split("@")[1] for v in ("v1", "v2", "v3")}
    assert digest["v3"] in on_host  # live
    assert digest["v2"] in on_host  # warm: still in use by the previous colour
    assert digest["v1"] not in on_host  # beyond keep_releases and unused


def test_a_failure_on_one_host_stops_there_and_says_which_host_has_which_release(app):
    app.config.write_text(app.config.read_text().replace(
        'hosts = ["root@127.0.0.1:2222"]', 'hosts = ["root@127.0.0.1:2222", "root@127.0.0.1:2299", "root@127.0.0.1:2298"]'))
    r = app.deploy("v1", check=False)
    assert r.returncode == 1
    err = r.stderr
    assert "root@127.0.0.1:2299: cannot connect over SSH" in err
    assert "[stopped at host 2/3; done: root@127.0.0.1:2222: " in err
    assert "untouched: root@127.0.0.1:2298]" in err
    assert "host 3/3" not in err  # never contacted

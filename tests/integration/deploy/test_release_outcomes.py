"""What a release reports and leaves behind, on the local target: the --json outcome of a
failed deploy, post-deploy hooks (their environment, and exit 4 when one fails after the
release is live), keep_previous = 0 (the old colour stopped, nothing lost), and an
authenticated pull that leaves no credentials on the host."""

from __future__ import annotations

import base64
import glob
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from .conftest import ferry, ferry_json

pytestmark = pytest.mark.integration

HOST = "root@127.0.0.1:2222"


def version_through_nginx(app) -> dict:
    with urllib.request.urlopen(app.url + "/version", timeout=30) as r:
        return json.loads(r.read().decode())


def assert_no_loss(result: dict) -> None:
    assert result["total"] > 0, result["raw"]
    assert result["failed"] == 0, f"{result['failed']} of {result['total']} requests failed: {result['raw']}"


def set_deploy(app, *lines: str, keep_previous: bool = True) -> None:
    """Add keys to the app's [deploy] table (in place of keep_previous unless ``keep_previous``)."""
    anchor = 'keep_previous = "10m"'
    text = app.config.read_text()
    assert anchor in text
    app.config.write_text(text.replace(anchor, "\n".join((anchor, *lines) if keep_previous else lines), 1))


# --- the outcome of a failed deploy, as JSON -------------------------------------------------------

def test_json_of_a_failed_deploy_names_the_failed_host_and_its_still_live_release(app, load):
    app.deploy("v1")
    before = app.live()
    lo = load(app.url + "/")
    r = ferry(app.config, "deploy", app.images["unhealthy"], "--version", "unhealthy", "--json", check=False)
    assert_no_loss(lo.stop())
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["error"] == "HealthCheckFailed"
    assert doc["failed_host"] == HOST
    assert doc["hosts"] == [] and doc["untouched"] == []
    live = doc["failed_host_live"]
    assert (live["release"], live["version"], live["colour"], live["digest"]) == (
        before["release"], "v1", before["colour"], before["digest"])
    # the human line is unchanged, and what the JSON says is live is what serves
    assert "is not healthy" in r.stderr and "[stopped at host 1/1]" in r.stderr
    assert version_through_nginx(app)["release"] == live["release"]


def test_json_of_a_release_stopped_at_the_second_host_says_which_host_has_which_release(app):
    app.config.write_text(app.config.read_text().replace(
        f'hosts = ["{HOST}"]', f'hosts = ["{HOST}", "root@127.0.0.1:2299", "root@127.0.0.1:2298"]'))
    r = ferry(app.config, "deploy", app.images["v1"], "--version", "v1", "--json", check=False)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["failed_host"] == "root@127.0.0.1:2299"
    assert "cannot connect over SSH" in doc["message"]
    assert [(h["host"], h["action"], h["version"]) for h in doc["hosts"]] == [(HOST, "deployed", "v1")]
    assert doc["untouched"] == ["root@127.0.0.1:2298"]
    assert "failed_host_live" not in doc  # never reached: nothing observed there
    assert version_through_nginx(app)["release"] == doc["hosts"][0]["release"]


# --- post-deploy hooks -----------------------------------------------------------------------------

def test_post_deploy_hook_sees_the_releases_version_digest_and_url(app, tmp_path):
    seen = tmp_path / "hook.env"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"env | grep '^FERRY_' | sort > {seen}\n")
    set_deploy(app, f'post_deploy = ["sh {hook}"]')
    out = ferry_json(app.config, "deploy", app.images["v2"], "--version", "v2")
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines())
    assert env["FERRY_VERSION"] == "v2"
    assert env["FERRY_DIGEST"] == app.images["v2"].split("@", 1)[1]
    assert env["FERRY_IMAGE"] == app.images["v2"]
    assert env["FERRY_URL"] == app.url
    assert env["FERRY_APP"] == app.name
    assert env["FERRY_HOSTS"] == HOST
    assert env["FERRY_RELEASE"] == out["hosts"][0]["release"]
    assert out["hooks"] == [{"command": f"sh {hook}", "exit_code": 0}]


def test_a_failing_post_deploy_hook_exits_4_with_the_release_live(app, tmp_path):
    app.deploy("v1")
    hook = tmp_path / "smoke.sh"
    hook.write_text("echo 'smoke test: GET /orders answered 500' >&2\nexit 1\n")
    set_deploy(app, f'post_deploy = ["sh {hook}"]')
    r = ferry(app.config, "deploy", app.images["v2"], "--version", "v2", "--json", check=False)
    assert r.returncode == 4, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"ferry: error: post-deploy hook `sh {hook}` failed (exit 1): "), line
    assert "smoke test: GET /orders answered 500" in line and "release itself is live" in line
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["error"] == "PostDeployHookFailed"
    assert doc["failed_hook"] == f"sh {hook}" and doc["hooks"] == [{"command": f"sh {hook}", "exit_code": 1}]
    released = doc["hosts"][0]
    assert released["host"] == HOST and released["version"] == "v2"
    # released: nginx serves the new release and the history records it as a success
    v = version_through_nginx(app)
    assert v["version"] == "v2" and v["release"] == released["release"]
    host = app.status()["hosts"][0]
    assert host["live"]["release"] == released["release"]
    assert host["releases"][0]["id"] == released["release"] and host["releases"][0]["outcome"] == "success"


# --- keep_previous = 0 -----------------------------------------------------------------------------

def test_keep_previous_0_stops_the_old_colour_after_the_swap_and_loses_nothing(app, load, docker_cli):
    set_deploy(app, "keep_previous = 0", keep_previous=False)
    app.deploy("v1")

    def running(colour: str) -> bool:
        r = subprocess.run([*docker_cli, "inspect", "--format", "{{.State.Running}}", f"{app.name}-{colour}"],
                           capture_output=True, text=True, check=True)
        return r.stdout.strip() == "true"

    lo = load(app.url + "/")
    out = ferry_json(app.config, "deploy", app.images["v2"], "--version", "v2")
    assert_no_loss(lo.stop())
    assert out["hosts"][0]["colour"] == "green"
    assert running("green") and not running("blue")
    ps = subprocess.run([*docker_cli, "ps", "--format", "{{.Names}}", "--filter", f"label=dev.ferry.app={app.name}"],
                        capture_output=True, text=True, check=True).stdout.split()
    assert ps == [f"{app.name}-green"]
    assert app.status()["hosts"][0]["warm"] == []
    # the stopped container is no obstacle: the next release takes blue's place, again with no loss
    lo = load(app.url + "/")
    out = ferry_json(app.config, "deploy", app.images["v3"], "--version", "v3")
    assert_no_loss(lo.stop())
    assert out["hosts"][0]["colour"] == "blue" and running("blue") and not running("green")
    assert version_through_nginx(app)["version"] == "v3"


# --- an authenticated pull -------------------------------------------------------------------------

def files_holding(secrets: list[str]) -> set[str]:
    """Files where docker could have written registry credentials on this host (the host is this
    machine, reached over sshd): root's docker config and `mktemp -d` directories in /tmp."""
    found = set()
    for top in ["/root/.docker", *glob.glob("/tmp/tmp.*")]:
        for dirpath, _, names in os.walk(top):
            for n in names:
                p = os.path.join(dirpath, n)
                try:
                    if os.path.getsize(p) > 1_000_000:
                        continue
                    data = Path(p).read_bytes()
                except OSError:
                    continue
                if any(s.encode() in data for s in secrets):
                    found.add(p)
    return found


def test_authenticated_pull_deploys_and_leaves_no_credentials_on_the_host(app, local_target, docker_cli):
    user, password = local_target["registry_user"], local_target["registry_password"]
    # docker login stores base64(user:password), not the password itself
    secrets = [password, base64.b64encode(f"{user}:{password}".encode()).decode()]
    image = app.images["v3"].replace(local_target["registry"], local_target["registry_basic"])
    assert image.startswith("127.0.0.1:5001/")
    # the host must ask the registry for this reference (not find it already pulled)
    subprocess.run([*docker_cli, "rmi", image], capture_output=True)
    before = files_holding(secrets)
    r = ferry(app.config, "deploy", image, "--version", "v3",
              env={"FERRY_REGISTRY_USERNAME": user, "FERRY_REGISTRY_PASSWORD": password})
    assert password not in r.stdout + r.stderr
    live = app.live()
    assert live["version"] == "v3" and live["digest"] == image.split("@", 1)[1]
    assert app.status()["hosts"][0]["releases"][0]["image"] == image
    assert version_through_nginx(app)["version"] == "v3"
    leaked = files_holding(secrets) - before
    assert not leaked, f"registry credentials left on the host in {sorted(leaked)}"
    assert not any(p.startswith("/root/.docker") for p in files_holding(secrets))

"""What a release across hosts reports when it stops part way, and what post-deploy hooks see
and do (no host involved: the per-host deployer is replaced by a fake)."""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

from ferry.config import parse
from ferry.deploy import release as R
from ferry.deploy.host import HostSpec
from ferry.deploy.runner import Container, HostState
from ferry.fleet import connect as fleet_connect
from ferry.fleet import hosts as fleet_hosts
from ferry.fleet.hosts import HostTarget
from ferry.errors import FerryError, HealthCheckFailed, HostError, PostDeployHookFailed
from ferry.progress import NULL

ROOT = Path(__file__).resolve().parents[3]
HOSTS = ["root@web-1.test", "root@web-2.test", "root@web-3.test"]


def cfg(**deploy):
    doc = tomllib.loads((ROOT / "ferry.toml").read_text())
    doc["deploy"].update(deploy)
    return parse(doc, ROOT / "ferry.toml")


class FakeDeployer:
    """Stands in for HostDeployer: host 1 deploys, host 2 fails as scripted, host 3 is never reached."""

    fail_with: type[FerryError] = HostError
    live: Container | None = None
    observe: bool = True

    def __init__(self, host, cfg, progress, **kw):
        self.name = host
        self.observed = None

    def deploy(self, _target, run_release_command: bool = False) -> dict:
        if self.name == "root@web-2.test":
            if self.observe:
                self.observed = HostState(history=None, live_colour=self.live.colour if self.live else None,
                                          containers={self.live.colour: self.live} if self.live else {})
            raise self.fail_with(f"{self.name}: hello-green is not healthy", "traffic stayed")
        return {"host": self.name, "action": "deployed", "release": "r-new", "colour": "green"}


@pytest.fixture
def fake_hosts(monkeypatch):
    monkeypatch.setattr(fleet_hosts, "resolve_hosts", lambda c, p=NULL: [HostTarget(HostSpec.parse(h)) for h in HOSTS])
    monkeypatch.setattr(fleet_connect, "connect", lambda c, t, p: contextlib.nullcontext(str(t)))
    monkeypatch.setattr(R, "HostDeployer", FakeDeployer)
    monkeypatch.setattr(FakeDeployer, "live", Container("blue", "hello-blue", True, "r-old", "1.0", "sha256:aa", "Up"))
    return FakeDeployer


def test_a_stop_part_way_attaches_done_failed_untouched_and_the_failed_hosts_live_release(fake_hosts, monkeypatch):
    monkeypatch.setattr(fake_hosts, "fail_with", HealthCheckFailed)
    with pytest.raises(HealthCheckFailed) as ei:
        R.across_hosts(cfg(), NULL, lambda d, first: d.deploy(None), "deploy")
    e = ei.value
    # the human line is as before
    assert e.message == ("root@web-2.test: hello-green is not healthy [stopped at host 2/3; "
                         "done: root@web-1.test: r-new; untouched: root@web-3.test]")
    assert e.details == {
        "hosts": [{"host": "root@web-1.test", "action": "deployed", "release": "r-new", "colour": "green"}],
        "failed_host": "root@web-2.test",
        "untouched": ["root@web-3.test"],
        "failed_host_live": {"colour": "blue", "name": "hello-blue", "running": True, "release": "r-old",
                             "version": "1.0", "digest": "sha256:aa", "state": "Up"},
    }
    doc = {**e.to_json(), "ok": False}
    json.dumps(doc)  # a JSON document as it is
    assert doc["error"] == "HealthCheckFailed" and doc["failed_host"] == "root@web-2.test"


def test_nothing_live_is_null_and_a_host_never_observed_has_no_live_key(fake_hosts, monkeypatch):
    monkeypatch.setattr(fake_hosts, "live", None)
    with pytest.raises(HostError) as ei:
        R.across_hosts(cfg(), NULL, lambda d, first: d.deploy(None), "deploy")
    assert ei.value.details["failed_host_live"] is None

    monkeypatch.setattr(fake_hosts, "observe", False)
    with pytest.raises(HostError) as ei:
        R.across_hosts(cfg(), NULL, lambda d, first: d.deploy(None), "deploy")
    assert "failed_host_live" not in ei.value.details


def test_an_unreachable_first_host_reports_no_done_host_and_everything_after_untouched(monkeypatch):
    monkeypatch.setattr(fleet_hosts, "resolve_hosts", lambda c, p=NULL: [HostTarget(HostSpec.parse(h)) for h in HOSTS])

    def unreachable(c, t, p):
        raise HostError(f"{t}: cannot connect over SSH")

    monkeypatch.setattr(fleet_connect, "connect", unreachable)
    with pytest.raises(HostError) as ei:
        R.across_hosts(cfg(), NULL, lambda d, first: d.deploy(None), "deploy")
    assert ei.value.details == {"hosts": [], "failed_host": "root@web-1.test",
                                "untouched": ["root@web-2.test", "root@web-3.test"]}


RESULT = {"ok": True, "url": "http://127.0.0.1:8080", "version": "1.4.2", "digest": "sha256:" + "b" * 64,
          "image": "127.0.0.1:5000/hello@sha256:" + "b" * 64,
          "hosts": [{"host": "root@web-1.test", "release": "r1"}, {"host": "root@web-2.test", "release": "r2"}]}


def py(code: str) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def test_hooks_run_in_order_with_the_releases_facts_in_their_environment(tmp_path):
    out = tmp_path / "env.json"
    c = cfg(post_deploy=[py(f"import json, os; json.dump({{k: v for k, v in os.environ.items() "
                            f"if k.startswith('FERRY_')}}, open({str(out)!r}, 'w'))"), "true"])
    ran = R.run_hooks(c, RESULT, NULL)
    assert [h["exit_code"] for h in ran] == [0, 0]
    env = json.loads(out.read_text())
    assert {k: env[k] for k in ("FERRY_APP", "FERRY_VERSION", "FERRY_IMAGE", "FERRY_DIGEST", "FERRY_RELEASE",
                                "FERRY_HOSTS", "FERRY_URL")} == {
        "FERRY_APP": c.app.name, "FERRY_VERSION": "1.4.2", "FERRY_IMAGE": RESULT["image"],
        "FERRY_DIGEST": RESULT["digest"], "FERRY_RELEASE": "r2", "FERRY_HOSTS": "root@web-1.test,root@web-2.test",
        "FERRY_URL": c.url}


def test_a_failing_hook_is_its_own_error_exit_4_with_its_output_and_what_is_live(tmp_path):
    after = tmp_path / "after"
    c = cfg(post_deploy=["echo checking /version; echo 'smoke test: got 500' >&2; exit 3", f"touch {after}"])
    with pytest.raises(PostDeployHookFailed) as ei:
        R.run_hooks(c, RESULT, NULL)
    e = ei.value
    assert e.exit_code == 4
    assert e.message.startswith("post-deploy hook `echo checking /version; echo 'smoke test: got 500' >&2; exit 3` "
                                "failed (exit 3): ")
    assert "checking /version" in e.message and "smoke test: got 500" in e.message
    assert "\n" not in str(e)
    assert "[released: root@web-1.test: r1, root@web-2.test: r2]" in e.message
    assert "release itself is live" in e.hint
    assert e.details["hosts"] == RESULT["hosts"] and e.details["failed_hook"] == c.deploy.post_deploy[0]
    assert e.details["hooks"] == [{"command": c.deploy.post_deploy[0], "exit_code": 3}]
    assert "ok" not in e.details
    assert not after.exists()  # the hooks after a failed one do not run


def test_a_hook_that_outlives_its_timeout_is_killed_and_reported(tmp_path):
    c = cfg(post_deploy=["echo started; exec sleep 60"])
    with pytest.raises(PostDeployHookFailed) as ei:
        R.run_hooks(c, RESULT, NULL, timeout=0.5)
    assert "still running after" in ei.value.message and "killed" in ei.value.message
    assert ei.value.details["hooks"] == [{"command": "echo started; exec sleep 60", "exit_code": None}]

"""A release to TWO hosts named by a Pulumi stack's outputs, behind one load balancer target
group (boto3 against moto's server): one host at a time leaves the group before its turn and is
back (healthy) before the next leaves, so the group never has both out at once.

Both hosts are the local target's sshd, reached under two names (127.0.0.1 and localhost), so
ferry sees two distinct deploy targets (HostSpec differs: failed_host / hosts name them apart)
but they share one app directory on one machine. Consequences the tests are built around:
- on a successful release host 2 finds host 1's release already live and does nothing (no
  second swap), yet it still leaves and rejoins the balancer around that no-op;
- a deploy cannot fail on host 2 alone by itself (whatever host 1 made live, host 2 sees live),
  so the failure test makes host 2 fail deterministically: at the moment moto handles host 2's
  deregistration (before ferry gets the answer, so before it touches host 2's lock) the test
  takes the app's deploy lock as another live deployer; host 2 then fails with LockHeld.
The order is read twice: from ferry's progress (stderr) and from moto's own record of the
deregister/register calls, checked at each call against the group's membership at that time.
"""

from __future__ import annotations

import json
import os
import shutil
import threading

import pytest

from .conftest import balanced_stack_for, ferry

pytestmark = pytest.mark.integration

HOST1 = "root@127.0.0.1:2222"
HOST2 = "root@localhost:2222"


@pytest.fixture
def two_host_stack(moto_endpoint, app, tmp_path, monkeypatch):
    from moto.elbv2.models import ELBv2Backend

    # both are this machine's sshd (it listens on 127.0.0.1:2222 only); host 2 has no public IP
    # but a public DNS name, which ferry connects to instead
    stack = balanced_stack_for(moto_endpoint, app, tmp_path / "stack-outputs.json", "t-two-hosts", [
        {"name": "web-1", "publicIp": "127.0.0.1", "privateIp": "10.42.0.11"},
        {"name": "web-2", "publicDns": "localhost", "privateIp": "10.42.0.12"},
    ])
    ids, arn = stack.ids, stack.arn

    # moto's side of the story: every (de)registration ferry makes, with the group's members
    # right after it; and an optional hook run inside moto before it answers a deregistration
    calls: list[tuple[str, str, frozenset]] = []
    hooks: dict[str, callable] = {}
    real_dereg, real_reg = ELBv2Backend.deregister_targets, ELBv2Backend.register_targets
    mu = threading.Lock()

    def members(backend) -> frozenset:
        return frozenset(backend.target_groups[arn].targets)

    def deregister_targets(self, target_group_arn, instances):
        real_dereg(self, target_group_arn, instances)
        if target_group_arn == arn:
            with mu:
                for t in instances:
                    calls.append(("deregister", t["Id"], members(self)))
                    if hook := hooks.pop(t["Id"], None):
                        hook()

    def register_targets(self, target_group_arn, instances):
        real_reg(self, target_group_arn, instances)
        if target_group_arn == arn:
            with mu:
                calls.extend(("register", t["Id"], members(self)) for t in instances)

    monkeypatch.setattr(ELBv2Backend, "deregister_targets", deregister_targets)
    monkeypatch.setattr(ELBv2Backend, "register_targets", register_targets)

    return ids, stack.states, calls, hooks


def positions(err: str, *needles: str) -> list[int]:
    """Where each needle first occurs in ``err`` at or after the previous one (in order)."""
    at, out = 0, []
    for n in needles:
        i = err.find(n, at)
        assert i >= 0, f"{n!r} not found after position {at} in:\n{err[-4000:]}"
        out.append(i)
        at = i + len(n)
    return out


def test_two_hosts_leave_the_balancer_one_at_a_time(app, two_host_stack):
    (first, second), states, calls, _ = two_host_stack
    r = ferry(app.config, "deploy", app.images["v1"], "--version", "v1", "--json", timeout=600)
    err = r.stderr
    out = json.loads(r.stdout)
    assert "hosts from the exported stack outputs" in err

    # two distinct deploy targets, in the stack's order
    assert [h["host"] for h in out["hosts"]] == [HOST1, HOST2]
    # host 1 really deploys; host 2 is the same machine, so it finds v1 already live
    assert out["hosts"][0]["action"] == "deployed" and out["hosts"][0]["version"] == "v1"
    assert out["hosts"][1]["action"] == "none" and out["hosts"][1]["release"] == out["hosts"][0]["release"]

    # progress: host 1 out -> swap -> back in, and only then host 2 out -> (nothing to do) -> back in
    positions(err,
              "host 1/2: " + HOST1,
              f"[{HOST1}] deregister {first} from the load balancer",
              f"[{HOST1}] swap nginx",
              f"[{HOST1}] register {first} with the load balancer",
              f"{first} in t-two-hosts: healthy",
              "host 2/2: " + HOST2,
              f"[{HOST2}] deregister {second} from the load balancer",
              "already live",
              f"[{HOST2}] register {second} with the load balancer",
              f"{second} in t-two-hosts: healthy")
    assert err.count("swap nginx") == 1  # the no-op on host 2 does not touch nginx
    assert f"deregister {second}" not in err[:err.index(f"register {first} with the load balancer")]

    # moto's record: exactly these four calls, in this order, and at each deregistration the
    # other host was still in the group (never both out)
    assert [(op, i) for op, i, _ in calls] == [("deregister", first), ("register", first),
                                               ("deregister", second), ("register", second)]
    assert calls[0][2] == {second} and calls[2][2] == {first}
    assert all(m == {first, second} for op, _, m in calls if op == "register")
    assert states() == {first: "healthy", second: "healthy"}


def test_a_failure_on_host_2_keeps_host_1_on_the_new_release_and_puts_host_2_back(app, two_host_stack):
    from ferry.deploy.lock import LockInfo

    (first, second), states, calls, hooks = two_host_stack
    ferry(app.config, "deploy", app.images["v1"], "--version", "v1", timeout=600)
    calls.clear()

    lock_dir = f"/opt/ferry/{app.name}/lock"

    def another_deployer_takes_the_lock():
        # runs inside moto while it handles host 2's deregistration: ferry is waiting for the
        # answer, so it has not yet tried host 2's lock; this process is alive, so the lock is not stale
        os.mkdir(lock_dir)
        info = LockInfo.mine("deploy", "other")
        info = LockInfo("someone-else@" + info.machine, info.machine, info.pid, info.command, info.version, info.since)
        with open(f"{lock_dir}/info.json", "w") as f:
            json.dump(info.to_json(), f)

    hooks[second] = another_deployer_takes_the_lock
    try:
        r = ferry(app.config, "deploy", app.images["v2"], "--version", "v2", "--json", check=False, timeout=600)
    finally:
        shutil.rmtree(lock_dir, ignore_errors=True)
    assert not hooks, "host 2 was never deregistered"
    doc = json.loads(r.stdout)
    assert r.returncode == 3 and doc["ok"] is False and doc["error"] == "LockHeld", r.stderr[-3000:]

    # the error names host 2 as the failed one, host 1 (on v2) as done, nothing untouched
    assert doc["failed_host"] == HOST2
    assert [h["host"] for h in doc["hosts"]] == [HOST1]
    assert doc["hosts"][0]["action"] == "deployed" and doc["hosts"][0]["version"] == "v2"
    assert doc["untouched"] == []
    assert "[stopped at host 2/2; done: " + HOST1 + ": " + doc["hosts"][0]["release"] + "]" in doc["message"]

    # host 2 went back into the group after its failure; both serve
    err = r.stderr
    positions(err,
              f"[{HOST1}] deregister {first} from the load balancer",
              f"[{HOST1}] swap nginx",
              f"[{HOST1}] register {first} with the load balancer",
              f"[{HOST2}] deregister {second} from the load balancer",
              f"[{HOST2}] register {second} with the load balancer")
    assert [(op, i) for op, i, _ in calls] == [("deregister", first), ("register", first),
                                               ("deregister", second), ("register", second)]
    assert calls[0][2] == {second} and calls[2][2] == {first}
    assert states() == {first: "healthy", second: "healthy"}

    # host 1 kept the new release: v2 is what this machine (host 1) serves
    site = ferry(app.config, "status", "--json", check=False)
    st = json.loads(site.stdout)
    assert [h["host"] for h in st["hosts"]] == [HOST1, HOST2]
    assert st["hosts"][0]["live"]["version"] == "v2"
    assert st["hosts"][0]["live"]["release"] == doc["hosts"][0]["release"]

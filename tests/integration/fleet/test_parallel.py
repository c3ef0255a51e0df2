"""deploy.parallel on the local target, reached under three names (127.0.0.1, localhost, 127.1):
ferry sees three hosts, but they are one machine with one app directory, one Docker engine and
one nginx. That is what this test is built around (independent hosts' batching is unit-tested
in tests/unit/fleet/test_batches.py):

- with parallel = 2 the first two names are worked on at the same time: both reach the machine
  at once, so one takes the app's deploy lock and releases, the other is refused by that lock;
- the refused one stops further batches: the third name is never touched;
- the error says which host has which release (hosts, failed_host, untouched), and traffic is
  on the release the winner made live;
- with parallel = 1 (the default) the same three names go one after another: the second and
  third find the release already live and do nothing.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration
NAMES = ["root@127.0.0.1:2222", "root@localhost:2222", "root@127.1:2222"]


def test_parallel_two_touches_two_hosts_at_once_and_a_failure_stops_the_next_batch(app):
    app.write(hosts=NAMES, deploy_extra="parallel = 2\n")
    r = app.deploy("--json", check=False)
    assert r.returncode != 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False
    # one of the first batch released, the other met its lock: they ran at the same time
    done = [h["host"] for h in doc["hosts"]]
    assert sorted(done + [doc["failed_host"]]) == sorted(NAMES[:2]), doc
    assert doc["untouched"] == [NAMES[2]]
    assert "lock" in doc["message"].lower() or doc["error"] == "LockHeld", doc["message"]
    assert f"untouched: {NAMES[2]}" in r.stderr and f"done: {done[0]}: " in r.stderr
    # traffic is on what the winner made live
    live = app.status()["hosts"][0]["live"]
    assert live["release"] == doc["hosts"][0]["release"] and live["running"]


def test_parallel_one_goes_host_by_host(app):
    app.write(hosts=NAMES)
    doc = json.loads(app.deploy("--json").stdout)
    assert [h["host"] for h in doc["hosts"]] == NAMES
    assert [h["action"] for h in doc["hosts"]] == ["deployed", "none", "none"]


def test_parallel_hosts_behind_the_balancer_leave_it_together_and_are_all_back_after(app, moto_endpoint, tmp_path,
                                                                                     monkeypatch):
    """Two stack hosts in one moto target group, parallel = 2: both leave the group before
    either swaps (that is what parallel means), and both are back in it afterwards, the one
    that met the lock too (its live colour still serves)."""
    import threading

    from moto.elbv2.models import ELBv2Backend

    from tests.integration.deploy.conftest import balanced_stack_for

    app.write(deploy_extra="parallel = 2\n")
    stack = balanced_stack_for(moto_endpoint, app, tmp_path / "stack-outputs.json", "fleet-parallel", [
        {"name": "web-1", "publicIp": "127.0.0.1", "privateIp": "10.42.0.11"},
        {"name": "web-2", "publicDns": "localhost", "privateIp": "10.42.0.12"},
    ])
    first, second = stack.ids[:2]
    calls: list[tuple[str, str, frozenset]] = []
    mu = threading.Lock()
    real_dereg, real_reg = ELBv2Backend.deregister_targets, ELBv2Backend.register_targets

    def record(op, real):
        def wrapped(self, target_group_arn, instances):
            real(self, target_group_arn, instances)
            if target_group_arn == stack.arn:
                with mu:
                    members = frozenset(self.target_groups[stack.arn].targets)
                    calls.extend((op, t["Id"], members) for t in instances)
        return wrapped

    monkeypatch.setattr(ELBv2Backend, "deregister_targets", record("deregister", real_dereg))
    monkeypatch.setattr(ELBv2Backend, "register_targets", record("register", real_reg))

    r = app.deploy("--json", check=False)
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["untouched"] == [], doc  # one host met the other's lock
    ops = [(op, i) for op, i, _ in calls]
    # both out before either is back: the second deregistration saw an empty group
    assert sorted(ops[:2]) == sorted([("deregister", first), ("deregister", second)]), ops
    assert calls[1][2] == frozenset()
    assert sorted(ops[2:]) == sorted([("register", first), ("register", second)]), ops
    assert stack.states() == {first: "healthy", second: "healthy"}

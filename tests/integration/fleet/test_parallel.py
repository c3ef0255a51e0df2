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

"""deploy.parallel as pure logic: which hosts go together, what a failure stops, and what the
release's error then says (fake hosts: no SSH)."""

from __future__ import annotations

import contextlib
import threading
import tomllib
from pathlib import Path

import pytest

from ferry.config import parse
from ferry.deploy import release as R
from ferry.deploy.host import HostSpec
from ferry.errors import ConfigError, HealthCheckFailed
from ferry.fleet import connect as fleet_connect
from ferry.fleet import hosts as fleet_hosts
from ferry.fleet.connect import batches, run_on_hosts
from ferry.fleet.hosts import HostTarget, select
from ferry.progress import NULL

ROOT = Path(__file__).resolve().parents[3]
NAMES = [f"root@web-{i}.test" for i in range(1, 6)]
TARGETS = [HostTarget(HostSpec.parse(h)) for h in NAMES]


def cfg(**deploy):
    doc = tomllib.loads((ROOT / "tests" / "unit" / "fleet" / "ferry.toml").read_text())
    doc["deploy"].update(deploy)
    return parse(doc, ROOT / "ferry.toml")


@pytest.mark.parametrize("parallel, first_alone, expected", [
    (1, False, [[1], [2], [3], [4], [5]]),
    (2, False, [[1, 2], [3, 4], [5]]),
    (5, False, [[1, 2, 3, 4, 5]]),
    (9, False, [[1, 2, 3, 4, 5]]),
    # the release command's host goes alone: no other host moves before the migration is done
    (2, True, [[1], [2, 3], [4, 5]]),
    (1, True, [[1], [2], [3], [4], [5]]),
])
def test_hosts_are_batched_in_order_parallel_at_a_time(parallel, first_alone, expected):
    assert batches([1, 2, 3, 4, 5], parallel, first_alone) == expected


def test_no_hosts_is_no_batch_and_parallel_below_one_is_refused():
    assert batches([], 3, True) == []
    with pytest.raises(ValueError):
        batches([1], 0)


def test_parallel_below_one_is_a_config_error():
    with pytest.raises(ConfigError, match="deploy.parallel"):
        cfg(parallel=0)


class Fleet:
    """Fake hosts: records which hosts are in flight together; fails the ones named in ``fail``."""

    def __init__(self, monkeypatch, fail=(), parallel_barrier: int = 0):
        self.fail = set(fail)
        self.active: set[str] = set()
        self.together: list[frozenset] = []
        self.started: list[str] = []
        self.mu = threading.Lock()
        self.barrier = threading.Barrier(parallel_barrier) if parallel_barrier > 1 else None
        monkeypatch.setattr(fleet_hosts, "resolve_hosts", lambda c, p=NULL: list(TARGETS))
        monkeypatch.setattr(fleet_connect, "connect", lambda c, t, p: contextlib.nullcontext(str(t)))

    def action(self, target, host):
        with self.mu:
            self.started.append(host)
            self.active.add(host)
            self.together.append(frozenset(self.active))
        try:
            if self.barrier:
                self.barrier.wait(timeout=10)  # both of a batch are in flight at once
            if host in self.fail:
                raise HealthCheckFailed(f"{host}: hello-green is not healthy", "traffic stayed")
            return {"host": host, "release": "r-new"}
        finally:
            with self.mu:
                self.active.discard(host)


def test_parallel_two_runs_two_hosts_at_once_and_never_three(monkeypatch):
    f = Fleet(monkeypatch, parallel_barrier=2)
    run = run_on_hosts(cfg(), f.action, NULL, parallel=2, targets=TARGETS[:4])
    assert run.ok and [r["host"] for r in run.results] == NAMES[:4]
    assert max(len(s) for s in f.together) == 2
    assert frozenset(NAMES[:2]) in f.together and frozenset(NAMES[2:4]) in f.together


def test_a_failure_lets_its_batch_finish_and_stops_the_batches_after_it(monkeypatch):
    f = Fleet(monkeypatch, fail={NAMES[2]})
    run = run_on_hosts(cfg(), f.action, NULL, parallel=2)
    # batch [1, 2] done, batch [3, 4]: 3 failed, 4 finished its swap; batch [5] never started
    assert [t for t, _ in run.done] == TARGETS[:2] + [TARGETS[3]]
    assert [t for t, _ in run.failed] == [TARGETS[2]]
    assert run.untouched == (TARGETS[4],)
    assert NAMES[4] not in f.started


def test_keep_going_looks_at_every_host(monkeypatch):
    f = Fleet(monkeypatch, fail={NAMES[0]})
    run = run_on_hosts(cfg(), f.action, NULL, keep_going=True)
    assert len(run.done) == 4 and [t for t, _ in run.failed] == [TARGETS[0]] and run.untouched == ()


def test_an_unexpected_error_is_raised_as_it_is_after_its_batch(monkeypatch):
    f = Fleet(monkeypatch)

    def action(target, host):
        if host == NAMES[1]:
            raise KeyError("bug")
        return f.action(target, host)

    with pytest.raises(KeyError):
        run_on_hosts(cfg(), action, NULL, parallel=2)
    assert f.started == [NAMES[0]]


class FakeDeployer:
    def __init__(self, host, cfg, progress, **kw):
        self.name = host
        self.observed = None
        self.kw = kw

    first_calls: list = []

    def deploy(self, target, run_release_command: bool = False) -> dict:
        FakeDeployer.first_calls.append((self.name, run_release_command))
        if self.name in FakeDeployer.fail:
            raise HealthCheckFailed(f"{self.name}: hello-green is not healthy", "traffic stayed")
        return {"host": self.name, "action": "deployed", "release": "r-new", "colour": "green"}

    fail: set = set()


@pytest.fixture
def deployers(monkeypatch):
    Fleet(monkeypatch)
    monkeypatch.setattr(R, "HostDeployer", FakeDeployer)
    monkeypatch.setattr(FakeDeployer, "first_calls", [])
    monkeypatch.setattr(FakeDeployer, "fail", set())
    return FakeDeployer


def test_the_release_command_runs_on_the_first_host_only_and_alone(deployers):
    r = R.across_hosts(cfg(parallel=2), NULL, lambda d, first: d.deploy(None, run_release_command=first), "deploy",
                       parallel=2, first_alone=True)
    assert [h["host"] for h in r["hosts"]] == NAMES
    assert sorted(deployers.first_calls) == sorted([(NAMES[0], True)] + [(n, False) for n in NAMES[1:]])
    assert deployers.first_calls[0] == (NAMES[0], True)  # before any other host started


def test_a_parallel_stop_names_done_failed_and_untouched_hosts(deployers):
    deployers.fail = {NAMES[2]}
    with pytest.raises(HealthCheckFailed) as ei:
        R.across_hosts(cfg(), NULL, lambda d, first: d.deploy(None), "deploy", parallel=2)
    e = ei.value
    # host 4 shared host 3's batch: it finished, and the error says so; host 5 was never touched
    assert e.message == ("root@web-3.test: hello-green is not healthy [stopped at host 3/5; "
                         "done: root@web-1.test: r-new; root@web-2.test: r-new; root@web-4.test: r-new; "
                         "untouched: root@web-5.test]")
    assert e.details["failed_host"] == NAMES[2] and e.details["untouched"] == [NAMES[4]]
    assert [h["host"] for h in e.details["hosts"]] == [NAMES[0], NAMES[1], NAMES[3]]
    assert "failed_hosts" not in e.details


def test_two_failures_in_one_batch_are_both_named(deployers):
    deployers.fail = {NAMES[2], NAMES[3]}
    with pytest.raises(HealthCheckFailed) as ei:
        R.across_hosts(cfg(), NULL, lambda d, first: d.deploy(None), "deploy", parallel=2)
    assert ei.value.details["failed_host"] == NAMES[2]
    assert ei.value.details["failed_hosts"] == NAMES[2:4]


def test_select_finds_a_host_by_spec_or_hostname_and_refuses_a_stranger():
    assert select(TARGETS, None) == TARGETS
    assert select(TARGETS, "web-2.test") == [TARGETS[1]]
    assert select(TARGETS, "root@web-3.test") == [TARGETS[2]]
    with pytest.raises(ConfigError, match="not one of this app's hosts"):
        select(TARGETS, "web-9.test")


def test_deploy_takes_parallel_from_the_config_and_sends_the_release_commands_host_alone(deployers, monkeypatch):
    seen: list[tuple] = []
    real = run_on_hosts

    def spy(cfg_, action, progress, parallel, targets, first_alone=False, keep_going=False):
        seen.append((parallel, first_alone))
        return real(cfg_, action, progress, parallel, targets, first_alone=first_alone, keep_going=keep_going)

    monkeypatch.setattr(R, "run_on_hosts", spy)
    image = "127.0.0.1:5000/hello@sha256:" + "a" * 64
    r = R.deploy(cfg(parallel=3, release_command=["python3", "manage.py", "migrate"]), image, "v1")
    assert seen == [(3, True)] and [h["host"] for h in r["hosts"]] == NAMES
    assert [n for n, first in deployers.first_calls if first] == [NAMES[0]]
    seen.clear()
    R.deploy(cfg(parallel=2), image, "v1")
    assert seen == [(2, False)]  # no release command: the first host need not go alone

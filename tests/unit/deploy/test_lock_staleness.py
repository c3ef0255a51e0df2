"""The deploy lock's decisions: what is stale, what is broken automatically, what only --force
breaks, and what is never broken. The lock runs its real shell (mkdir, cat, stat, date, rm) on
this machine in a temporary directory through a tiny Host stand-in: no SSH, no target."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from ferry.config import parse
from ferry.deploy.host import Result
from ferry.deploy.lock import Lock, LockInfo, stale_after, stale_reason
from ferry.errors import DeployError, LockHeld
from ferry.progress import NULL

ROOT = Path(__file__).resolve().parents[3]
HELLO = ROOT / "tests" / "fixtures" / "deploy" / "hello.toml"
THIS = socket.gethostname()


class LocalHost:
    """Host's interface (run/mkdir/read/write/remove/sftp) on this machine's filesystem."""

    name = "root@test-host"

    def __init__(self):
        self.commands: list[list[str]] = []

    def run(self, argv, stdin=None, timeout=None) -> Result:
        self.commands.append(list(argv))
        r = subprocess.run(list(argv), capture_output=True, text=True, input=stdin, timeout=30)
        return Result(" ".join(argv), r.returncode, r.stdout, r.stderr)

    def mkdir(self, path: str, parents: bool = False) -> bool:
        try:
            os.makedirs(path) if parents else os.mkdir(path)
            return True
        except FileExistsError:
            if parents:
                return True
            return False

    def read(self, path: str) -> str | None:
        try:
            return Path(path).read_text()
        except FileNotFoundError:
            return None

    def write(self, path: str, content: str, mode: str = "0644") -> None:
        Path(path).write_text(content)

    def remove(self, path: str) -> None:
        os.remove(path)

    def sftp(self):
        return self

    def rmdir(self, path: str) -> None:
        os.rmdir(path)


@pytest.fixture
def cfg(tmp_path):
    doc = tomllib.loads((HELLO).read_text())
    doc["deploy"]["root"] = str(tmp_path)
    return parse(doc, HELLO)


@pytest.fixture
def holder():
    """A live process on this machine: another ferry still working."""
    p = subprocess.Popen(["sleep", "300"])
    yield p
    p.kill()
    p.wait()


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def plant(cfg, *, machine: str, pid: int, age: float = 0.0, holder: str = "alice@ci-runner") -> Path:
    """A lock another ferry left: the directory, its info.json, both last touched ``age`` s ago."""
    d = Path(cfg.deploy.root) / cfg.app.name / "lock"
    d.mkdir(parents=True)
    (d / "info.json").write_text(json.dumps({"holder": holder, "machine": machine, "pid": pid,
                                             "command": "deploy 2.0", "version": "2.0",
                                             "since": "2026-11-26T09:00:00Z"}))
    t = time.time() - age
    os.utime(d / "info.json", (t, t))
    os.utime(d, (t, t))
    return d


def mine(cfg) -> LockInfo:
    return LockInfo.mine("deploy", "3.0")


OLD = 10 * 24 * 3600.0  # far beyond any stale_after


# --- stale_reason (pure) -------------------------------------------------------------------------

def test_stale_reason_other_machine_is_judged_by_age_only():
    info = LockInfo("bob@ci-7", "ci-7", 4242, "deploy", "1", "x")
    never_called = lambda pid: pytest.fail("a pid on another machine must never be checked here")  # noqa: E731
    assert stale_reason(info, 200.0, 300.0, "laptop", never_called) is None
    assert stale_reason(info, 301.0, 300.0, "laptop", never_called) == "it has not been touched for 301s"


def test_stale_reason_same_machine_pid_gone_is_stale_whatever_the_age():
    info = LockInfo("bob@laptop", "laptop", 4242, "deploy", "1", "x")
    assert stale_reason(info, 1.0, 300.0, "laptop", lambda pid: False) == "its holder (pid 4242 on laptop) is gone"
    assert stale_reason(info, 1.0, 300.0, "laptop", lambda pid: True) is None


def test_stale_after_outlasts_the_longest_step(cfg):
    d = cfg.deploy
    assert stale_after(cfg) > max(d.health.timeout, d.drain_timeout)


# --- acquire against real files -----------------------------------------------------------------

def test_a_lock_stale_only_by_age_is_reported_not_broken_without_force(cfg):
    d = plant(cfg, machine="ci-runner-7", pid=4242, age=OLD)
    host = LocalHost()
    lock = Lock(host, cfg)
    st = lock.read()
    assert st.stale and "has not been touched for" in st.stale
    with pytest.raises(LockHeld) as ei:
        lock.acquire(mine(cfg), force=False)
    assert ei.value.exit_code == 3
    assert "held by alice@ci-runner" in str(ei.value)
    assert "--force" in ei.value.hint and "stale" in ei.value.hint
    assert json.loads((d / "info.json").read_text())["machine"] == "ci-runner-7"  # untouched
    assert lock.held is None


def test_force_breaks_a_lock_stale_only_by_age_and_takes_it(cfg):
    d = plant(cfg, machine="ci-runner-7", pid=4242, age=OLD)
    lock = Lock(LocalHost(), cfg)
    warnings = []

    class P:
        def warn(self, msg, host=None):
            warnings.append(msg)

    lock.acquire(mine(cfg), force=True, progress=P())
    info = json.loads((d / "info.json").read_text())
    assert info["machine"] == THIS and info["pid"] == os.getpid() and info["version"] == "3.0"
    assert any("breaking a stale lock" in w and "alice@ci-runner" in w for w in warnings), warnings
    lock.release()
    assert not d.exists()


def test_a_fresh_lock_from_another_machine_is_never_broken_even_with_force(cfg):
    d = plant(cfg, machine="ci-runner-7", pid=4242, age=0)
    lock = Lock(LocalHost(), cfg)
    assert lock.read().stale is None
    for force in (False, True):
        with pytest.raises(LockHeld) as ei:
            lock.acquire(mine(cfg), force=force)
        assert "wait for that deploy to finish" in ei.value.hint
    assert json.loads((d / "info.json").read_text())["machine"] == "ci-runner-7"


def test_a_live_holder_on_this_machine_is_never_broken_even_with_force(cfg, holder):
    d = plant(cfg, machine=THIS, pid=holder.pid, age=0)
    lock = Lock(LocalHost(), cfg)
    for force in (False, True):
        with pytest.raises(LockHeld) as ei:
            lock.acquire(mine(cfg), force=force)
        assert ei.value.exit_code == 3
        assert f"held by alice@ci-runner (pid {holder.pid}" in str(ei.value)
    assert json.loads((d / "info.json").read_text())["pid"] == holder.pid


def test_a_live_holder_on_this_machine_untouched_for_long_is_not_broken_automatically(cfg, holder):
    # stale by age (reported), but its process runs: only an explicit --force may break it
    d = plant(cfg, machine=THIS, pid=holder.pid, age=OLD)
    lock = Lock(LocalHost(), cfg)
    with pytest.raises(LockHeld) as ei:
        lock.acquire(mine(cfg), force=False)
    assert "stale: it has not been touched" in str(ei.value)
    assert json.loads((d / "info.json").read_text())["pid"] == holder.pid


def test_a_dead_holder_on_this_machine_is_broken_automatically(cfg):
    d = plant(cfg, machine=THIS, pid=dead_pid(), age=0)
    lock = Lock(LocalHost(), cfg)
    lock.acquire(mine(cfg), force=False)
    assert json.loads((d / "info.json").read_text())["pid"] == os.getpid()


def test_force_release_clears_a_lock_that_looks_alive(cfg, holder):
    d = plant(cfg, machine=THIS, pid=holder.pid, age=0)
    lock = Lock(LocalHost(), cfg)
    was = lock.force_release()
    assert was.info.pid == holder.pid and was.stale is None
    assert not d.exists()
    assert lock.read().info is None
    lock.acquire(mine(cfg))  # and the next deploy takes it at once
    assert lock.held is not None


# --- `ferry lock release` across hosts ------------------------------------------------------------

@pytest.fixture
def one_local_host(monkeypatch):
    import contextlib

    from ferry.deploy import release as R
    from ferry.deploy.host import HostSpec
    from ferry.fleet import connect, hosts

    monkeypatch.setattr(hosts, "resolve_hosts", lambda c, p=NULL: [hosts.HostTarget(HostSpec.parse("root@test-host"))])
    monkeypatch.setattr(connect, "connect", lambda c, t, p: contextlib.nullcontext(LocalHost()))
    return R


def test_lock_release_refuses_a_live_lock_without_force_and_clears_it_with_force(cfg, holder, one_local_host):
    R = one_local_host
    d = plant(cfg, machine=THIS, pid=holder.pid, age=0)
    with pytest.raises(DeployError) as ei:
        R.lock_release(cfg, force=False)
    assert ei.value.exit_code == 1
    assert "looks alive" in str(ei.value) and "held by alice@ci-runner" in str(ei.value)
    assert "--force" in ei.value.hint
    assert d.exists()
    out = R.lock_release(cfg, force=True)
    h = out["hosts"][0]
    assert h["released"] is True and h["was"]["pid"] == holder.pid and h["was"]["stale"] is False
    assert not d.exists()


def test_lock_release_clears_a_stale_lock_without_force(cfg, one_local_host):
    d = plant(cfg, machine="ci-runner-7", pid=4242, age=OLD)
    out = one_local_host.lock_release(cfg, force=False)
    assert out["hosts"][0]["released"] is True and out["hosts"][0]["was"]["stale"] is True
    assert not d.exists()

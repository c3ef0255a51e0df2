"""`ferry local up | status | down` for real: a second, throwaway local target on other ports
and its own state directory, so the shared one the other tests use is never disturbed."""

from __future__ import annotations

import io
import shutil
import socket
import tempfile

import pytest

from ferry.config import LocalConfig
from ferry.errors import LocalTargetError
from ferry.local.target import LocalTarget
from ferry.progress import Progress

pytestmark = pytest.mark.integration


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def second_target(local_target):
    # short path: dockerd's containerd socket lives under it (unix sockets: 108 bytes at most)
    state = tempfile.mkdtemp(prefix="fl-", dir="/tmp")
    reg, basic, token, ssh, status = free_ports(5)
    settings = LocalConfig(state_dir=state, registry_port=reg, basic_registry_port=basic,
                           token_registry_port=token, ssh_port=ssh, nginx_status_port=status)
    log = io.StringIO()
    target = LocalTarget(settings, deploy_root=f"{state}/opt", progress=Progress(log))
    yield target, log
    target.down()
    shutil.rmtree(state, ignore_errors=True)


def shared_pids() -> dict:
    return {c["name"]: c["pid"] for c in LocalTarget().status()["components"]}


def test_up_twice_changes_nothing_the_second_time_and_down_stops_exactly_what_up_started(second_target):
    target, log = second_target
    before = shared_pids()
    first = target.up(with_base_image=False)
    assert first["changed"] is True
    started = {c["name"] for c in first["components"] if c["action"] == "started"}
    assert started == {"dockerd", "registry", "registry-basic", "registry-token", "token-issuer", "sshd", "nginx"}

    log.truncate(0)
    second = target.up(with_base_image=False)
    assert second["changed"] is False
    assert {c["action"] for c in second["components"]} == {"none"}
    assert "nothing changed" in log.getvalue()

    status = target.status()
    assert status["healthy"] is True
    for c in status["components"]:
        assert c["pid"] and c["running"] and c["healthy"] and c["address"]

    down = target.down()
    assert set(down["stopped"]) == started
    after = target.status()
    assert after["healthy"] is False and not any(c["running"] for c in after["components"])
    assert shared_pids() == before  # the shared local target was not touched
    assert target.down()["stopped"] == []  # nothing left to stop


def test_an_address_already_taken_stops_up_before_anything_starts(second_target, local_target):
    target, _ = second_target
    taken = LocalConfig(**{**target.settings.__dict__, "ssh_port": 2222})  # the shared target's sshd
    clash = LocalTarget(taken, deploy_root=target.deploy_root)
    with pytest.raises(LocalTargetError) as e:
        clash.up(with_base_image=False)
    assert "sshd: 127.0.0.1:2222 is already in use" in str(e.value) and "nothing was started" in str(e.value)
    assert not any(c["running"] for c in clash.status()["components"])

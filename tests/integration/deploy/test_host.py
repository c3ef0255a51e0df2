"""The SSH host layer against the local target's real sshd: commands, atomic writes, and the
socket option that keeps each command from waiting on a delayed ACK."""

from __future__ import annotations

import socket
import uuid

import pytest

from ferry.deploy.host import Host, HostSpec, _QuickAckSocket
from ferry.errors import HostError

pytestmark = pytest.mark.integration


@pytest.fixture
def host(local_target):
    with Host(HostSpec.parse(local_target["ssh"]), key_filename=local_target["ssh_key"]) as h:
        yield h


def test_each_packet_is_sent_at_once(host):
    sock = host.conn.client.get_transport().sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_the_handshake_runs_on_a_socket_that_acknowledges_at_once(host):
    # sshd's Nagle before its first session would otherwise wait on our delayed ACKs
    sock = host.conn.client.get_transport().sock
    assert isinstance(sock, _QuickAckSocket)
    assert host.run(["true"]).ok


def test_an_unreachable_port_is_a_host_error_that_says_what_to_check():
    with pytest.raises(HostError) as e:
        Host(HostSpec("root", "127.0.0.1", 1), connect_timeout=2).open()
    assert "cannot connect over SSH" in str(e.value) and "deploy.hosts" in e.value.hint


def test_run_returns_exit_code_and_output_and_never_raises_on_failure(host):
    r = host.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.exit_code, r.stdout, r.stderr, r.ok) == (3, "out\n", "err\n", False)
    assert host.run(["cat"], stdin="piped\n").stdout == "piped\n"


def test_write_is_atomic_with_its_mode_and_leaves_no_temp_file(host):
    d = f"/tmp/ferry-host-test-{uuid.uuid4().hex[:8]}"
    host.check(["mkdir", "-p", d], "mkdir")
    try:
        host.write(f"{d}/secret", "s3cret\n", mode="0600")
        assert host.read(f"{d}/secret") == "s3cret\n"
        assert host.run(["stat", "-c", "%a", f"{d}/secret"]).stdout.strip() == "600"
        assert host.run(["ls", "-A", d]).stdout.split() == ["secret"]
        assert host.read(f"{d}/missing") is None
    finally:
        host.run(["rm", "-rf", d])


def test_a_write_into_a_missing_directory_is_a_host_error_that_names_the_path(host):
    with pytest.raises(HostError) as e:
        host.write("/nonexistent-ferry-dir/x", "x")
    assert "/nonexistent-ferry-dir/x" in str(e.value)

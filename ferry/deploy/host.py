"""A host reached over SSH (Fabric), and the few primitives the deploy needs on it.

Commands are argv lists joined with ``shlex.join`` — never shell strings built from input.
Files are written atomically (temp file in the same directory, then ``mv``), so a reader (nginx,
another ferry) sees the old content or the new, never half of either.
"""

from __future__ import annotations

import io
import re
import shlex
import socket
import time
from dataclasses import dataclass
from typing import IO, Callable, Sequence

from ..errors import HostError
from ..progress import NULL, Progress


@dataclass(frozen=True)
class HostSpec:
    user: str
    hostname: str
    port: int = 22

    @classmethod
    def parse(cls, spec: str) -> "HostSpec":
        m = re.match(r"^(?:([^@]+)@)?([^:]+)(?::(\d+))?$", spec)
        if not m:
            raise HostError(f"{spec!r} is not user@host[:port]", 'e.g. "root@203.0.113.7"')
        return cls(m.group(1) or "root", m.group(2), int(m.group(3) or 22))

    def __str__(self) -> str:
        port = "" if self.port == 22 else f":{self.port}"
        return f"{self.user}@{self.hostname}{port}"


@dataclass
class Result:
    argv: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Host:
    """One host. ``run`` returns a Result (never raises on a non-zero exit); ``check`` raises."""

    def __init__(self, spec: HostSpec, key_filename: str | None = None, progress: Progress = NULL,
                 connect_timeout: float = 10.0, gateway: str | None = None):
        from fabric import Config, Connection

        self.spec = spec
        self.name = str(spec)
        self.progress = progress
        self.connect_timeout = connect_timeout
        kwargs: dict = {"look_for_keys": key_filename is None, "allow_agent": key_filename is None,
                        "banner_timeout": connect_timeout, "auth_timeout": connect_timeout}
        if key_filename:
            kwargs["key_filename"] = key_filename
        self.conn = Connection(spec.hostname, user=spec.user, port=spec.port, connect_kwargs=kwargs,
                               connect_timeout=connect_timeout, gateway=gateway,
                               config=Config(overrides={"runners": {"remote": _fast_remote()}}))
        self._sftp = None

    def open(self) -> "Host":
        try:
            if not self.conn.is_connected and self.conn.gateway is None:
                # our own socket, so its options hold from the first byte of the handshake
                self.conn.connect_kwargs["sock"] = _connect(self.spec, self.connect_timeout)
            try:
                self.conn.open()
            finally:
                self.conn.connect_kwargs.pop("sock", None)
            _no_delay(self.conn)
            # host keys: ferry trusts on first use like `ssh -o StrictHostKeyChecking=accept-new`
        except (socket.timeout, TimeoutError) as e:
            raise HostError(f"{self.name}: SSH connection timed out ({e})",
                            "is the host up and port open to you? check deploy.hosts and the security group") from None
        except OSError as e:
            raise HostError(f"{self.name}: cannot connect over SSH: {e}",
                            "is sshd running there and the address right? check deploy.hosts") from None
        except Exception as e:  # paramiko's auth and protocol errors
            name = type(e).__name__
            raise HostError(f"{self.name}: SSH failed: {name}: {e}",
                            "check the user, deploy.ssh_key and the host's authorized_keys") from None
        return self

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        self.conn.close()

    def __enter__(self) -> "Host":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, argv: Sequence[str] | str, stdin: str | None = None, timeout: float | None = None) -> Result:
        cmd = argv if isinstance(argv, str) else shlex.join(argv)
        try:
            r = self.conn.run(cmd, hide=True, warn=True, in_stream=io.StringIO(stdin) if stdin is not None else False,
                              timeout=timeout)
        except Exception as e:
            if type(e).__name__ == "CommandTimedOut":
                return Result(cmd, 124, "", f"timed out after {timeout}s")
            raise HostError(f"{self.name}: lost the SSH connection running `{cmd[:80]}`: {e}",
                            "check the host and run the command again: every step can be re-run") from None
        return Result(cmd, r.exited, r.stdout, r.stderr)

    def stream(self, argv: Sequence[str], on_line: Callable[[str], None], timeout: float | None = None) -> Result:
        """Like ``run``, but each line of output (stdout and stderr) goes to ``on_line`` as it
        comes (a release command's progress); the Result still holds all of it. A timeout is
        exit 124 with what was printed until then."""
        cmd = shlex.join(argv)
        sink = LineSink(on_line)
        t0 = time.monotonic()
        try:
            r = self.conn.run(cmd, hide=False, warn=True, in_stream=False, out_stream=sink, err_stream=sink,
                              timeout=timeout)
        except Exception as e:
            if type(e).__name__ == "CommandTimedOut":
                res = getattr(e, "result", None)
                return Result(cmd, 124, getattr(res, "stdout", "") or "", f"timed out after {timeout}s")
            raise HostError(f"{self.name}: lost the SSH connection running `{cmd[:80]}`: {e}",
                            "check the host and run the command again: every step can be re-run") from None
        finally:
            sink.close()
        if timeout is not None and r.exited == -1 and time.monotonic() - t0 >= timeout:
            # Invoke killed it at the timeout but, racing the channel's close, reported no exit
            # status (-1) instead of raising CommandTimedOut
            return Result(cmd, 124, r.stdout, f"timed out after {timeout}s")
        return Result(cmd, r.exited, r.stdout, r.stderr)

    def check(self, argv: Sequence[str] | str, what: str, hint: str | None = None, stdin: str | None = None,
              timeout: float | None = None) -> Result:
        r = self.run(argv, stdin=stdin, timeout=timeout)
        if not r.ok:
            detail = (r.stderr.strip() or r.stdout.strip())[-500:]
            raise HostError(f"{self.name}: {what} failed (exit {r.exit_code}): {detail}", hint)
        return r

    def read(self, path: str) -> str | None:
        """A file's text, or None when it does not exist (over SFTP: one round trip, no process)."""
        try:
            with self.sftp().open(path, "rb") as f:
                return f.read().decode()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise HostError(f"{self.name}: cannot read {path}: {e}") from None

    def mkdir(self, path: str, parents: bool = False) -> bool:
        """Create a directory; False when it already exists (atomic: the lock relies on it)."""
        sftp = self.sftp()
        if parents:
            parts = [p for p in path.split("/") if p]
            for i in range(1, len(parts)):
                try:
                    sftp.mkdir("/" + "/".join(parts[:i]))
                except OSError:
                    pass
        try:
            sftp.mkdir(path)
            return True
        except OSError:
            try:
                sftp.stat(path)
            except FileNotFoundError:
                raise HostError(f"{self.name}: cannot create {path}", "check the host's disk and permissions") from None
            return False

    def size(self, path: str) -> int:
        """Size of a file (following symlinks), 0 when it does not exist."""
        try:
            return self.sftp().stat(path).st_size or 0
        except (FileNotFoundError, OSError):
            return 0

    def remove(self, path: str) -> None:
        try:
            self.sftp().remove(path)
        except FileNotFoundError:
            pass

    def attach(self, argv: Sequence[str], out: IO[str], err: IO[str], stdin: IO[str] | None = None,
               pty: bool = False) -> int:
        """Run a command attached to local streams: its stdout to ``out`` and stderr to ``err``
        as they come, ``stdin`` forwarded (``ferry logs --follow``, ``ferry exec``); returns
        its exit code."""
        cmd = shlex.join(argv)
        try:
            r = self.conn.run(cmd, hide=False, warn=True, pty=pty, out_stream=out, err_stream=err,
                              in_stream=stdin if stdin is not None else False)
        except Exception as e:
            raise HostError(f"{self.name}: lost the SSH connection running `{cmd[:80]}`: {e}",
                            "check the host and run the command again") from None
        return r.exited

    def sftp(self):
        if self._sftp is None:
            self._sftp = self.conn.sftp()
        return self._sftp

    def write(self, path: str, content: str, mode: str = "0644") -> None:
        """Atomic write over SFTP: a temp file beside the target, its mode set before any byte
        is written (secrets are never readable by others), then a rename over the target."""
        tmp = f"{path}.ferry-tmp"
        data = content.encode()
        try:
            sftp = self.sftp()
            with sftp.open(tmp, "wb") as f:
                sftp.chmod(tmp, int(mode, 8))
                f.write(data)
                f.flush()
            sftp.posix_rename(tmp, path)
        except OSError as e:
            try:
                self.sftp().remove(tmp)
            except OSError:
                pass
            detail = str(e) or type(e).__name__
            r = self.run(["sh", "-c", f"df -P {shlex.quote(path.rsplit('/', 1)[0] or '/')} | tail -1"])
            full = r.ok and r.stdout.split()[3:4] == ["0"]
            hint = ("the disk is full: free space on the host" if full else
                    "the disk may be full or the file read-only: check the host's filesystem")
            raise HostError(f"{self.name}: cannot write {path}: {detail}", hint) from None


class _QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges what it receives at once (TCP_QUICKACK before each read).

    sshd sends with Nagle's algorithm on until its first session starts (OpenSSH sets
    TCP_NODELAY only then): during the key exchange, the authentication and the first channel
    its second small packet waits for our ACK, which Linux delays by ~40 ms. Measured on the
    local target: connect 59 -> 18 ms, the first command 47 -> 6 ms. The flag is not sticky
    (the kernel leaves quick-ack mode by itself), hence once per read; it costs one syscall."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        _quick_ack(self)
        return super().recv(bufsize, flags)


def _quick_ack(sock: socket.socket) -> None:
    if hasattr(socket, "TCP_QUICKACK"):  # Linux only; elsewhere the delayed ACK stays
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass


def _connect(spec: HostSpec, timeout: float) -> socket.socket:
    """The TCP connection to ``spec`` (each address in turn, as paramiko does), with
    TCP_NODELAY and quick ACKs from the start."""
    last: OSError | None = None
    for family, kind, proto, _, addr in socket.getaddrinfo(spec.hostname, spec.port, type=socket.SOCK_STREAM):
        sock = _QuickAckSocket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            if family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(addr)
            return sock
        except OSError as e:
            sock.close()
            last = e
    raise last or OSError(f"no address for {spec.hostname}")


def _no_delay(conn) -> None:
    """Send each SSH packet at once (as OpenSSH does for interactive sessions). Without it, a
    command's small request waits behind the peer's delayed ACK: about 40 ms per command."""
    sock = getattr(conn.client.get_transport(), "sock", None)
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _fast_remote():
    """Fabric's runner reads piped stdin one byte per ``input_sleep`` (10 ms) and polls for the
    command's end at the same pace; 2 ms keeps a 40-byte password fast without a busy loop."""
    from fabric.runners import Remote

    class FastRemote(Remote):
        input_sleep = 0.002

    return FastRemote


class LineSink:
    """A file-like object Invoke writes a command's output into: whole lines to ``on_line``.
    Progress wants no blank lines and no trailing spaces; ``verbatim`` (ferry logs) keeps every
    line as the program wrote it, less the line ending."""

    def __init__(self, on_line: Callable[[str], None], verbatim: bool = False):
        self.on_line = on_line
        self.verbatim = verbatim
        self.buf = ""

    def _emit(self, line: str) -> None:
        if self.verbatim:
            self.on_line(line.rstrip("\r"))
        elif line.strip():
            self.on_line(line.rstrip())

    def write(self, data: str) -> int:
        self.buf += data
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            self._emit(line)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.buf:
            self._emit(self.buf)
        self.buf = ""

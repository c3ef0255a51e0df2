"""Throwaway registries for the registry/auth/publish integration tests.

Real ``docker-registry serve`` processes (distribution 2.8) on ephemeral loopback ports, each
with its own storage under a temp dir: anonymous, htpasswd, token (with ferry's token issuer,
a read-only user included), read-only. Started once per test process on first use and
stopped at exit, so these tests do not depend on (or disturb) the local target's registries.

Also: a small HTTP proxy that fails the first N requests of a kind (for retries), and a tiny
test image made from a tar layer built here.
"""

from __future__ import annotations

import atexit
import gzip
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from ferry.images.oci import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Blob, Image, Platform, canonical_json, sha256
from ferry.local.token_server import (TokenIssuer, TokenServer, load_private_key, make_signing_key, registry_config,
                                      write_htpasswd)

USER, PASSWORD = "ferry", "s3cret-pass"
READER, READER_PASSWORD = "reader", "read-only-pass"
SERVICE, ISSUER = "ferry-test-registry", "ferry-test-issuer"
ECR_ACCOUNT = "123456789012"  # moto's default account

_root = Path(tempfile.mkdtemp(prefix="ferry-registry-tests-"))
_started: dict[str, "Registry"] = {}
_lock = threading.Lock()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Registry:
    name: str
    address: str
    storage: Path
    proc: subprocess.Popen
    log: Path
    user: str | None = None
    password: str | None = None
    token_server: TokenServer | None = None
    extra: dict = field(default_factory=dict)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: only what we started
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.token_server:
            self.token_server.stop()


def _serve(name: str, config_for_port) -> tuple[str, subprocess.Popen, Path, Path]:
    d = _root / name
    storage = d / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        port = free_port()
        cfg = d / "config.yml"
        cfg.write_text(config_for_port(port, storage))
        log = d / "registry.log"
        proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdin=subprocess.DEVNULL,
                                stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)

        def up(proc=proc, port=port):
            if proc.poll() is not None:
                return "exited"
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1, trust_env=False)
                return r.status_code in (200, 401)
            except httpx.TransportError:
                return False
        state = wait_until(up, 20, f"docker-registry {name} on {port}")
        if state is True:
            return f"127.0.0.1:{port}", proc, storage, log
        # the port was taken between free_port() and the registry's bind: try another
    raise RuntimeError(f"docker-registry {name} did not start: {log.read_text()[-2000:]}")


def shared(kind: str) -> Registry:
    """The registry of a kind ("anon", "basic", "token", "readonly"), started on first use."""
    with _lock:
        if kind not in _started:
            _started[kind] = _start(kind)
        return _started[kind]


def _start(kind: str) -> Registry:
    if kind == "anon":
        addr, proc, storage, log = _serve("anon", lambda port, st: registry_config(port, st))
        return Registry(kind, addr, storage, proc, log)
    if kind == "readonly":
        addr, proc, storage, log = _serve("readonly", lambda port, st: registry_config(port, st, read_only=True))
        return Registry(kind, addr, storage, proc, log)
    if kind == "ecr-like":
        # what ECR expects: user AWS, the password GetAuthorizationToken hands out (moto's is
        # "<account>-auth-token")
        htpasswd = write_htpasswd(_root / "ecr.htpasswd", {"AWS": f"{ECR_ACCOUNT}-auth-token"}, rounds=5)
        addr, proc, storage, log = _serve(
            "ecr-like", lambda port, st: registry_config(port, st, "htpasswd", htpasswd=htpasswd))
        return Registry(kind, addr, storage, proc, log, "AWS", f"{ECR_ACCOUNT}-auth-token")
    htpasswd = write_htpasswd(_root / f"{kind}.htpasswd", {USER: PASSWORD, READER: READER_PASSWORD}, rounds=5)
    if kind == "basic":
        addr, proc, storage, log = _serve(
            "basic", lambda port, st: registry_config(port, st, "htpasswd", htpasswd=htpasswd))
        return Registry(kind, addr, storage, proc, log, USER, PASSWORD)
    if kind == "token":
        key_path, cert_path = make_signing_key(_root / "token-keys")
        ts = TokenServer(TokenIssuer(load_private_key(key_path), htpasswd, ISSUER, SERVICE,
                                     read_only=frozenset({READER})), quiet=True).start()
        addr, proc, storage, log = _serve("token", lambda port, st: registry_config(
            port, st, "token", realm=ts.url, service=SERVICE, issuer=ISSUER, rootcertbundle=cert_path))
        return Registry(kind, addr, storage, proc, log, USER, PASSWORD, token_server=ts)
    raise ValueError(kind)


@atexit.register
def _stop_all() -> None:
    for r in list(_started.values()):
        try:
            r.stop()
        except Exception:
            pass
    shutil.rmtree(_root, ignore_errors=True)


# --- a proxy that fails on purpose ------------------------------------------------------------

@dataclass
class FailRule:
    method: str
    path: str  # a regex on the path
    times: int
    status: int = 500
    hits: int = 0


class FlakyProxy:
    """Forwards to a registry, except that the first ``times`` requests matching a rule get
    ``status`` (and are not forwarded). Records every request as (method, path, status)."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.rules: list[FailRule] = []
        self.seen: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._client = httpx.Client(trust_env=False, timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = self._read_chunked()
                else:
                    body = self.rfile.read(n) if n else b""
                path = self.path
                with proxy._lock:
                    rule = next((r for r in proxy.rules if r.method == self.command
                                 and re.search(r.path, path.split("?")[0]) and r.hits < r.times), None)
                    if rule:
                        rule.hits += 1
                if rule:
                    proxy.seen.append((self.command, path, rule.status))
                    data = b'{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}'
                    self.send_response(rule.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":  # a body after HEAD would poison the kept-alive connection
                        self.wfile.write(data)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("transfer-encoding", "connection", "content-length")}
                resp = proxy._client.request(self.command, f"http://{proxy.upstream}{path}", headers=headers,
                                             content=body)
                proxy.seen.append((self.command, path, resp.status_code))
                self.send_response(resp.status_code)
                for k, v in resp.headers.multi_items():
                    if k.lower() in ("transfer-encoding", "connection", "content-length", "content-encoding"):
                        continue
                    self.send_header(k, v)
                data = b"" if self.command == "HEAD" else resp.content
                self.send_header("Content-Length", str(len(data) if self.command != "HEAD"
                                                       else resp.headers.get("content-length", "0")))
                self.end_headers()
                if data:
                    self.wfile.write(data)

            def _read_chunked(self) -> bytes:
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def fail(self, method: str, path: str, times: int, status: int = 500) -> FailRule:
        r = FailRule(method, path, times, status)
        self.rules.append(r)
        return r

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._client.close()


# --- a small image --------------------------------------------------------------------------

def layer_tar(files: dict[str, bytes]) -> bytes:
    """A reproducible tar of ``files`` (path -> content)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o755, 1
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def make_layer(files: dict[str, bytes]) -> tuple[Blob, str]:
    """(gzip layer blob, diff id)."""
    raw = layer_tar(files)
    return Blob.from_bytes(gzip.compress(raw, mtime=0), OCI_LAYER_GZIP), sha256(raw)


AMD64 = Platform("linux", "amd64")


def make_image(files_per_layer: list[dict[str, bytes]], platform: Platform = AMD64,
               cmd: tuple[str, ...] = ("/bin/hello",), base: Image | None = None,
               base_diff_ids: list[str] | None = None) -> Image:
    layers, diff_ids = list(base.layers) if base else [], list(base_diff_ids or [])
    for files in files_per_layer:
        blob, diff_id = make_layer(files)
        layers.append(blob)
        diff_ids.append(diff_id)
    config = {
        "created": "1970-01-01T00:00:01Z",
        "architecture": platform.architecture, "os": platform.os,
        "config": {"Cmd": list(cmd), "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:01Z", "created_by": "ferry test"} for _ in diff_ids],
    }
    return Image(config=Blob.from_bytes(canonical_json(config), OCI_CONFIG), layers=tuple(layers),
                 platform=platform, media_type=OCI_MANIFEST)


def unique_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns() % 10**9}"


def skopeo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=timeout)

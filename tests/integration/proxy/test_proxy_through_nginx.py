"""The proxy a real app needs, through a real nginx: WebSockets across a swap, uploads and
max_body, gzip, server-sent events, read_timeout, files from a volume, the client's address,
upstream keep-alive.

nginx runs with the local target's own main config (ferry/local/components.nginx_main_conf:
the same text `ferry local up` writes), but as a process of this test on its own ports (33079,
33080: the proxy range) with a short worker_shutdown_timeout, and including only this test's
site: the shared nginx is never restarted or reconfigured by it. The swap is ferry's own:
nginx.apply over SSH (Fabric, the local target's sshd), which writes, `nginx -t`s and reloads.
The colours are small servers of the test on 33081 (blue) and 33082 (green)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import serve as ws_serve

from ferry import nginx
from ferry.config import LocalConfig
from ferry.deploy.host import Host, HostSpec
from tests.proxy_support import app_config, main_conf, site_files, write

pytestmark = pytest.mark.integration

HTTP, STATUS, BLUE, GREEN = 33080, 33079, 33081, 33082
SHUTDOWN = 3.0  # worker_shutdown_timeout = deploy.drain_timeout of the fixture app (3s)


def wait_port(port: int, proc: subprocess.Popen, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {deadline}s")


@pytest.fixture
def host():
    """The local target's sshd, addressed as `ferry local up` sets it up (the session fixture
    `local_target` would run `ferry local up`, which restarts the shared nginx when its config
    differs: not this test's business)."""
    s = LocalConfig()
    key = f"{s.state_dir}/ssh/id_ed25519"
    if not os.path.exists(key):
        pytest.fail(f"{key} is missing: run `ferry local up` first")
    with Host(HostSpec.parse(f"root@127.0.0.1:{s.ssh_port}"), key_filename=key) as h:
        yield h


@pytest.fixture
def site():
    """A folder everyone may traverse (nginx's workers run as nobody here, www-data on a host)."""
    d = Path(tempfile.mkdtemp(prefix="ferry-proxy-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Nginx:
    def __init__(self, root: Path, **proxy):
        conf_path = root / "state" / "nginx" / "nginx.conf"
        self.cfg = app_config(root, deploy={"nginx_conf": str(conf_path)},
                              proxy={"http_port": HTTP, **proxy})
        write(site_files(self.cfg, "blue", "r1"))
        self.conf = main_conf(root / "state", self.cfg, status_port=STATUS, worker_shutdown_timeout=SHUTDOWN)
        assert self.conf == conf_path
        self.proc = subprocess.Popen(["nginx", "-c", str(self.conf), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(HTTP, self.proc)

    def workers(self) -> dict[int, str]:
        """pid -> title of the master's workers ("nginx: worker process [is shutting down]")."""
        r = subprocess.run(["ps", "--ppid", str(self.proc.pid), "-o", "pid=,args="], capture_output=True, text=True)
        return {int(pid): title.strip() for pid, title in (line.split(None, 1) for line in r.stdout.splitlines())
                if "worker" in title}

    def serving(self) -> set[int]:
        return {pid for pid, title in self.workers().items() if "shutting down" not in title}

    def wait_reloaded(self, old: set[int], deadline: float = 10.0) -> None:
        """`nginx -s reload` only signals the master: new connections reach the new config once
        the new workers run and the old ones have closed their listening sockets."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            now = self.serving()
            if now and not now & old:
                return
            time.sleep(0.02)
        raise AssertionError(f"nginx did not reload within {deadline}s: workers {self.workers()}")

    def wait_old_workers_gone(self, deadline: float = 10.0) -> None:
        """The client sees its connection closed a moment before the old worker has exited."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if not any("shutting down" in title for title in self.workers().values()):
                return
            time.sleep(0.02)
        raise AssertionError(f"old workers still there after {deadline}s: {self.workers()}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def start_nginx(site):
    started: list[Nginx] = []

    def start(**proxy) -> Nginx:
        n = Nginx(site, **proxy)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()


# --- the colours ---------------------------------------------------------------------------------

class WsColour:
    """A WebSocket server answering "<colour>:<message>" to each message."""

    def __init__(self, colour: str, port: int):
        def echo(ws):
            for message in ws:
                ws.send(f"{colour}:{message}")

        self.server = ws_serve(echo, "127.0.0.1", port)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class HttpApp:
    """An HTTP/1.1 app (keep-alive) that records what nginx sends it."""

    def __init__(self, port: int):
        seen: list[dict] = []
        self.seen = seen
        # /events sends its second event only once the test has seen the first one
        self.first_event_seen = first_seen = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def record(self, body: bytes = b"") -> None:
                seen.append({"path": self.path, "peer_port": self.client_address[1],
                             "headers": {k.lower(): v for k, v in self.headers.items()}, "length": len(body)})

            def answer(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def do_GET(self):
                self.record()
                if self.path == "/events":  # server-sent events
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Cache-Control", "no-cache")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.chunk(b"data: one\n\n")
                    # "two" only if the client saw "one" while the stream was open
                    self.chunk(b"data: two\n\n" if first_seen.wait(timeout=10) else b"data: too late\n\n")
                    self.chunk(b"")
                elif self.path == "/slow":  # a long poll that answers after 3 s
                    time.sleep(3)
                    self.answer(200, "text/plain", b"late\n")
                elif self.path == "/data.json":
                    self.answer(200, "application/json", json.dumps([{"n": i, "text": "row"} for i in range(400)]).encode())
                else:
                    self.answer(200, "text/plain", b"app\n")

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                self.record(body)
                self.answer(200, "application/json",
                            json.dumps({"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def colours():
    made: list = []

    def make(kind, *args):
        c = kind(*args)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def request(method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            conn: http.client.HTTPConnection | None = None):
    c = conn or http.client.HTTPConnection("127.0.0.1", HTTP, timeout=30)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        if conn is None:
            c.close()


# --- WebSockets across a swap ------------------------------------------------------------------

def test_a_websocket_stays_on_the_old_colour_until_the_drain_ends_and_new_ones_reach_the_new(
        host, start_nginx, colours):
    colours(WsColour, "blue", BLUE)
    colours(WsColour, "green", GREEN)
    n = start_nginx()
    url = f"ws://127.0.0.1:{HTTP}/socket"

    with contextlib.ExitStack() as stack:
        before = stack.enter_context(ws_connect(url, open_timeout=10))
        before.send("hello")
        assert before.recv(timeout=10) == "blue:hello"

        # the swap, as a release does it: upstream file, nginx -t, reload
        old_workers = n.serving()
        assert nginx.apply(host, n.cfg, {nginx.upstream_path(n.cfg): nginx.render_upstream(n.cfg, "green", "r2")})
        n.wait_reloaded(old_workers)

        after = stack.enter_context(ws_connect(url, open_timeout=10))
        after.send("hello")
        assert after.recv(timeout=10) == "green:hello"

        # the connection from before the swap is still served, by the old colour, by an old worker
        before.send("still there?")
        assert before.recv(timeout=10) == "blue:still there?"
        assert any("shutting down" in title for title in n.workers().values())

        # ... until worker_shutdown_timeout ends the old worker and with it the connection
        answers, closed = [], False
        end = time.monotonic() + SHUTDOWN + 15
        while time.monotonic() < end and not closed:
            try:
                before.send("ping")
                answers.append(before.recv(timeout=1))
            except TimeoutError:
                continue
            except ConnectionClosed:
                closed = True
            time.sleep(0.1)
        assert closed, f"the old connection was never closed ({len(answers)} answers)"
        assert set(answers) <= {"blue:ping"}
        n.wait_old_workers_gone()

        # the connection made after the swap is untouched, and a new one still reaches green
        after.send("again")
        assert after.recv(timeout=10) == "green:again"
        with ws_connect(url, open_timeout=10) as third:
            third.send("x")
            assert third.recv(timeout=10) == "green:x"


# --- limits, gzip, keep-alive, client IP ---------------------------------------------------------

def test_uploads_above_a_megabyte_pass_and_above_max_body_get_413(start_nginx, colours):
    app = colours(HttpApp, BLUE)
    start_nginx(max_body="3m")
    body = os.urandom(2 * 1024 * 1024 + 17)  # > nginx's default 1m
    status, _, answer = request("POST", "/upload", body, {"Content-Type": "application/octet-stream"})
    assert status == 200
    assert json.loads(answer) == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    seen = len(app.seen)
    status, _, answer = request("POST", "/upload", os.urandom(3 * 1024 * 1024 + 1))
    assert status == 413
    assert len(app.seen) == seen  # refused by nginx: the app never saw it


def test_text_is_gzipped_for_clients_that_accept_it(start_nginx, colours):
    colours(HttpApp, BLUE)
    start_nginx()
    status, headers, body = request("GET", "/data.json", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("content-encoding") == "gzip"
    assert "Accept-Encoding" in headers.get("vary", "")
    assert json.loads(gzip.decompress(body))[399] == {"n": 399, "text": "row"}
    status, headers, body = request("GET", "/data.json")
    assert "content-encoding" not in headers and json.loads(body)[0]["n"] == 0


def test_gzip_off_sends_text_as_it_is(start_nginx, colours):
    colours(HttpApp, BLUE)
    start_nginx(gzip=False)
    _, headers, _ = request("GET", "/data.json", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in headers


def test_plain_requests_keep_the_upstream_connection_alive(start_nginx, colours):
    app = colours(HttpApp, BLUE)
    start_nginx()
    conn = http.client.HTTPConnection("127.0.0.1", HTTP, timeout=30)
    try:
        for _ in range(3):
            assert request("GET", "/", conn=conn)[0] == 200
    finally:
        conn.close()
    assert [s["headers"].get("connection") for s in app.seen] == [None, None, None]
    assert "upgrade" not in app.seen[0]["headers"]
    assert len({s["peer_port"] for s in app.seen}) == 1  # one upstream connection, reused


def test_the_client_address_comes_from_a_trusted_proxy_only(start_nginx, colours):
    app = colours(HttpApp, BLUE)
    n = start_nginx()
    request("GET", "/", headers={"X-Forwarded-For": "203.0.113.9"})
    assert app.seen[-1]["headers"]["x-real-ip"] == "127.0.0.1"  # nobody trusted: the peer
    n.stop()
    start_nginx(real_ip_from=["127.0.0.1"])
    request("GET", "/", headers={"X-Forwarded-For": "203.0.113.9"})
    assert app.seen[-1]["headers"]["x-real-ip"] == "203.0.113.9"


def test_server_sent_events_reach_the_client_one_by_one_uncompressed(start_nginx, colours):
    app = colours(HttpApp, BLUE)
    start_nginx()
    conn = http.client.HTTPConnection("127.0.0.1", HTTP, timeout=30)
    try:
        conn.request("GET", "/events", headers={"Accept-Encoding": "gzip"})
        r = conn.getresponse()
        assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"
        assert r.getheader("Content-Encoding") is None  # gzip would hold events back
        # the first event arrives while the app still holds the second: nothing is buffered
        first = r.readline() + r.readline()
        assert first == b"data: one\n\n" and not app.first_event_seen.is_set()
        app.first_event_seen.set()
        assert r.read() == b"data: two\n\n"
    finally:
        conn.close()


def test_an_app_silent_for_longer_than_read_timeout_gets_a_504(start_nginx, colours):
    colours(HttpApp, BLUE)
    start_nginx(read_timeout="1s")
    assert request("GET", "/slow")[0] == 504
    assert request("GET", "/")[0] == 200


def test_a_long_poll_within_read_timeout_is_answered(start_nginx, colours):
    colours(HttpApp, BLUE)
    start_nginx(read_timeout="10s")
    status, _, body = request("GET", "/slow")
    assert status == 200 and body == b"late\n"


# --- files from a volume ---------------------------------------------------------------------------

def test_serve_answers_a_volumes_files_from_nginx_without_the_app(site, start_nginx, colours):
    app = colours(HttpApp, BLUE)
    n = start_nginx(serve={"/media/": "media"})
    vol = Path(nginx.volume_path(n.cfg, "media"))
    # as a deploy leaves a served volume: 0755, the app's files readable (its umask 022)
    (vol / "avatars").mkdir(parents=True)
    vol.chmod(0o755)
    (vol / "avatars" / "a.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>' + " " * 400)
    (vol / "avatars" / "a.svg").chmod(0o644)
    (vol / "escape").symlink_to("/etc/hostname")

    status, headers, body = request("GET", "/media/avatars/a.svg")
    assert status == 200 and body.startswith(b"<svg")
    assert headers["content-type"] == "image/svg+xml"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "max-age=3600"
    status, headers, _ = request("GET", "/media/avatars/a.svg", headers={"Accept-Encoding": "gzip"})
    assert headers.get("content-encoding") == "gzip"

    assert request("GET", "/media/avatars/")[0] == 403  # no listing
    assert request("GET", "/media/escape")[0] in (403, 404)  # no symlink out of the volume
    assert request("GET", "/media/../../../etc/hostname")[0] in (400, 404)
    assert request("GET", "/media/missing.png")[0] == 404
    assert app.seen == []  # none of it reached the app
    assert request("GET", "/other")[0] == 200 and app.seen[-1]["path"] == "/other"

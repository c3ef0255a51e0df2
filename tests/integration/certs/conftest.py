"""Fixtures for the certificate tests: pebble beside the local target (what `ferry local up
--acme` starts), and a throwaway app with its own name, nginx site and backend, removed after."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def pebble_ca(local_target, tmp_path_factory) -> dict:
    """pebble + challtestsrv on loopback (idempotent; never stopped: others may use them)."""
    from ferry.local import pebble

    info = pebble.start(local_target["state_dir"])
    root = tmp_path_factory.mktemp("pebble") / "root.pem"
    root.write_text(pebble.root_pem(local_target["state_dir"]))
    return {**info, "root_file": str(root), "state_dir": local_target["state_dir"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """One app on the local target with an HTTP-only site, as a deploy leaves it."""

    def __init__(self, name: str, tmp: Path, local_target: dict, pebble_ca: dict,
                 hosts: list[str] | None = None, **tls):
        self.name = name
        self.domain = f"{name}.ferry.test"
        self.tmp = tmp
        self.local = local_target
        self.pebble = pebble_ca
        self.metrics_dir = tmp / "metrics"
        self.port = free_port()
        (tmp / "src").mkdir()
        (tmp / "www").mkdir()
        (tmp / "www" / "index.html").write_text(f"hello from {name}\n")
        tls = {"enabled": True, "acme_directory": pebble_ca["directory"], "ca_bundle": pebble_ca["ca_bundle"],
               "resolver": pebble_ca["dns"], "metrics_dir": str(self.metrics_dir), "email": "ops@ferry.test", **tls}
        tls_lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in tls.items())
        self.config = tmp / "ferry.toml"
        self.config.write_text(textwrap.dedent(f"""\
            [app]
            name = "{name}"
            domain = "{self.domain}"
            [image]
            repository = "127.0.0.1:5000/{name}"
            base = "127.0.0.1:5000/ferry/python:3.11"
            source = "src"
            entrypoint = ["python3"]
            [deploy]
            hosts = {json.dumps(hosts or [local_target['ssh']])}
            ssh_key = "{local_target['ssh_key']}"
            colours = {{ blue = {self.port}, green = {free_port()} }}
            nginx_conf = "{local_target['nginx_conf']}"
            [proxy]
            listen = "127.0.0.1"
            http_port = 8080
            https_port = 8443
            [tls]
            """) + tls_lines)
        from ferry import config

        self.cfg = config.load(self.config)
        self.backend = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(self.port)],
            cwd=tmp / "www", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while socket.socket().connect_ex(("127.0.0.1", self.port)) != 0:
            assert time.monotonic() < deadline, "the test backend did not start"
            time.sleep(0.05)
        self._deploy_http_site()

    def host(self):
        from ferry.deploy.host import Host, HostSpec

        return Host(HostSpec.parse(self.local["ssh"]), key_filename=self.local["ssh_key"]).open()

    def _deploy_http_site(self) -> None:
        from ferry import nginx

        with self.host() as h:
            h.run(["mkdir", "-p", f"{nginx.app_dir(self.cfg)}/nginx"])
            nginx.apply(h, self.cfg, {
                nginx.upstream_path(self.cfg): nginx.render_upstream(self.cfg, "blue", "r1"),
                nginx.proxy_path(self.cfg): nginx.render_proxy(self.cfg),
                nginx.site_path(self.cfg): nginx.render_site(self.cfg, tls=False),
            })

    def ferry(self, *args: str, timeout: float = 300) -> tuple[int, dict, str]:
        r = subprocess.run([sys.executable, "-m", "ferry", "-c", str(self.config), *args, "--json"],
                           cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        try:
            doc = json.loads(r.stdout) if r.stdout.strip() else {}
        except json.JSONDecodeError:
            doc = {"unparsed": r.stdout}
        return r.returncode, doc, r.stderr

    def served_serial(self) -> str | None:
        from ferry.certs.manage import served_certificate

        info = served_certificate("127.0.0.1", 8443, self.domain)
        return info.serial if info else None

    def cleanup(self) -> None:
        from ferry import nginx
        from ferry.certs import units

        app_dir = nginx.app_dir(self.cfg)
        with self.host() as h:
            for kind in ("systemd", "cron"):
                for path in units.files(kind, self.name, "/usr/bin/python3", app_dir, None):
                    h.run(["rm", "-f", path])
            h.run(["rm", "-rf", app_dir])
            nginx.test_and_reload(h, self.cfg)
        self.backend.terminate()
        self.backend.wait(10)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def make_app(local_target, pebble_ca, tmp_path_factory):
    apps: list[App] = []

    def make(name: str, hosts: list[str] | None = None, **tls) -> App:
        app = App(name, tmp_path_factory.mktemp(name), local_target, pebble_ca, hosts=hosts, **tls)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.cleanup()


def tls_get(domain: str, cafile: str, port: int = 8443, path: str = "/") -> tuple[int, str, dict]:
    """One request on a fresh TLS connection to 127.0.0.1 with SNI ``domain``, verified against
    ``cafile``: (status, certificate serial, headers)."""
    from cryptography import x509

    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=domain) as tls:
            serial = format(x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number, "x")
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:] if ":" in line)}
    return int(head[0].split()[1]), serial, headers


def openssl(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True, timeout=30)

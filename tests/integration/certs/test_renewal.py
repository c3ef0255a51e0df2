"""Renewal: forced under a bounded load on loopback without a dropped request, and the host's
own renewer (what the timer / cron entry runs) renewing by itself."""

from __future__ import annotations

import shlex
import threading
import time

import pytest

from .conftest import tls_get

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app(make_app):
    app = make_app("certs-renew")
    rc, doc, err = app.ferry("certs", "issue")
    assert rc == 0, err
    return app


class Load:
    """Clients on fresh TLS connections (each handshake sees whichever certificate nginx has
    now), bounded in count and time; records every outcome."""

    def __init__(self, domain: str, cafile: str, clients: int = 4, max_requests: int = 20000, max_seconds: float = 180):
        self.domain, self.cafile = domain, cafile
        self.max_requests, self.deadline = max_requests, time.monotonic() + max_seconds
        self.results: list[tuple[int, str]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline and len(self.results) < self.max_requests:
            try:
                status, serial, _ = tls_get(self.domain, self.cafile)
                with self.lock:
                    self.results.append((status, serial))
            except Exception as e:  # every failure is a dropped request
                with self.lock:
                    self.errors.append(f"{type(e).__name__}: {e}")

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def wait_for(self, predicate, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            assert not self.errors, self.errors[:5]
            time.sleep(0.05)


def test_forced_renewal_under_load_drops_no_request(app, pebble_ca):
    old = app.served_serial()
    with Load(app.domain, pebble_ca["root_file"]) as load:
        load.wait_for(lambda: len(load.results) >= 50, "requests before the renewal")
        rc, doc, err = app.ferry("certs", "renew", "--force")
        assert rc == 0, err
        new = doc["serial"]
        assert doc["renewed"] is True and doc["previous_serial"] == old and new != old
        load.wait_for(lambda: sum(1 for _, s in load.results if s == new) >= 50, "requests on the new certificate")
    print(f"renewal under load: {len(load.results)} requests on fresh TLS connections, "
          f"{sum(1 for _, s in load.results if s == old)} on the old certificate, {len(load.errors)} errors")
    assert load.errors == []
    assert {status for status, _ in load.results} == {200}
    assert {s for _, s in load.results} == {old, new}  # the load spanned the swap
    assert app.served_serial() == new


def test_renewal_without_force_is_a_no_op_when_not_due(app):
    before = app.served_serial()
    rc, doc, err = app.ferry("certs", "renew")
    assert rc == 0, err
    assert doc["renewed"] is False and "not due" in doc["reason"]
    assert app.served_serial() == before


def test_the_hosts_own_renewer_renews_as_the_timer_would(app):
    """Run exactly the command the cron entry (or systemd service) names, on the host, with the
    host's Python (Debian's python3-acme): this is the unattended path."""
    from ferry.certs import units

    entry = open(f"/etc/cron.d/{units.unit_name(app.name)}").read()
    line = next(line for line in entry.splitlines() if line and line[0].isdigit())
    argv = shlex.split(line.split(" root ", 1)[1].split(" >> ", 1)[0])
    assert argv == units.command("/usr/bin/python3", f"/opt/ferry/{app.name}")
    before = app.served_serial()
    with app.host() as h:
        r = h.run(argv)
        assert r.ok and "not due" in r.stdout, r.stdout + r.stderr
        assert app.served_serial() == before
        r = h.run([*argv, "--force"])
        assert r.ok, r.stdout + r.stderr
    after = app.served_serial()
    assert after != before
    assert f"installed certificate {after}" in r.stdout
    assert f"nginx serves certificate {after} on 127.0.0.1:8443" in r.stdout
    text = (app.metrics_dir / f"ferry_certs_{app.name}.prom").read_text()
    assert 'ferry_certificate_renewal_success{app="certs-renew",domain="certs-renew.ferry.test"} 1' in text

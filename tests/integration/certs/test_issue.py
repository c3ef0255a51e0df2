"""Issue a certificate from pebble through the local target's nginx, and check what a client
sees: the chain, the protocols, the redirect, HSTS, HTTP/2, the status and the metric."""

from __future__ import annotations

import datetime
import os
import stat
import subprocess

import pytest

from .conftest import openssl, tls_get

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def issued(make_app):
    app = make_app("certs-test")
    rc, doc, err = app.ferry("certs", "issue")
    assert rc == 0, err
    return app, doc


def test_issue_serves_a_certificate_that_chains_to_pebbles_root(issued, pebble_ca):
    app, doc = issued
    assert doc["renewed"] is True and doc["reason"] == "no certificate yet"
    r = openssl("s_client", "-connect", "127.0.0.1:8443", "-servername", app.domain,
                "-CAfile", pebble_ca["root_file"], "-verify_return_error", "-verify_hostname", app.domain)
    assert "Verify return code: 0 (ok)" in r.stdout, r.stdout + r.stderr
    assert f"subject=CN = {app.domain}" in r.stdout
    assert doc["serial"] == app.served_serial()


def test_private_key_is_readable_by_root_only(issued):
    app, _ = issued
    key = os.path.realpath(f"/opt/ferry/{app.name}/tls/privkey.pem")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(f"/opt/ferry/{app.name}/tls/account-key.pem").st_mode) == 0o600


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_tls_1_0_and_1_1_are_refused_by_the_server(issued, version):
    app, _ = issued
    # the client is told to allow the old protocols, so a refusal is the server's
    r = openssl("s_client", "-connect", "127.0.0.1:8443", "-servername", app.domain, version,
                "-cipher", "DEFAULT:@SECLEVEL=0")
    assert r.returncode != 0
    assert "alert protocol version" in r.stderr, r.stderr
    assert "no protocols available" not in r.stderr


@pytest.mark.parametrize("version,expected", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls_1_2_and_1_3_are_accepted(issued, pebble_ca, version, expected):
    app, _ = issued
    r = openssl("s_client", "-connect", "127.0.0.1:8443", "-servername", app.domain, version,
                "-CAfile", pebble_ca["root_file"], "-verify_return_error")
    assert f"New, {expected}, Cipher is" in r.stdout, r.stdout + r.stderr
    assert "Verify return code: 0 (ok)" in r.stdout


def test_session_tickets_are_off(issued, pebble_ca):
    app, _ = issued
    r = openssl("s_client", "-connect", "127.0.0.1:8443", "-servername", app.domain, "-tls1_2",
                "-CAfile", pebble_ca["root_file"])
    assert "TLS session ticket lifetime hint" not in r.stdout
    assert "New, TLSv1.2, Cipher is" in r.stdout


def test_http_redirects_to_https_but_serves_the_acme_path(issued):
    import httpx

    app, _ = issued
    r = httpx.get("http://127.0.0.1:8080/some/page?x=1", headers={"Host": app.domain}, follow_redirects=False)
    assert r.status_code == 308
    assert r.headers["location"] == f"https://{app.domain}:8443/some/page?x=1"
    token = f"/opt/ferry/{app.name}/acme/.well-known/acme-challenge/probe-token"
    with open(token, "w") as f:
        f.write("probe\n")
    try:
        r = httpx.get("http://127.0.0.1:8080/.well-known/acme-challenge/probe-token", headers={"Host": app.domain})
        assert r.status_code == 200 and r.text == "probe\n"
    finally:
        os.unlink(token)


def test_https_answers_over_http2_with_hsts(issued, pebble_ca):
    app, _ = issued
    status, _, headers = tls_get(app.domain, pebble_ca["root_file"])
    assert status == 200
    assert headers["strict-transport-security"] == "max-age=31536000"
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--http2",
                        "--cacert", pebble_ca["root_file"], "--resolve", f"{app.domain}:8443:127.0.0.1",
                        f"https://{app.domain}:8443/"], capture_output=True, text=True, timeout=30)
    assert r.stdout == "2 200", r.stderr


def test_issue_again_orders_nothing_while_the_certificate_is_valid(issued):
    app, first = issued
    rc, doc, err = app.ferry("certs", "issue")
    assert rc == 0, err
    assert doc["renewed"] is False
    assert "not due" in doc["reason"]
    assert doc["serial"] == first["serial"] == app.served_serial()


def test_status_json_names_domain_port_expiry_and_issuer(issued):
    app, first = issued
    rc, doc, err = app.ferry("certs", "status")
    assert rc == 0, err
    assert doc["domain"] == app.domain
    assert doc["https_port"] == 8443
    assert doc["issuer"].startswith("CN=Pebble Intermediate CA")
    not_after = datetime.datetime.fromisoformat(doc["not_after"])
    left = (not_after - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 86400
    assert abs(doc["days_left"] - left) < 0.1
    assert doc["serial"] == doc["served_serial"] == app.served_serial()
    assert doc["renewal"] in ("cron", "systemd")
    assert doc["due"] is False


def test_expiry_metric_is_in_textfile_collector_format(issued):
    from prometheus_client.parser import text_string_to_metric_families

    app, doc = issued
    text = (app.metrics_dir / f"ferry_certs_{app.name}.prom").read_text()
    samples = {s.name: s for fam in text_string_to_metric_families(text) for s in fam.samples}
    days = samples["ferry_certificate_expiry_days"]
    assert days.labels == {"app": app.name, "domain": app.domain}
    assert abs(days.value - doc["days_left"]) < 1
    not_after = datetime.datetime.fromisoformat(doc["not_after"]).timestamp()
    assert samples["ferry_certificate_not_after_timestamp_seconds"].value == int(not_after)
    assert samples["ferry_certificate_renewal_success"].value == 1

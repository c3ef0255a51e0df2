"""Bad input and failures: a clear message, a non-zero exit, and the old certificate still
serving (nothing changed)."""

from __future__ import annotations

import re

import pytest

from .conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app(make_app):
    app = make_app("certs-fail")
    rc, doc, err = app.ferry("certs", "issue")
    assert rc == 0, err
    return app


@pytest.fixture
def elsewhere(app, pebble_ca):
    """The mock DNS answers the app's name with another loopback address where nothing listens."""
    from ferry.local import pebble

    pebble.set_address(pebble_ca["state_dir"], app.domain, "127.0.0.2")
    yield
    pebble.clear_address(pebble_ca["state_dir"], app.domain)


def _variant(app, **changes) -> None:
    """Rewrite one key of ferry.toml (e.g. a port) for this test; restored by the caller."""
    text = app.config.read_text()
    for key, value in changes.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert n == 1, key
    app.config.write_text(text)


def test_dns_pointing_elsewhere_is_caught_before_the_ca_is_asked(app, elsewhere):
    before = app.served_serial()
    rc, doc, err = app.ferry("certs", "renew", "--force")
    assert rc == 1
    assert f"{app.domain} resolves to 127.0.0.2, but this host is 127.0.0.1" in err
    assert "nothing was changed" in err
    assert doc["ok"] is False and doc["error"] == "CertError"
    assert app.served_serial() == before


@pytest.fixture
def unresolvable(app, pebble_ca):
    """The mock DNS answers SERVFAIL for the app's name, so the CA cannot reach it. (Not "an
    address where nothing listens": some sandboxes deliver any 127/8 address to a socket bound
    on 127.0.0.1, and then the challenge would be answered.)"""
    from ferry.local import pebble

    pebble.set_servfail(pebble_ca["state_dir"], app.domain)
    yield
    pebble.clear_servfail(pebble_ca["state_dir"], app.domain)


def test_a_name_that_does_not_resolve_is_caught_before_the_ca_is_asked(app, unresolvable):
    before = app.served_serial()
    rc, doc, err = app.ferry("certs", "renew", "--force")
    assert rc == 1
    assert f"DNS pre-check: {app.domain} does not resolve" in err, err
    assert doc["error"] == "CertError"
    assert app.served_serial() == before


def test_failing_challenge_leaves_the_old_certificate_serving(app, unresolvable):
    before = app.served_serial()
    # past our own DNS check, the CA itself fails to reach the name on port 80
    rc, doc, err = app.ferry("certs", "issue", "--force", "--skip-dns-check")
    assert rc == 1, f"the CA should have failed the challenge, but: {doc} {err}"
    assert "the CA could not connect to the domain on port 80" in err, err
    assert "the old certificate (if any) keeps serving" in err
    assert app.served_serial() == before
    text = (app.metrics_dir / f"ferry_certs_{app.name}.prom").read_text()
    assert f'ferry_certificate_renewal_success{{app="{app.name}",domain="{app.domain}"}} 0' in text
    assert "ferry_certificate_expiry_days" in text  # the old certificate's expiry is still exported
    # and once DNS is right again, a renewal succeeds
    from ferry.local import pebble

    pebble.clear_servfail(app.pebble["state_dir"], app.domain)
    rc, doc, err = app.ferry("certs", "renew", "--force")
    assert rc == 0, err
    assert app.served_serial() == doc["serial"] != before


def test_port_80_not_serving_the_challenge_path_is_a_clear_error(app):
    before = app.served_serial()
    original = app.config.read_text()
    closed = free_port()
    _variant(app, http_port=closed)
    try:
        rc, doc, err = app.ferry("certs", "renew", "--force")
    finally:
        app.config.write_text(original)
    assert rc == 1
    assert f"port {closed} of 127.0.0.1 did not serve the ACME challenge path" in err
    assert "nothing was changed" in err
    assert app.served_serial() == before


def test_unreachable_acme_server_is_a_clear_error(app):
    before = app.served_serial()
    original = app.config.read_text()
    _variant(app, acme_directory=f'"https://127.0.0.1:{free_port()}/dir"')
    try:
        rc, doc, err = app.ferry("certs", "renew", "--force")
    finally:
        app.config.write_text(original)
    assert rc == 1
    assert "could not reach the ACME server" in err and "tls.acme_directory" in err
    assert app.served_serial() == before


def test_renew_without_a_certificate_says_to_issue_first(make_app):
    other = make_app("certs-none")
    rc, doc, err = other.ferry("certs", "renew")
    assert rc == 1
    assert "no certificate for certs-none.ferry.test to renew" in err and "ferry certs issue" in err


def test_tls_disabled_is_a_config_error(make_app):
    other = make_app("certs-off", enabled=False)
    rc, doc, err = other.ferry("certs", "issue")
    assert rc == 2
    assert "tls.enabled is false" in err

"""pebble for the local target: its config and command lines (pure)."""

from __future__ import annotations

from ferry.local import pebble


def test_pebble_validates_http01_on_the_port_nginx_answers():
    cfg = pebble.config(8080, 8443, "/s/listener.pem", "/s/listener.key")["pebble"]
    assert cfg["httpPort"] == 8080 and cfg["tlsPort"] == 8443
    assert cfg["listenAddress"] == "127.0.0.1:14000"
    assert cfg["managementListenAddress"] == "127.0.0.1:15000"
    assert (cfg["certificate"], cfg["privateKey"]) == ("/s/listener.pem", "/s/listener.key")


def test_everything_binds_loopback_and_pebble_asks_challtestsrv_for_names():
    argv = pebble.challtestsrv_argv()
    assert argv[argv.index("-dns01") + 1] == "127.0.0.1:8053"
    assert argv[argv.index("-management") + 1] == "127.0.0.1:8055"
    assert argv[argv.index("-defaultIPv4") + 1] == "127.0.0.1"
    for unused in ("-http01", "-https01", "-tlsalpn01"):
        assert argv[argv.index(unused) + 1] == ""  # nginx answers the challenges, not challtestsrv
    assert pebble.pebble_argv("/s/c.json") == ["pebble", "-config", "/s/c.json", "-dnsserver", "127.0.0.1:8053",
                                               "-strict=false"]


def test_addresses_are_under_the_state_dir():
    a = pebble.addresses("/var/lib/ferry-local")
    assert a["directory"] == "https://127.0.0.1:14000/dir"
    assert a["root_url"] == "https://127.0.0.1:15000/roots/0"
    assert a["ca_bundle"] == "/var/lib/ferry-local/pebble/listener-ca.pem"


def test_listener_certificate_is_for_localhost_and_127_0_0_1(tmp_path):
    import ipaddress

    from cryptography import x509

    pebble._write_listener_cert(tmp_path)
    cert = x509.load_pem_x509_certificate((tmp_path / "listener.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "listener-ca.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    cert.verify_directly_issued_by(ca)
    assert oct((tmp_path / "listener.key").stat().st_mode & 0o777) == "0o600"


def test_status_of_a_stopped_pebble_is_not_healthy(tmp_path):
    st = pebble.status(tmp_path)
    assert st["healthy"] is False
    assert [c["name"] for c in st["components"]] == ["pebble", "challtestsrv"]
    assert all(c["pid"] is None for c in st["components"])

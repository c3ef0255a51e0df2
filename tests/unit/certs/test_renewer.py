"""The renewer's pure parts: when to renew, reading certificates, the metric, error messages,
and the install swap on real files (nginx -t stood in by `true` / `false`)."""

from __future__ import annotations

import datetime
import os

import pytest

from ferry.certs import renewer as R

from .helpers import make_chain


def info_for(**kw) -> R.CertInfo:
    chain, _ = make_chain(**kw)
    return R.inspect(chain.encode())


def test_inspect_reads_names_dates_issuer_serial_and_ocsp_url():
    chain, _ = make_chain(names=("a.example.com", "www.a.example.com"), days=90, ocsp="http://ocsp.example")
    info = R.inspect(chain.encode())
    assert info.names == ("a.example.com", "www.a.example.com")
    assert info.issuer == "CN=Test Intermediate, O=Test CA"
    assert info.ocsp_url == "http://ocsp.example"
    assert 89.9 < info.days_left() <= 90
    assert int(info.serial, 16) > 0


def test_no_certificate_is_due():
    assert R.renewal_due(None, ("a.example.com",), 30) == (True, "no certificate yet")


def test_certificate_with_more_than_renew_before_days_left_is_not_due():
    due, why = R.renewal_due(info_for(days=90, age=10), ("app.example.com",), 30)
    assert not due and "not due" in why


def test_certificate_under_renew_before_days_is_due():
    due, why = R.renewal_due(info_for(days=90, age=61), ("app.example.com",), 30)
    assert due and "days left" in why


def test_certificate_missing_a_name_is_due_whatever_its_age():
    due, why = R.renewal_due(info_for(days=90), ("app.example.com", "www.example.com"), 30)
    assert due and "does not cover www.example.com" in why


def test_short_lived_certificates_renew_at_a_third_of_their_life_not_every_run():
    # a 6-day certificate with 5 days left: a 30-day threshold would renew on every run
    due, _ = R.renewal_due(info_for(days=6, age=1), ("app.example.com",), 30)
    assert not due
    due, _ = R.renewal_due(info_for(days=6, age=4.5), ("app.example.com",), 30)
    assert due


def test_split_chain_separates_leaf_and_intermediates():
    chain, _ = make_chain()
    leaf, rest = R.split_chain(chain)
    assert leaf.count("BEGIN CERTIFICATE") == 1 and rest.count("BEGIN CERTIFICATE") == 1
    assert leaf + rest == chain


@pytest.mark.parametrize("key_type", R.KEY_TYPES[:3])
def test_csr_names_every_domain(key_type):
    from cryptography import x509

    key = R.new_private_key_pem(key_type)
    csr = x509.load_pem_x509_csr(R.csr_pem(key, ("a.example.com", "b.example.com")))
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.example.com", "b.example.com"]
    assert csr.is_signature_valid


def test_metric_text_is_exact():
    info = info_for(days=90)
    now = info.not_before + datetime.timedelta(days=30)
    text = R.metric_text("hello", "hello.example.com", info, success=True, now=now)
    labels = 'app="hello",domain="hello.example.com"'
    assert f"ferry_certificate_expiry_days{{{labels}}} 60.000\n" in text
    assert f"ferry_certificate_not_after_timestamp_seconds{{{labels}}} {int(info.not_after.timestamp())}\n" in text
    assert f"ferry_certificate_renewal_success{{{labels}}} 1\n" in text
    assert f"ferry_certificate_renewal_last_run_timestamp_seconds{{{labels}}} {int(now.timestamp())}\n" in text
    assert text.count("# TYPE") == 4


def test_metric_parses_as_prometheus_text_format_even_without_a_certificate():
    from prometheus_client.parser import text_string_to_metric_families

    text = R.metric_text("a", 'we"ird', None, success=False)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert "ferry_certificate_expiry_days" not in fams
    assert fams["ferry_certificate_renewal_success"].samples[0].value == 0
    assert fams["ferry_certificate_renewal_success"].samples[0].labels["domain"] == 'we"ird'


def _problem(code: str, detail: str):
    from acme import messages

    return messages.Error.with_code(code, detail=detail)


def test_rate_limit_error_says_what_to_do():
    e = R.explain(_problem("rateLimited", "too many certificates already issued"))
    assert "rate limit" in e.message and "too many certificates" in e.message
    assert "staging" in e.hint and "old certificate keeps serving" in e.hint


def test_unauthorized_error_points_at_dns_and_port_80():
    e = R.explain(_problem("unauthorized", "Invalid response from http://x/.well-known/acme-challenge/t: 404"))
    assert "HTTP-01" in e.message and "404" in e.message
    assert "A/AAAA" in e.hint and "port 80" in e.hint


def test_connection_error_explains_unreachable_ca():
    e = R.explain(ConnectionRefusedError(111, "Connection refused"))
    assert "could not reach the ACME server" in e.message and "tls.acme_directory" in e.hint


class Recorder(R.LocalHost):
    def __init__(self, nginx_ok: bool):
        self.nginx_ok = nginx_ok
        self.commands = []

    def run(self, argv, check=True):
        self.commands.append(argv)
        return (0, "") if (argv[0] != "nginx-test" or self.nginx_ok) else (1, "nginx: [emerg] bad key")


def _settings(tmp_path) -> R.Settings:
    return R.Settings(app="a", domains=("app.example.com",), directory="https://ca/dir",
                      tls_dir=str(tmp_path / "tls"), webroot=str(tmp_path / "acme"),
                      nginx_test=("nginx-test",), nginx_reload=("nginx-reload",), metrics_dir=None)


def test_install_swaps_current_and_points_nginx_paths_at_it(tmp_path):
    host, s = Recorder(nginx_ok=True), _settings(tmp_path)
    chain, key = make_chain()
    info = R.install(host, s, key, chain, log=lambda m: None, check_served=False)
    tls = tmp_path / "tls"
    assert os.readlink(tls / "fullchain.pem") == "current/fullchain.pem"
    assert (tls / "fullchain.pem").read_text() == chain
    assert (tls / "privkey.pem").read_bytes() == key
    assert oct((tls / "privkey.pem").stat().st_mode & 0o777) == "0o600"
    assert R.inspect((tls / "cert.pem").read_bytes()).serial == info.serial
    assert host.commands == [["nginx-test"], ["nginx-reload"]]


def test_nginx_rejecting_the_new_certificate_swaps_the_old_one_back_without_reload(tmp_path):
    s = _settings(tmp_path)
    old_chain, old_key = make_chain()
    R.install(Recorder(nginx_ok=True), s, old_key, old_chain, log=lambda m: None, check_served=False)
    previous = os.readlink(tmp_path / "tls" / "current")
    host = Recorder(nginx_ok=False)
    new_chain, new_key = make_chain()
    with pytest.raises(R.RenewError, match="old one keeps serving"):
        R.install(host, s, new_key, new_chain, log=lambda m: None, check_served=False)
    assert os.readlink(tmp_path / "tls" / "current") == previous
    assert (tmp_path / "tls" / "fullchain.pem").read_text() == old_chain
    assert ["nginx-reload"] not in host.commands


def test_install_keeps_a_few_archives_only(tmp_path):
    s = _settings(tmp_path)
    for _ in range(R.KEEP_ARCHIVES + 2):
        chain, key = make_chain()
        R.install(Recorder(True), s, key, chain, log=lambda m: None, check_served=False)
    archives = os.listdir(tmp_path / "tls" / "archive")
    assert len(archives) == R.KEEP_ARCHIVES
    assert os.readlink(tmp_path / "tls" / "current").split("/")[-1] in archives


def test_settings_round_trip_through_json():
    s = R.Settings(app="a", domains=("x.example.com", "y.example.com"), directory="https://ca/dir",
                   tls_dir="/opt/ferry/a/tls", webroot="/opt/ferry/a/acme",
                   nginx_test=("nginx", "-t"), nginx_reload=("nginx", "-s", "reload"))
    assert R.Settings.from_json(s.to_json()) == s

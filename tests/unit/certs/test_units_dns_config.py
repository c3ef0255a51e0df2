"""Pure parts around the renewer: the timer / cron files, the DNS pre-check's verdicts, the
[tls] config section, the renewer settings derived from ferry.toml, and the TLS server block."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry import config, nginx
from ferry.certs import dns, manage, units
from ferry.errors import CertError, ConfigError


def test_systemd_files_run_the_renewer_twice_a_day_with_jitter():
    files = units.files("systemd", "hello", "/usr/bin/python3", "/opt/ferry/hello", "/var/lib/node")
    service = files["/etc/systemd/system/ferry-certs-hello.service"]
    timer = files["/etc/systemd/system/ferry-certs-hello.timer"]
    assert "ExecStart=/usr/bin/python3 /opt/ferry/hello/tls/renew.py --config /opt/ferry/hello/tls/renew.json\n" in service
    assert "Type=oneshot\n" in service
    assert "ProtectSystem=full\n" in service and "NoNewPrivileges=yes\n" in service
    minute = units._minute("hello")
    assert f"OnCalendar=*-*-* 00,12:{minute:02d}:00\n" in timer
    assert "RandomizedDelaySec=1h\n" in timer and "Persistent=true\n" in timer
    assert units.enable_commands("systemd", "hello") == [
        ["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "ferry-certs-hello.timer"]]


def test_cron_entry_runs_the_same_command_as_root():
    files = units.files("cron", "hello", "/usr/bin/python3", "/opt/ferry/hello", None)
    (path, text), = files.items()
    assert path == "/etc/cron.d/ferry-certs-hello"
    m = units._minute("hello")
    assert (f"{m} 0,12 * * * root /usr/bin/python3 /opt/ferry/hello/tls/renew.py --config "
            "/opt/ferry/hello/tls/renew.json >> /opt/ferry/hello/tls/renew.log 2>&1\n") in text
    assert units.enable_commands("cron", "hello") == []


def test_renewal_minute_differs_between_apps_and_is_stable():
    assert units._minute("hello") == units._minute("hello")
    assert len({units._minute(f"app{i}") for i in range(20)}) > 5


def test_dns_check_accepts_the_hosts_address():
    dns.check([dns.Resolution("a.example.com", frozenset({"203.0.113.7"}))], {"203.0.113.7"})


def test_dns_check_names_the_wrong_record_and_the_fix():
    with pytest.raises(CertError) as e:
        dns.check([dns.Resolution("a.example.com", frozenset({"198.51.100.1", "203.0.113.7"}))], {"203.0.113.7"})
    assert e.value.message == ("DNS pre-check: a.example.com resolves to 198.51.100.1, 203.0.113.7, "
                               "but this host is 203.0.113.7")
    assert "remove the stale 198.51.100.1" in e.value.hint and "nothing was changed" in e.value.hint


def test_dns_check_on_a_missing_record_says_create_it():
    with pytest.raises(CertError) as e:
        dns.check([dns.Resolution("a.example.com", frozenset(), "the name does not exist (NXDOMAIN)")],
                  {"203.0.113.7"})
    assert "does not resolve: the name does not exist (NXDOMAIN)" in e.value.message
    assert "create an A record a.example.com -> 203.0.113.7" in e.value.hint


def test_dns_check_without_a_known_address_asks_for_one():
    with pytest.raises(CertError, match="does not know this host's public address"):
        dns.check([dns.Resolution("a.example.com", frozenset({"203.0.113.7"}))], set())


def test_host_addresses_keeps_ip_literals():
    assert dns.host_addresses(["203.0.113.7", "::1"]) == {"203.0.113.7", "::1"}


def _cfg(tmp_path: Path, app: dict | None = None, tls: dict | None = None, **sections) -> config.Config:
    (tmp_path / "src").mkdir(exist_ok=True)
    data = {"app": {"name": "hello", "domain": "hello.example.com", **(app or {})},
            "image": {"repository": "r", "base": "b", "source": "src", "entrypoint": ["python3"]},
            "tls": {"enabled": True, **(tls or {})}, **sections}
    return config.parse(data, tmp_path / "ferry.toml")


def test_tls_defaults_are_lets_encrypt_production_and_thirty_days(tmp_path):
    t = _cfg(tmp_path).tls
    assert t.acme_directory == "https://acme-v02.api.letsencrypt.org/directory"
    assert (t.renew_before_days, t.hsts_max_age, t.key_type, t.renewal) == (30, 31536000, "ecdsa-p256", "auto")


def test_staging_alias_names_lets_encrypt_staging(tmp_path):
    t = _cfg(tmp_path, tls={"acme_directory": "letsencrypt-staging"}).tls
    assert t.acme_directory == "https://acme-staging-v02.api.letsencrypt.org/directory"


@pytest.mark.parametrize("tls,message", [
    ({"acme_directory": "http://ca/dir"}, "tls.acme_directory: 'http://ca/dir' is not an https:// URL"),
    ({"renew_before_days": 0}, "tls.renew_before_days: 0 is out of range"),
    ({"key_type": "dsa"}, "tls.key_type: 'dsa' is not supported"),
    ({"resolver": "dns.example"}, "tls.resolver: 'dns.example' is not IP[:port]"),
    ({"public_addresses": ["my-host"]}, "tls.public_addresses: 'my-host' is not an IP address"),
    ({"domains": ["www..example.com"]}, "tls.domains: 'www..example.com' is not a DNS name"),
    ({"renewal": "anacron"}, "tls.renewal: 'anacron' is not known"),
    ({"metrics_dir": "metrics"}, "tls.metrics_dir: 'metrics' must be an absolute path"),
    ({"eab_hmac_env": "not a name"}, "tls.eab_hmac_env: 'not a name' is not an environment variable name"),
    ({"hsts_max_age": -1}, "tls.hsts_max_age: must not be negative"),
    ({"email": "ops"}, "tls.email: 'ops' is not an email address"),
    ({"typo": 1}, "tls: unknown key 'typo'"),
])
def test_bad_tls_config_names_the_key_and_the_fix(tmp_path, tls, message):
    with pytest.raises(ConfigError) as e:
        _cfg(tmp_path, tls=tls)
    assert e.value.message.startswith(f"ferry.toml: {message}")
    assert e.value.hint


def test_certificate_without_a_domain_is_a_config_error(tmp_path):
    cfg = _cfg(tmp_path, app={"domain": None})
    with pytest.raises(ConfigError, match="app.domain: not set"):
        manage.domains(cfg)


def test_settings_derive_paths_and_nginx_commands_from_the_config(tmp_path):
    cfg = _cfg(tmp_path, tls={"domains": ["www.hello.example.com"], "ca_bundle": "ca.pem", "metrics_dir": "/m"},
               deploy={"root": "/srv/ferry", "nginx_conf": "/etc/nginx/custom.conf"})
    s = manage.settings(cfg)
    assert s.domains == ("hello.example.com", "www.hello.example.com")
    assert (s.tls_dir, s.webroot) == ("/srv/ferry/hello/tls", "/srv/ferry/hello/acme")
    assert s.nginx_test == ("nginx", "-c", "/etc/nginx/custom.conf", "-t", "-q")
    assert s.nginx_reload == ("nginx", "-c", "/etc/nginx/custom.conf", "-s", "reload")
    assert s.ca_bundle == "/srv/ferry/hello/tls/acme-ca.pem"  # the host's copy, not the operator's path
    assert s.metrics_dir == "/m" and s.renew_before_days == 30


def test_tls_server_block_has_the_intermediate_profile(tmp_path):
    cfg = _cfg(tmp_path, tls={"hsts_max_age": 600}, proxy={"listen": "127.0.0.1", "http_port": 8080, "https_port": 8443})
    site = nginx.render_site(cfg, tls=True)
    https = site[site.index("listen 127.0.0.1:8443"):]
    for line in [
        "listen 127.0.0.1:8443 ssl http2;",
        "server_name hello.example.com;",
        "ssl_certificate /opt/ferry/hello/tls/fullchain.pem;",
        "ssl_certificate_key /opt/ferry/hello/tls/privkey.pem;",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
        "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305;",
        "ssl_prefer_server_ciphers off;",
        "ssl_dhparam /opt/ferry/hello/tls/dhparam.pem;",
        "ssl_session_tickets off;",
        "ssl_stapling on;",
        "ssl_trusted_certificate /opt/ferry/hello/tls/chain.pem;",
        'add_header Strict-Transport-Security "max-age=600" always;',
        "include /opt/ferry/hello/nginx/proxy.conf;",
    ]:
        assert line in https, line
    assert "return 308 https://$host:8443$request_uri;" in site[:site.index("listen 127.0.0.1:8443")]


def test_shipped_dh_parameters_are_the_rfc7919_ffdhe2048_group():
    import subprocess

    r = subprocess.run(["openssl", "pkeyparam", "-in", str(manage.dhparam()), "-text", "-noout"],
                       capture_output=True, text=True, timeout=30)
    assert "GROUP: ffdhe2048" in r.stdout, r.stdout + r.stderr


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    import subprocess
    import sys

    app_dir = tmp_path / "app"
    (app_dir / "tls").mkdir(parents=True)
    (app_dir / "acme").mkdir()
    (app_dir / "tls" / "renew.py").write_text("")
    for path, text in units.files("systemd", "hello", sys.executable, str(app_dir), str(tmp_path)).items():
        (tmp_path / path.rsplit("/", 1)[1]).write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", "ferry-certs-hello.timer", "ferry-certs-hello.service"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr

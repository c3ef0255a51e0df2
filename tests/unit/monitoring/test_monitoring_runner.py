"""The runner's pure parts: pinning, secrets from the environment, file sync, the tunnel."""

from __future__ import annotations

import io
import tarfile

import pytest

from ferry.deploy.host import HostSpec
from ferry.errors import ConfigError
from ferry.monitoring import render
from ferry.monitoring.images import upstream_version
from ferry.monitoring.runner import (changed_files, check_pinned, images_of, open_tunnel, parse_sha256sum,
                                     secrets_of, sha256_text, tarball, tunnel_argv)
from ferry.monitoring.settings import settings

from .helpers import config

PINNED = "registry.example.com/ferry/prometheus@sha256:" + "a" * 64


def test_tags_are_fine_on_the_local_target_but_a_real_host_needs_digests():
    images = images_of(config())
    check_pinned(images, ["127.0.0.1"])
    with pytest.raises(ConfigError, match=r"monitoring.images.prometheus: '127.0.0.1:5000/ferry/prometheus:2.42.0' "
                                          r"is not pinned by digest \(host 203.0.113.7 is not local\)"):
        check_pinned(images, ["127.0.0.1", "203.0.113.7"])
    check_pinned({k: PINNED for k in images}, ["203.0.113.7"])


def test_grafana_is_started_only_with_an_image_and_then_needs_a_strong_password_from_the_env():
    cfg = config(f'images = {{ grafana = "{PINNED.replace("prometheus", "grafana")}" }}')
    assert "grafana" in images_of(cfg) and "grafana" not in images_of(config())
    s = settings(cfg)
    with pytest.raises(ConfigError, match="FERRY_GRAFANA_ADMIN_PASSWORD is not set"):
        secrets_of(cfg, s, {}, grafana=True)
    with pytest.raises(ConfigError, match="Grafana's admin password is too weak"):
        secrets_of(cfg, s, {"FERRY_GRAFANA_ADMIN_PASSWORD": "admin"}, grafana=True)
    (secret,) = secrets_of(cfg, s, {"FERRY_GRAFANA_ADMIN_PASSWORD": "x7Rk2pQ9vLm4Zt8w"}, grafana=True)
    assert secret.path == "/opt/ferry/_monitoring/secrets/grafana/admin_password"
    assert secret.owner == "472:0" and secret.value == "x7Rk2pQ9vLm4Zt8w"


def test_alert_receiver_secrets_come_from_the_named_variables():
    cfg = config('alerts = { receiver = "slack", slack_webhook_env = "HOOK" }')
    s = settings(cfg)
    with pytest.raises(ConfigError, match="HOOK is not set"):
        secrets_of(cfg, s, {}, grafana=False)
    with pytest.raises(ConfigError, match="must be an https:// URL"):
        secrets_of(cfg, s, {"HOOK": "http://hooks.example.com/x"}, grafana=False)
    (secret,) = secrets_of(cfg, s, {"HOOK": "https://hooks.example.com/x"}, grafana=False)
    assert secret.path.endswith("/secrets/alertmanager/slack_webhook_url") and secret.owner == "65534:65534"
    assert secrets_of(config(), s, {}, grafana=False) == []


def test_a_webhook_token_comes_from_its_variable_and_a_plain_webhook_needs_none():
    cfg = config('alerts = { receiver = "webhook", webhook_url = "https://a.example.com/h", webhook_token_env = "TOK" }')
    s = settings(cfg)
    with pytest.raises(ConfigError, match="TOK is not set"):
        secrets_of(cfg, s, {}, grafana=False)
    (secret,) = secrets_of(cfg, s, {"TOK": "t0k3n"}, grafana=False)
    assert secret.path.endswith("/secrets/alertmanager/webhook_token") and secret.value == "t0k3n"
    assert secret.owner == "65534:65534"
    plain = config('alerts = { receiver = "webhook", webhook_url = "https://a.example.com/h" }')
    assert secrets_of(plain, settings(plain), {}, grafana=False) == []


def test_only_files_whose_content_differs_on_the_host_are_installed():
    files = [render.File("/r/a.yml", "a\n"), render.File("/r/b.yml", "b\n"), render.File("/r/c.yml", "c\n")]
    a, old = sha256_text("a\n"), sha256_text("old")
    out = f"{a}  /r/a.yml\n{old}  /r/b.yml\nsha256sum: /r/c.yml: No such file\n"
    assert parse_sha256sum(out) == {"/r/a.yml": sha256_text("a\n"), "/r/b.yml": sha256_text("old")}
    assert [f.path for f in changed_files(files, parse_sha256sum(out))] == ["/r/b.yml", "/r/c.yml"]


def test_the_staging_tarball_is_stable_and_holds_every_file():
    files = {"etc/prometheus/prometheus.yml": "x: 1\n", "etc/alertmanager/alertmanager.yml": "y: 2\n"}
    data = tarball(files)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        assert {m.name: t.extractfile(m).read().decode() for m in t.getmembers()} == files


def test_the_tunnel_forwards_each_port_to_the_hosts_loopback():
    argv = tunnel_argv(HostSpec("ubuntu", "203.0.113.7", 22), "/home/me/.ssh/id", [9090, 9093, 3000])
    assert argv == ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=30",
                    "-L", "127.0.0.1:9090:127.0.0.1:9090", "-L", "127.0.0.1:9093:127.0.0.1:9093",
                    "-L", "127.0.0.1:3000:127.0.0.1:3000", "-i", "/home/me/.ssh/id", "ubuntu@203.0.113.7"]
    argv = tunnel_argv(HostSpec("root", "127.0.0.1", 2222), None, [9090], offset=10000)
    assert argv[-5:] == ["-L", "127.0.0.1:19090:127.0.0.1:9090", "-p", "2222", "root@127.0.0.1"]


def test_open_on_a_remote_host_prints_the_tunnel_and_on_this_machine_the_urls():
    remote = config(hosts='["ubuntu@203.0.113.7"]')
    r = open_tunnel(remote)
    assert r["command"][-1] == "ubuntu@203.0.113.7"
    assert r["prometheus_url"] == "http://127.0.0.1:9090" and r["grafana_url"] is None
    local = open_tunnel(config())
    assert local["command"] is None and "this machine" in local["note"]
    shifted = open_tunnel(config(), offset=10000)
    assert shifted["prometheus_url"] == "http://127.0.0.1:19090" and "-p" in shifted["command"]
    with pytest.raises(ConfigError, match="--host web-9.test: not one of this app's hosts"):
        open_tunnel(remote, host="web-9.test")


def test_image_tags_are_the_upstream_version_of_the_debian_package():
    assert upstream_version("2.42.0+ds-5+deb12u1") == "2.42.0"
    assert upstream_version("0.25.0-1+b4") == "0.25.0"
    assert upstream_version("1:1.2~rc1-3") == "1.2"

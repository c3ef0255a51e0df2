"""The local target's daemons as data: flags that keep Docker off the network, loopback-only
listeners, and the files each needs."""

from __future__ import annotations

import yaml

from ferry.config import LocalConfig
from ferry.local.components import components


def by_name():
    return {c.name: c for c in components(LocalConfig(state_dir="/s"), deploy_root="/opt/ferry")}


def test_dockerd_has_no_bridge_no_iptables_and_its_own_socket_and_data():
    d = by_name()["dockerd"]
    assert "--bridge=none" in d.argv and "--iptables=false" in d.argv
    assert "--host=unix:///s/docker.sock" in d.argv and "--data-root=/s/docker/data" in d.argv


def test_every_listener_is_on_loopback():
    for c in by_name().values():
        assert c.address.startswith(("127.0.0.1:", "unix://")), c


def test_registries_share_storage_and_differ_in_auth():
    regs = {n: yaml.safe_load(next(iter(c.files.values()))) for n, c in by_name().items() if n.startswith("registry")}
    stores = {r["storage"]["filesystem"]["rootdirectory"] for r in regs.values()}
    assert stores == {"/s/registry/storage"}
    assert "auth" not in regs["registry"]
    assert regs["registry-basic"]["auth"]["htpasswd"]["path"] == "/s/registry/htpasswd"
    token = regs["registry-token"]["auth"]["token"]
    assert token["realm"] == "http://127.0.0.1:5003/token" and token["rootcertbundle"] == "/s/registry/token.crt"
    assert all(r["storage"]["delete"]["enabled"] for r in regs.values())


def test_nginx_includes_every_apps_site_and_serves_stub_status_on_loopback():
    n = by_name()["nginx"]
    conf = n.files["/s/nginx/nginx.conf"]
    assert "include /opt/ferry/*/nginx/site.conf;" in conf
    assert "listen 127.0.0.1:8079;" in conf and "stub_status;" in conf
    assert n.argv[-2:] == ("-g", "daemon off;")


def test_sshd_takes_keys_only_from_the_state_dir():
    argv = " ".join(by_name()["sshd"].argv)
    assert "AuthorizedKeysFile=/s/ssh/authorized_keys" in argv and "PasswordAuthentication=no" in argv
    assert "ListenAddress=127.0.0.1" in argv and "-p 2222" in argv

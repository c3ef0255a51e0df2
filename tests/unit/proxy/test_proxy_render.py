"""The proxy a real app needs, as the nginx text ferry renders (pure), the config errors that
stop a bad [proxy] before any host is touched, and the same text through the real `nginx -t`
and gixy-ng inside the local target's own main config."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ferry import nginx
from ferry.aws.stack import parse_outputs
from ferry.config import LocalConfig, parse
from ferry.fleet.hosts import resolve_hosts
from ferry.errors import ConfigError, InfraError
from ferry.local.components import Paths, nginx_main_conf
from tests.proxy_support import app_config, main_conf, nginx_t, site_files, tls_material, write

from ..aws.test_aws_stack import OUTPUTS

GIXY = Path(sys.executable).with_name("gixy")


def site(cfg, tls=False):
    return nginx.render_site(cfg, tls=tls)


# --- WebSockets ------------------------------------------------------------------------------

def test_a_websocket_upgrade_passes_and_every_other_request_keeps_the_upstream_alive(tmp_path):
    cfg = app_config(tmp_path)
    proxy = nginx.render_proxy(cfg)
    assert "proxy_http_version 1.1;" in proxy
    assert "proxy_set_header Upgrade $http_upgrade;" in proxy
    assert "proxy_set_header Connection $ferry_proxy_fixture_connection;" in proxy
    assert 'Connection ""' not in proxy
    upstream = nginx.render_upstream(cfg, "blue", "r1")
    # at http level (upstream.conf is included by site.conf, itself inside http {}); "" -> no
    # Connection header at all, so nginx reuses the keep-alive connection
    assert "map $http_upgrade $ferry_proxy_fixture_connection {\n    default upgrade;\n    \"\" \"\";\n}" in upstream
    assert "keepalive 32;" in upstream


# --- limits ------------------------------------------------------------------------------------

def test_uploads_up_to_max_body_in_both_servers(tmp_path):
    tls_site = site(app_config(tmp_path), tls=True)
    assert tls_site.count("client_max_body_size 100m;") == 2  # HTTP and HTTPS
    assert "client_max_body_size 2g;" in site(app_config(tmp_path, proxy={"max_body": "2g"}))
    assert "client_max_body_size 0;" in site(app_config(tmp_path, proxy={"max_body": "0"}))


@pytest.mark.parametrize("value, rendered", [("60s", "60s"), ("15m", "900s"), ("500ms", "500ms"), (120, "120s")])
def test_read_timeout_bounds_reading_and_sending_to_the_app(tmp_path, value, rendered):
    proxy = nginx.render_proxy(app_config(tmp_path, proxy={"read_timeout": value}))
    assert f"proxy_read_timeout {rendered};" in proxy and f"proxy_send_timeout {rendered};" in proxy


# --- gzip --------------------------------------------------------------------------------------

def test_gzip_compresses_text_types_but_never_event_streams(tmp_path):
    text = site(app_config(tmp_path))
    for line in ("gzip on;", "gzip_vary on;", "gzip_proxied any;", "gzip_min_length 256;"):
        assert line in text
    types = next(line for line in text.splitlines() if "gzip_types" in line).strip().rstrip(";").split()[1:]
    for t in ("text/css", "application/javascript", "application/json", "image/svg+xml", "text/plain"):
        assert t in types
    assert "text/event-stream" not in types and "text/html" not in types  # html: always on in nginx


def test_gzip_off_renders_no_gzip_at_all(tmp_path):
    text = site(app_config(tmp_path, proxy={"gzip": False}))
    assert not [line for line in text.splitlines() if line.strip().startswith("gzip")]


# --- files from a volume ---------------------------------------------------------------------------

def test_serve_renders_a_safe_alias_to_the_volume_inside_the_proxied_location(tmp_path):
    cfg = app_config(tmp_path, proxy={"serve": {"/media/": "media"}})
    text = site(cfg)
    vol = f"{cfg.deploy.root}/proxy-fixture/volumes/media"
    block = text[text.index("location ^~ /media/ {"):]
    block = block[:block.index("}") + 1]
    assert f"alias {vol}/;" in block
    assert "autoindex off;" in block and f"disable_symlinks on from={vol};" in block
    assert "add_header X-Content-Type-Options nosniff always;" in block and "expires 1h;" in block
    assert "proxy_pass" not in block
    # nested in `location /`, after the proxy include: its client-IP settings apply to files too
    assert text.index("include " + nginx.proxy_path(cfg)) < text.index("location ^~ /media/")


def test_serve_under_tls_only_on_https_and_with_hsts(tmp_path):
    cfg = app_config(tmp_path, proxy={"serve": {"/media/": "media", "/uploads/big/": "data"}})
    text = site(cfg, tls=True)
    http, https = text.split("listen 127.0.0.1:33443 ssl http2;")
    assert "/media/" not in http and "return 308" in http
    assert https.count('add_header Strict-Transport-Security "max-age=31536000" always;') == 3
    assert https.index("location ^~ /uploads/big/") < https.index("location ^~ /media/")  # longest first
    assert f"alias {cfg.deploy.root}/proxy-fixture/volumes/data/;" in https


# --- client IP -----------------------------------------------------------------------------------

def test_no_trusted_proxy_means_no_real_ip_rewriting(tmp_path):
    proxy = nginx.render_proxy(app_config(tmp_path))
    assert "real_ip" not in proxy
    assert "proxy_set_header X-Real-IP $remote_addr;" in proxy


def test_trusted_proxies_and_the_balancers_network_name_the_client(tmp_path):
    cfg = app_config(tmp_path, proxy={"real_ip_from": ["10.1.2.3/16", "192.0.2.7", "2001:db8::/32", "10.42.0.0/16"]})
    proxy = nginx.render_proxy(cfg, behind_balancer=True, balancer_networks=("10.42.0.0/16",))
    assert [line for line in proxy.splitlines() if "real_ip" in line] == [
        "set_real_ip_from 10.1.0.0/16;", "set_real_ip_from 192.0.2.7/32;", "set_real_ip_from 2001:db8::/32;",
        "set_real_ip_from 10.42.0.0/16;", "real_ip_header X-Forwarded-For;", "real_ip_recursive on;"]


def test_hosts_behind_the_balancer_trust_the_stacks_vpc_cidr(tmp_path):
    outputs = dict(OUTPUTS, vpcCidr="10.42.0.0/16")
    assert parse_outputs(outputs, "test").vpc_cidr == "10.42.0.0/16"
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    cfg = dataclasses.replace(app_config(tmp_path), deploy=dataclasses.replace(
        app_config(tmp_path).deploy, hosts=(), stack_outputs="outputs.json"))
    assert [t.balancer_networks for t in resolve_hosts(cfg)] == [("10.42.0.0/16",), ("10.42.0.0/16",)]
    # a host outside any target group takes no balancer's word for the client address
    alone = dict(outputs, targetGroupArns=[], hosts=[dict(OUTPUTS["hosts"][0], targetGroupArn=None)])
    (tmp_path / "outputs.json").write_text(json.dumps(alone))
    assert [t.balancer_networks for t in resolve_hosts(cfg)] == [()]
    # an older stack without the output: nothing trusted, nothing fails
    assert parse_outputs(OUTPUTS, "test").vpc_cidr is None


def test_a_vpc_cidr_that_is_not_one_is_an_infra_error():
    with pytest.raises(InfraError, match="vpcCidr 'ten' is not a CIDR"):
        parse_outputs(dict(OUTPUTS, vpcCidr="ten"), "test")


# --- draining: the main config -------------------------------------------------------------------

def test_the_local_targets_nginx_ends_old_workers_after_worker_shutdown_timeout(tmp_path):
    text = nginx_main_conf(Paths(tmp_path), "/opt/ferry/*/nginx/site.conf", 8079)
    assert "\nworker_shutdown_timeout 30s;\n" in text.split("events")[0]  # main context, default
    assert "worker_shutdown_timeout 2500ms;" in nginx_main_conf(Paths(tmp_path), "x", 8079, 2.5)
    cfg = app_config(tmp_path, local={"worker_shutdown_timeout": "2m"})
    assert cfg.local.worker_shutdown_timeout == 120.0 and LocalConfig().worker_shutdown_timeout == 30.0


# --- a team's own templates --------------------------------------------------------------------

def test_proxy_templates_override_only_the_files_a_team_has(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "proxy.conf.j2").write_text("# ours\nproxy_pass http://{{ upstream }};\n")
    cfg = app_config(tmp_path, proxy={"templates": "mine"})
    assert nginx.render_proxy(cfg) == "# ours\nproxy_pass http://ferry_proxy_fixture;\n"
    assert "client_max_body_size 100m;" in site(cfg)  # ferry's site and limits still


# --- config errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("proxy, message", [
    ({"max_body": "100MB"}, "proxy.max_body: '100MB' is not an nginx size"),
    ({"max_body": "lots"}, "proxy.max_body: 'lots' is not an nginx size"),
    ({"read_timeout": "0s"}, "proxy.read_timeout: must be positive"),
    ({"read_timeout": "a minute"}, "proxy.read_timeout: expected a duration"),
    ({"gzip": "yes"}, "proxy.gzip: expected bool"),
    ({"serve": {"media": "media"}}, "proxy.serve: 'media' is not a URL prefix"),
    ({"serve": {"/media": "media"}}, "proxy.serve: '/media' is not a URL prefix"),
    ({"serve": {"/": "media"}}, "proxy.serve: '/' is not a usable prefix"),
    ({"serve": {"/media/../etc/": "media"}}, "proxy.serve: '/media/../etc/' is not a usable prefix"),
    ({"serve": {"/a//b/": "media"}}, "proxy.serve: '/a//b/' is not a usable prefix"),
    ({"serve": {"/media files/": "media"}}, "is not a URL prefix"),
    ({"serve": {"/.well-known/acme-challenge/x/": "media"}}, "is the ACME webroot's"),
    ({"serve": {"/media/": "uploads"}}, "proxy.serve./media/: 'uploads' is not one of deploy.volumes (data, media)"),
    ({"real_ip_from": ["10.0.0.0/33"]}, "proxy.real_ip_from: '10.0.0.0/33' is not an address or CIDR"),
    ({"real_ip_from": "10.0.0.0/8"}, "expected a list"),
])
def test_a_bad_proxy_key_is_a_clear_error(tmp_path, proxy, message):
    with pytest.raises(ConfigError) as e:
        app_config(tmp_path, proxy=proxy)
    assert message in e.value.message
    assert e.value.hint or "expected" in e.value.message  # the fix, or what is expected instead


def test_serve_needs_the_volume_declared(tmp_path):
    doc = {"app": {"name": "x"}, "image": {"repository": "r/x", "base": "b:1", "source": ".", "entrypoint": ["x"]},
           "proxy": {"serve": {"/media/": "media"}}}
    with pytest.raises(ConfigError, match="is not one of deploy.volumes \\(none\\)") as e:
        parse(doc, tmp_path / "ferry.toml")
    assert 'volumes = { media = "/app/media" }' in e.value.hint


# --- the real nginx -t and gixy-ng ---------------------------------------------------------------

VARIANTS = {
    "defaults": ({}, {}),
    "tls": ({}, {"tls": True}),
    "everything": ({"serve": {"/media/": "media", "/files/data/": "data"}, "real_ip_from": ["10.1.0.0/16", "2001:db8::/32"],
                    "max_body": "1g", "read_timeout": "15m"}, {"behind_balancer": True, "balancer_networks": ("10.42.0.0/16",)}),
    "everything-tls": ({"serve": {"/media/": "media"}, "real_ip_from": ["192.0.2.1"]}, {"tls": True}),
    "no-gzip": ({"gzip": False, "max_body": "0", "read_timeout": "500ms"}, {}),
}


def rendered(tmp_path, variant) -> Path:
    proxy, opts = VARIANTS[variant]
    cfg = app_config(tmp_path, proxy=proxy)
    write(site_files(cfg, **opts))
    if opts.get("tls"):
        tls_material(cfg)
    return main_conf(tmp_path / "state", cfg, status_port=33079, worker_shutdown_timeout=3)


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed (make debs)")
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_directive_passes_nginx_t(tmp_path, variant):
    r = nginx_t(rendered(tmp_path, variant))
    assert r.returncode == 0, r.stderr
    assert "[emerg]" not in r.stderr


def gixy(conf: Path) -> list[dict]:
    r = subprocess.run([str(GIXY), "-f", "json", str(conf)], capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr  # 1: it found something (of any severity)
    return json.loads(r.stdout or "[]")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gixy_finds_nothing_of_high_severity(tmp_path, variant):
    high = [f"{f['plugin']}: {f['reason']}" for f in gixy(rendered(tmp_path, variant)) if f["severity"] == "HIGH"]
    assert high == []


def test_gixy_would_catch_an_alias_that_escapes_its_folder(tmp_path):
    """The check above can fail: the classic alias traversal (a prefix without its trailing /)
    is a HIGH finding."""
    conf = rendered(tmp_path, "everything")
    cfg_site = next((tmp_path / "opt").glob("*/nginx/site.conf"))
    cfg_site.write_text(cfg_site.read_text().replace("location ^~ /media/ {", "location /media {"))
    assert nginx_t(conf).returncode == 0  # nginx itself is happy with it
    assert "alias_traversal" in [f["plugin"] for f in gixy(conf) if f["severity"] == "HIGH"]


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed (make debs)")
def test_many_apps_with_long_names_share_one_nginx(tmp_path):
    """Each app's site maps variables named after it ($ferry_<app>_connection, _release, _via):
    a dozen apps with long names outgrew nginx's default 64-byte variable buckets (seen on the
    shared local target), so the host-wide config sizes them."""
    root = tmp_path / "opt"
    cfgs = [app_config(tmp_path, app={"name": f"a-rather-long-application-name-{i:02d}"}, root=root,
                       deploy={"colours": {"blue": 33100 + 2 * i, "green": 33101 + 2 * i}},
                       proxy={"http_port": 33200 + i})
            for i in range(12)]
    for cfg in cfgs:
        write(site_files(cfg))
    conf = main_conf(tmp_path / "state", cfgs[0], status_port=33079)
    conf.write_text(conf.read_text().replace(nginx.site_path(cfgs[0]), f"{root}/*/nginx/site.conf"))
    r = nginx_t(conf)
    assert r.returncode == 0, r.stderr


def test_upstream_names_are_bounded_and_distinct(tmp_path):
    short = app_config(tmp_path, app={"name": "shop"})
    assert nginx.upstream_name(short) == "ferry_shop"
    a = app_config(tmp_path, app={"name": "a-rather-long-application-name-01"})
    b = app_config(tmp_path, app={"name": "a-rather-long-application-name-02"})
    assert len(nginx.upstream_name(a)) <= 26 and nginx.upstream_name(a).startswith("ferry_a_rather_lo")
    assert nginx.upstream_name(a) != nginx.upstream_name(b)

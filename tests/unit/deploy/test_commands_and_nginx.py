"""The exact docker argv and nginx text a deploy produces (no host involved)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from ferry import nginx
from ferry.config import parse
from ferry.deploy import docker as D
from ferry.deploy.lock import LockInfo, stale_reason

ROOT = Path(__file__).resolve().parents[3]
HELLO = ROOT / "tests" / "fixtures" / "deploy" / "hello.toml"


def cfg(**deploy):
    doc = tomllib.loads((HELLO).read_text())
    doc["deploy"].update(deploy)
    return parse(doc, HELLO)


def test_run_argv_names_colour_port_labels_and_limits():
    c = cfg()
    argv = D.run_argv(c, "green", "127.0.0.1:5000/hello@sha256:abc", "r1", "1.0", "sha256:abc")
    assert argv[:3] == ["docker", "-H", "unix:///var/lib/ferry-local/docker.sock"]
    assert argv[3:7] == ["run", "--detach", "--name", "hello-green"]
    assert "--network" in argv and argv[argv.index("--network") + 1] == "host"
    assert "PORT=8082" in argv and "FERRY_COLOUR=green" in argv and "FERRY_RELEASE=r1" in argv
    assert "dev.ferry.digest=sha256:abc" in argv and "dev.ferry.release=r1" in argv
    assert argv[argv.index("--memory") + 1] == "256m"
    assert argv[argv.index("--env-file") + 1] == "/opt/ferry/hello/env"
    assert argv[argv.index("--stop-timeout") + 1] == "30"
    assert argv[-1] == "127.0.0.1:5000/hello@sha256:abc"


def test_labels_of_parses_docker_ps_json():
    assert D.labels_of({"Labels": "dev.ferry.colour=blue,dev.ferry.release=r1"}) == {
        "dev.ferry.colour": "blue", "dev.ferry.release": "r1"}


def test_upstream_points_at_the_colour_and_names_the_release():
    text = nginx.render_upstream(cfg(), "green", "r7")
    assert "upstream ferry_hello {" in text
    assert "server 127.0.0.1:8082 max_fails=0;" in text
    assert 'default "r7";' in text
    assert nginx.live_port(text) == 8082
    assert nginx.live_port(None) is None


def test_site_serves_acme_challenges_and_proxies_without_tls():
    site = nginx.render_site(cfg(), tls=False, extra_names=("127.0.0.1", "10.0.1.7"))
    assert "include /opt/ferry/hello/nginx/upstream.conf;" in site
    assert "listen 127.0.0.1:8080;" in site and "default_server" not in site
    assert "server_name 127.0.0.1 10.0.1.7;" in site
    assert "location ^~ /.well-known/acme-challenge/" in site and "root /opt/ferry/hello/acme;" in site
    assert "include /opt/ferry/hello/nginx/proxy.conf;" in site
    proxy = nginx.render_proxy(cfg())
    assert "proxy_pass http://ferry_hello;" in proxy
    assert "add_header X-Ferry-Release $ferry_hello_release always;" in proxy
    # which colour answered: only for ferry's verify request (X-Ferry-Verify), from nginx itself
    assert "add_header X-Ferry-Upstream $ferry_hello_via always;" in proxy
    upstream = nginx.render_upstream(cfg(), "green", "r7")
    verify_map = upstream.split("map $http_x_ferry_verify $ferry_hello_via {", 1)[1].split("}", 1)[0]
    assert 'default "";' in verify_map and '"~." $upstream_addr;' in verify_map


def test_verify_reads_the_last_response_head_whatever_the_line_endings():
    from ferry.deploy.runner import _response_head

    dump = ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nServer: nginx\r\n"
            "X-Ferry-Release: r7\r\nX-Ferry-Upstream: 127.0.0.1:8082\r\n\r\n")
    assert _response_head(dump) == ("HTTP/1.1 200 OK", {"server": "nginx", "x-ferry-release": "r7",
                                                        "x-ferry-upstream": "127.0.0.1:8082"})
    assert _response_head("HTTP/2 200 \nx-ferry-release: r7\n\n") == ("HTTP/2 200", {"x-ferry-release": "r7"})
    assert _response_head("") == ("", {})


def test_lock_is_stale_when_its_holder_is_gone_or_silent():
    info = LockInfo("me@box", "box", 4242, "deploy", "1.0", "2026-01-01T00:00:00Z")
    assert stale_reason(info, 5, 100, "box", lambda pid: False) == "its holder (pid 4242 on box) is gone"
    assert stale_reason(info, 5, 100, "box", lambda pid: True) is None
    assert stale_reason(info, 5, 100, "other", lambda pid: False) is None
    assert stale_reason(info, 500, 100, "other", lambda pid: True) == "it has not been touched for 500s"


def test_an_edited_template_is_rendered_anew_despite_the_compiled_template_cache(tmp_path, monkeypatch):
    # one environment per process and jinja2's bytecode cache: both must notice the edit
    monkeypatch.setenv("FERRY_NGINX_TEMPLATES", str(tmp_path))
    t = tmp_path / "upstream.conf.j2"
    t.write_text("first {{ colour }}\n")
    assert nginx.render_upstream(cfg(), "blue", "r1") == "first blue\n"
    t.write_text("second {{ colour }} {{ port }}\n")
    os.utime(t, (1_000_000_000, 1_000_000_000))  # another mtime, whatever the clock's resolution
    assert nginx.render_upstream(cfg(), "green", "r2") == "second green 8082\n"

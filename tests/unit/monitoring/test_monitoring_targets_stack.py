"""Scrape targets from the host's containers, and the exact `docker run` of each component."""

from __future__ import annotations

import json

from ferry.monitoring.settings import settings
from ferry.monitoring.stack import Action, decide, grafana_env, run_argv, spec_hash, specs
from ferry.monitoring.targets import Slot, parse_ps, slots_from_ps, targets_doc

from .helpers import config

DOCKER = ("docker", "-H", "unix:///var/lib/ferry-local/docker.sock")
IMAGES = {"prometheus": "r/prometheus@sha256:" + "1" * 64, "alertmanager": "r/am@sha256:" + "2" * 64,
          "node_exporter": "r/node@sha256:" + "3" * 64, "nginx_exporter": "r/nginx@sha256:" + "4" * 64,
          "blackbox_exporter": "r/bb@sha256:" + "5" * 64}


def test_running_colours_become_targets_labelled_with_release_and_role():
    s = settings(config())
    doc = targets_doc(s, [Slot("green", "r2", "v2"), Slot("blue", "r1", "v1")], "green")
    assert doc == [
        {"targets": ["127.0.0.1:8081"],
         "labels": {"job": "hello", "__metrics_path__": "/metrics", "app": "hello", "colour": "blue",
                    "release": "r1", "role": "idle"}},
        {"targets": ["127.0.0.1:8082"],
         "labels": {"job": "hello", "__metrics_path__": "/metrics", "app": "hello", "colour": "green",
                    "release": "r2", "role": "live"}},
    ]


def test_a_stopped_colour_is_not_a_target():
    s = settings(config())
    doc = targets_doc(s, [Slot("blue", "r1", "v1", running=False), Slot("green", "r2", "v2")], "green")
    assert [t["labels"]["colour"] for t in doc] == ["green"]
    assert targets_doc(s, [], None) == []


def test_docker_ps_rows_give_the_apps_colours_and_skip_other_apps():
    out = "\n".join(json.dumps(r) for r in [
        {"Names": "hello-blue", "State": "running",
         "Labels": "dev.ferry.app=hello,dev.ferry.colour=blue,dev.ferry.release=r1,dev.ferry.version=v1"},
        {"Names": "hello-green", "State": "exited",
         "Labels": "dev.ferry.app=hello,dev.ferry.colour=green,dev.ferry.release=r2,dev.ferry.version=v2"},
        {"Names": "shop-blue", "State": "running", "Labels": "dev.ferry.app=shop,dev.ferry.colour=blue"},
    ]) + "\nWARNING: a client warning line\n"
    assert slots_from_ps(parse_ps(out), "hello") == [Slot("blue", "r1", "v1", True), Slot("green", "r2", "v2", False)]


def test_every_component_binds_loopback_and_runs_hardened():
    s = settings(config())
    for spec in specs(s, IMAGES):
        argv = run_argv(DOCKER, spec, IMAGES[spec.component])
        listen = [a for a in argv if "listen-address" in a and a != "--cluster.listen-address="]
        assert listen and all("=127.0.0.1:" in a for a in listen), spec.component
        for flag in ("--read-only", "--cap-drop", "--security-opt"):
            assert flag in argv
        assert argv[argv.index("--user") + 1] == "65534:65534"
        assert argv[argv.index("--network") + 1] == "host"


def test_prometheus_runs_pinned_with_retention_from_the_config():
    s = settings(config('retention = "30d"\nretention_size = "5GB"'))
    spec = next(x for x in specs(s, IMAGES) if x.component == "prometheus")
    argv = run_argv(DOCKER, spec, IMAGES["prometheus"])
    assert argv[:5] == [*DOCKER, "run", "--detach"]
    i = argv.index(IMAGES["prometheus"])
    assert argv[i + 1:] == ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                            "--storage.tsdb.retention.time=30d", "--storage.tsdb.retention.size=5GB",
                            "--web.listen-address=127.0.0.1:9090", "--web.external-url=http://127.0.0.1:9090/"]
    assert "/opt/ferry/_monitoring/etc/prometheus:/etc/prometheus:ro" in argv
    assert "/opt/ferry/_monitoring/data/prometheus:/prometheus" in argv
    assert f"dev.ferry.monitoring.spec={spec_hash(spec, IMAGES['prometheus'])}" in argv


def test_alertmanager_has_no_gossip_port():
    spec = next(x for x in specs(settings(config()), IMAGES) if x.component == "alertmanager")
    assert "--cluster.listen-address=" in spec.args


def test_grafana_runs_only_when_an_image_is_named_and_never_anonymously():
    s = settings(config())
    assert "grafana" not in [x.component for x in specs(s, IMAGES)]
    spec = specs(s, {**IMAGES, "grafana": "r/grafana@sha256:" + "6" * 64})[-1]
    env = dict(spec.env)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana/admin_password"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert spec.user == "472:0"
    assert env == grafana_env(s)


def test_up_creates_replaces_reloads_or_leaves_each_container():
    s = settings(config())
    spec = next(x for x in specs(s, IMAGES) if x.component == "prometheus")
    ref = IMAGES["prometheus"]
    h = spec_hash(spec, ref)
    assert decide(DOCKER, spec, ref, None, False).do == "create"
    assert decide(DOCKER, spec, ref, {"running": True, "spec": "old"}, False).do == "replace"
    assert decide(DOCKER, spec, ref, {"running": False, "spec": h}, False).do == "start"
    reload = decide(DOCKER, spec, ref, {"running": True, "spec": h}, True)
    assert reload.do == "reload" and reload.argv == ((*DOCKER, "kill", "--signal", "HUP", "ferry-prometheus"),)
    assert decide(DOCKER, spec, ref, {"running": True, "spec": h}, False) == Action(spec, "none", "up to date")


def test_a_new_image_digest_changes_the_spec_hash():
    spec = next(x for x in specs(settings(config()), IMAGES) if x.component == "node_exporter")
    assert spec_hash(spec, "r/node@sha256:" + "3" * 64) != spec_hash(spec, "r/node@sha256:" + "7" * 64)

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


def test_the_nginx_exporter_reads_the_resolved_stub_status_url():
    spec = next(x for x in specs(settings(config()), IMAGES) if x.component == "nginx_exporter")
    assert "-nginx.scrape-uri=http://127.0.0.1:9180/stub_status" in spec.args
    spec = next(x for x in specs(settings(config('stub_status_url = "http://127.0.0.1:7000/s"')), IMAGES)
                if x.component == "nginx_exporter")
    assert "-nginx.scrape-uri=http://127.0.0.1:7000/s" in spec.args


def test_grafana_logs_to_the_console_and_writes_only_to_its_writable_mounts():
    """--read-only: Grafana's default log mode (console and file) writes /var/log/grafana and fails."""
    s = settings(config())
    spec = specs(s, {**IMAGES, "grafana": "r/grafana@sha256:" + "6" * 64})[-1]
    argv = run_argv(DOCKER, spec, spec.image)
    assert "--read-only" in argv
    env = dict(spec.env)
    assert env["GF_LOG_MODE"] == "console"
    writable = [m.target for m in spec.mounts if not m.readonly]
    tmpfs = [argv[i + 1].split(":", 1)[0] for i, a in enumerate(argv) if a == "--tmpfs"]
    for key in ("GF_PATHS_DATA", "GF_PATHS_LOGS", "GF_PATHS_PLUGINS"):
        path = env[key]
        assert any(path == w or path.startswith(w + "/") for w in writable + tmpfs), (key, path, writable)
    assert env["GF_PATHS_DATA"] == "/var/lib/grafana"
    assert {m.target: m.source for m in spec.mounts}["/var/lib/grafana"] == "/opt/ferry/_monitoring/data/grafana"


# --- health: the container's state, not only its URL -----------------------------------------

def _state(status="running", restarting=False, restarts=0, exit_code=0) -> dict:
    return {"Status": status, "Running": status == "running", "Restarting": restarting, "ExitCode": exit_code,
            "RestartCount": restarts}


def test_a_restarting_container_is_not_healthy_even_when_something_answers_its_url():
    from ferry.monitoring.runner import component_status

    spec = next(x for x in specs(settings(config()), IMAGES) if x.component == "node_exporter")
    listed = {"running": False, "state": "restarting", "image": IMAGES["node_exporter"]}
    # e.g. Debian's prometheus-node-exporter holds 127.0.0.1:9100: the URL answers 200
    st = component_status(spec, listed, _state("restarting", True, restarts=7, exit_code=1), url_ok=True)
    assert st["healthy"] is False and st["state"] == "restarting" and st["restarts"] == 7
    assert "restarting" in st["why"] and "exit code 1" in st["why"]
    st = component_status(spec, {**listed, "state": "exited"}, _state("exited", exit_code=1), url_ok=True)
    assert st["healthy"] is False and st["state"] == "exited"
    st = component_status(spec, None, None, url_ok=True)
    assert st["healthy"] is False and st["state"] == "absent"
    st = component_status(spec, {**listed, "state": "running"}, _state(), url_ok=False)
    assert st["healthy"] is False and "does not answer" in st["why"]
    st = component_status(spec, {**listed, "state": "running"}, _state(), url_ok=True)
    assert st["healthy"] is True and st["state"] == "running"


def test_waiting_for_up_refuses_a_container_that_restarted_while_it_was_watched():
    from ferry.monitoring.runner import judge

    assert judge(_state(restarts=3), True, "u", restarts_before=3) == (True, "running, answers")
    ok, why = judge(_state(restarts=4), True, "u", restarts_before=3)
    assert not ok and "restarted 1 times" in why


def test_docker_inspect_lines_give_state_and_restart_count_by_name():
    from ferry.monitoring.runner import parse_inspect

    out = ('"/ferry-node-exporter" {"Status":"restarting","Running":true,"Restarting":true,"ExitCode":1} 12\n'
           '"/ferry-prometheus" {"Status":"running","Running":true,"Restarting":false,"ExitCode":0} 0\n'
           "Error response from daemon: No such container: ferry-grafana\n")
    got = parse_inspect(out)
    assert set(got) == {"ferry-node-exporter", "ferry-prometheus"}
    assert got["ferry-node-exporter"]["Restarting"] is True and got["ferry-node-exporter"]["RestartCount"] == 12


def test_status_of_a_host_is_unhealthy_when_a_container_crash_loops_behind_an_answering_url():
    """HostStack.status over a fake host: every URL answers, one container restarts."""
    from types import SimpleNamespace

    from ferry.monitoring.runner import HostStack

    s = settings(config())
    names = [x.name for x in specs(s, IMAGES)]
    ps = "\n".join(json.dumps({"Names": n, "State": "restarting" if n == "ferry-node-exporter" else "running",
                               "Status": "", "Image": "i",
                               "Labels": f"dev.ferry.monitoring={n},dev.ferry.monitoring.spec=x"}) for n in names)
    inspect = "\n".join(
        f'"/{n}" ' + json.dumps(_state("restarting", True, 9, 1) if n == "ferry-node-exporter" else _state())
        + (" 9" if n == "ferry-node-exporter" else " 0") for n in names)

    class FakeHost:
        name = "root@203.0.113.7"

        def run(self, argv, **kw):
            text = " ".join(argv)
            if " ps " in f" {text} ":
                return SimpleNamespace(ok=True, stdout=ps, stderr="")
            if " inspect " in f" {text} ":
                return SimpleNamespace(ok=True, stdout=inspect, stderr="")
            if argv[0] == "sh":  # the health URLs: every one answers 200
                return SimpleNamespace(ok=True, stdout="".join(f"{x.health} 200\n" for x in specs(s, IMAGES)), stderr="")
            return SimpleNamespace(ok=False, stdout="", stderr="")  # Prometheus' targets

    r = HostStack(FakeHost(), config(), s).status(IMAGES)
    node = next(c for c in r["components"] if c["component"] == "node_exporter")
    assert node["healthy"] is False and node["state"] == "restarting"
    assert r["healthy"] is False
    assert all(c["healthy"] for c in r["components"] if c["component"] not in ("node_exporter", "grafana"))


def test_every_staged_config_is_checked_by_the_program_that_reads_it():
    from ferry.monitoring.runner import validation_checks

    checks = {c[0]: c for c in validation_checks("/stage")}
    assert set(checks) == {"prometheus", "alertmanager", "blackbox_exporter"}
    _, tool, vols, args = checks["blackbox_exporter"]
    assert tool == "/usr/bin/prometheus-blackbox-exporter"
    assert vols == ["/stage/etc/blackbox:/etc/blackbox:ro"]
    assert args == ["--config.file=/etc/blackbox/blackbox.yml", "--config.check"]

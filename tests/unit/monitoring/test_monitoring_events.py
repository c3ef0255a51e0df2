"""ferry_deploy_* metrics: apply an event, render the textfile, read it back (pure)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ferry.monitoring.events import DeployEvent, DeployMetrics, apply, parse, render


def samples(text: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def run(events: list[DeployEvent], app: str = "hello") -> DeployMetrics:
    m = DeployMetrics(app)
    for e in events:
        # each write goes through the file, as on a host: render, then parse back
        m = parse(render(apply(m, e)), app)
    return m


START = DeployEvent("start", "r2", "v2", "sha256:" + "b" * 64, "green", time=1000.0)
SUCCESS = DeployEvent("success", "r2", "v2", "sha256:" + "b" * 64, "green", time=1042.5, duration=42.5)


def test_first_start_writes_every_counter_at_zero_but_start():
    text = render(apply(DeployMetrics("hello"), START))
    got = samples(text)
    assert got[("ferry_deploy_events_total", (("app", "hello"), ("event", "start")))] == 1
    for ev in ("success", "failure", "rollback"):
        # present at 0, so increase() sees the first failure
        assert got[("ferry_deploy_events_total", (("app", "hello"), ("event", ev)))] == 0
    assert got[("ferry_deploy_in_progress", (("app", "hello"),))] == 1
    assert got[("ferry_deploy_last_event_timestamp_seconds",
                (("app", "hello"), ("event", "start"), ("release", "r2"), ("version", "v2")))] == 1000.0
    assert not any(name == "ferry_release_info" for name, _ in got)


def test_success_makes_the_release_live_and_records_its_duration():
    m = run([START, SUCCESS])
    got = samples(render(m))
    assert got[("ferry_release_info", (("app", "hello"), ("colour", "green"), ("digest", "sha256:" + "b" * 64),
                                       ("release", "r2"), ("version", "v2")))] == 1
    assert got[("ferry_release_live_since_timestamp_seconds", (("app", "hello"),))] == 1042.5
    assert got[("ferry_deploy_in_progress", (("app", "hello"),))] == 0
    assert got[("ferry_deploy_last_duration_seconds", (("app", "hello"), ("outcome", "success")))] == 42.5
    assert got[("ferry_deploy_duration_seconds_count", (("app", "hello"),))] == 1
    assert got[("ferry_deploy_duration_seconds_sum", (("app", "hello"),))] == 42.5


def test_a_failure_keeps_the_live_release_and_counts_across_deploys():
    fail = DeployEvent("failure", "r3", "v3", "sha256:" + "c" * 64, "blue", time=2000.0, duration=20.0)
    m = run([START, SUCCESS, DeployEvent("start", "r3", "v3", "", "blue", time=1990.0), fail])
    assert m.counts == {"start": 2, "success": 1, "failure": 1, "rollback": 0}
    assert m.live.release == "r2" and m.live.colour == "green"
    assert m.duration_count == 2 and m.duration_sum == 62.5
    assert not m.in_progress


def test_a_rollback_moves_the_live_release_back():
    rb = DeployEvent("rollback", "r1", "v1", "sha256:" + "a" * 64, "blue", time=3000.0, duration=2.0)
    m = run([START, SUCCESS, rb])
    assert m.live.release == "r1" and m.live.colour == "blue" and m.live.since == 3000.0
    assert m.counts["rollback"] == 1
    assert m.last_duration == {"success": 42.5, "rollback": 2.0}


def test_labels_with_quotes_survive_the_round_trip():
    odd = DeployEvent("start", 'r"4\\x', 'v "quoted"\nnext', "", "blue", time=5.0)
    m = run([odd])
    assert m.last["start"].release == 'r"4\\x'
    assert m.last["start"].version == 'v "quoted"\nnext'
    samples(render(m))  # still valid exposition format


def test_another_apps_lines_and_garbage_are_ignored_when_reading():
    text = render(run([START, SUCCESS], app="other")) + "not a metric line\n{{{\n"
    m = parse(text, "hello")
    assert m == DeployMetrics("hello")


def test_an_unknown_event_kind_is_refused():
    with pytest.raises(ValueError, match="not one of start, success, failure, rollback"):
        DeployEvent("deployed", "r1")


def test_the_writer_does_nothing_when_monitoring_is_off():
    from ferry.monitoring.events import record_deploy_event

    from .helpers import config

    class NoHost:
        name = "x"

        def __getattr__(self, item):
            raise AssertionError("the host must not be touched")

    assert record_deploy_event(NoHost(), config("enabled = false"), START) is False

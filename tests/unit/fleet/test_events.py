"""The deploy's events go through the callback it is given; monitoring's sink writes them."""

from __future__ import annotations

import tomllib
from pathlib import Path

from ferry.config import parse
from ferry.deploy.runner import HostDeployer
from ferry.fleet.events import DeployEvent
from ferry.monitoring import events as M

ROOT = Path(__file__).resolve().parents[3]


def cfg():
    return parse(tomllib.loads((ROOT / "tests" / "unit" / "fleet" / "ferry.toml").read_text()), ROOT / "ferry.toml")


class FakeHost:
    name = "root@web-1.test"


def test_the_deployer_reports_each_event_to_its_sink_with_the_host_it_happened_on():
    got = []
    host = FakeHost()
    d = HostDeployer(host, cfg(), events=lambda h, e: got.append((h, e)))
    d.event("start", "r1", "v1", "sha256:aa", "green")
    d.event("success", "r1", "v1", "sha256:aa", "green", 4.2)
    assert [(h, e.kind, e.release, e.colour, e.duration) for h, e in got] == [
        (host, "start", "r1", "green", None), (host, "success", "r1", "green", 4.2)]


def test_without_a_sink_nothing_listens_and_nothing_fails():
    HostDeployer(FakeHost(), cfg()).event("failure", "r1")


def test_monitorings_sink_hands_the_event_to_its_writer(monkeypatch):
    written = []
    monkeypatch.setattr(M, "record_deploy_event", lambda h, c, e, p: written.append((h, e)) or True)
    host, event = FakeHost(), DeployEvent("rollback", "r0")
    M.deploy_event_sink(cfg())(host, event)
    assert written == [(host, event)]
    assert M.DeployEvent is DeployEvent  # one type: moved to the fleet layer, not copied

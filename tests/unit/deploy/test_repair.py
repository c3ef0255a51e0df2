"""runner.repair_locked, branch by branch, against an in-memory host: what a killed ferry left
(an in-progress entry, the upstream file, the containers) and what the repair does about it
(history outcome, upstream written, nginx -t + reload, container removed)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from ferry import nginx
from ferry.config import parse
from ferry.deploy import docker as D
from ferry.deploy.history import ABORTED, FAILED, IN_PROGRESS, SUCCESS, History, Release
from ferry.deploy.host import Result
from ferry.deploy.runner import HostDeployer

ROOT = Path(__file__).resolve().parents[3]
HELLO = ROOT / "tests" / "fixtures" / "deploy" / "hello.toml"
OLD = Release(id="20261126-090000-aaaaaaa", version="1.0", digest="sha256:" + "a" * 64,
              image="127.0.0.1:5000/hello@sha256:" + "a" * 64, colour="blue", time="2026-11-26T09:00:00Z",
              who="alice@ci", outcome=SUCCESS)
NEW = Release(id="20261126-100000-bbbbbbb", version="2.0", digest="sha256:" + "b" * 64,
              image="127.0.0.1:5000/hello@sha256:" + "b" * 64, colour="green", time="2026-11-26T10:00:00Z",
              who="alice@ci", outcome=IN_PROGRESS)


@pytest.fixture
def cfg():
    doc = tomllib.loads((HELLO).read_text())
    return parse(doc, HELLO)


class FakeHost:
    """Files in a dict; `docker ps` from ``containers``; curl probes answer from ``health``
    (port -> status); every write and command kept in order in ``log``."""

    name = "root@fake"

    def __init__(self, cfg, containers: dict[str, tuple[str, str]], health: dict[int, int]):
        self.cfg = cfg
        self.files: dict[str, str] = {}
        self.containers = containers  # colour -> (state, release)
        self.health = health
        self.log: list[tuple] = []

    # the parts of Host that the runner and nginx.apply use
    def read(self, path: str) -> str | None:
        return self.files.get(path)

    def write(self, path: str, content: str, mode: str = "0644") -> None:
        self.log.append(("write", path))
        self.files[path] = content

    def run(self, argv, stdin=None, timeout=None) -> Result:
        argv = list(argv)
        self.log.append(("run", argv))
        if argv[:2] == [self.cfg.deploy.nginx, "-c"] or argv == D.test_reload_argv(self.cfg):
            return Result("nginx", 0, "", "")
        if argv[0] == "curl":
            port = int(re.search(r"127\.0\.0\.1:(\d+)/", argv[-1]).group(1))
            return self._probe(port)
        if argv == D.ps_argv(self.cfg):
            return Result("ps", 0, self._ps(), "")
        if argv == D.observe_argv(self.cfg):  # what the script prints: ps, its exit code, each probe
            out = self._ps() + f"{D.OBSERVE_SEP} 0\n"
            for colour in sorted(self.cfg.deploy.colours):
                out += f"{D.OBSERVE_SEP}\n" + self._probe(self.cfg.deploy.colours[colour]).stdout
            return Result("observe", 0, out, "")
        return Result(" ".join(argv), 0, "", "")

    def _probe(self, port: int) -> Result:
        status = self.health.get(port, 0)
        return Result("curl", 0 if status else 7, f"body\n{status:03d}", "" if status else "connection refused")

    def _ps(self) -> str:
        rows = []
        for colour, (state, release) in self.containers.items():
            labels = f"dev.ferry.app={self.cfg.app.name},dev.ferry.colour={colour},dev.ferry.release={release}," \
                     f"dev.ferry.version=x,dev.ferry.digest=sha256:x,dev.ferry.port={self.cfg.deploy.colours[colour]}"
            rows.append(json.dumps({"Names": D.container_name(self.cfg, colour), "State": state,
                                    "Status": state, "Labels": labels}))
        return "\n".join(rows) + "\n"

    # what the log says happened
    def reloads(self) -> int:  # test_reload_argv reloads only after its test passed
        return sum(1 for e in self.log if e[0] == "run" and (e[1][-2:] == ["-s", "reload"]
                                                              or e[1] == D.test_reload_argv(self.cfg)))

    def nginx_tests(self) -> int:
        return sum(1 for e in self.log if e[0] == "run" and (e[1][-2:] == ["-t", "-q"]
                                                              or e[1] == D.test_reload_argv(self.cfg)))

    def removed(self) -> list[str]:
        return [e[1][-1] for e in self.log if e[0] == "run" and e[1][-3:-1] == ["rm", "--force"]]

    def index(self, pred) -> int:
        return next(i for i, e in enumerate(self.log) if pred(e))


def interrupted(cfg, *, live: str | None, containers: dict, health: dict, entries=(OLD, NEW)) -> tuple[FakeHost, HostDeployer]:
    host = FakeHost(cfg, containers, health)
    d = HostDeployer(host, cfg)
    host.files[d.history_path] = History(tuple(entries)).dumps()
    if live:
        release = {"blue": OLD.id, "green": NEW.id}[live]
        host.files[nginx.upstream_path(cfg)] = nginx.render_upstream(cfg, live, release)
    host.log.clear()
    return host, d


def outcome(host: FakeHost, d: HostDeployer, rid: str) -> Release:
    r = History.parse(host.files[d.history_path]).get(rid)
    assert r is not None
    return r


def test_nothing_in_progress_changes_nothing(cfg):
    host, d = interrupted(cfg, live="blue", containers={"blue": ("running", OLD.id)}, health={8081: 200},
                          entries=(OLD,))
    assert d.repair_locked() == []
    assert host.reloads() == 0 and not any(e[0] == "write" for e in host.log)


def test_swap_written_but_not_reloaded_is_reloaded_and_completed(cfg):
    # upstream.conf already names green (the new release) and green is healthy: ferry died
    # between writing the swap and the end of the deploy
    host, d = interrupted(cfg, live="green", containers={"blue": ("running", OLD.id), "green": ("running", NEW.id)},
                          health={8081: 200, 8082: 200})
    upstream_before = host.files[nginx.upstream_path(cfg)]
    fixed = d.repair_locked()
    r = outcome(host, d, NEW.id)
    assert r.outcome == SUCCESS and "completed by repair" in r.note
    assert outcome(host, d, OLD.id).outcome == SUCCESS
    assert host.nginx_tests() >= 1 and host.reloads() == 1  # nginx now runs what the file says
    # the test and the reload are one command, the reload only after the test passed (test_argv)
    assert ("run", D.test_reload_argv(cfg)) in host.log
    assert host.files[nginx.upstream_path(cfg)] == upstream_before  # traffic stays on green
    assert host.removed() == []
    assert len(fixed) == 1 and NEW.id in fixed[0] and "completed" in fixed[0]
    # leftovers of an interrupted atomic write are cleaned
    assert any(e[0] == "run" and e[1][0] == "sh" and ".ferry-tmp" in e[1][-1] for e in host.log)


def test_new_colour_unhealthy_after_the_swap_moves_traffic_back(cfg):
    host, d = interrupted(cfg, live="green", containers={"blue": ("running", OLD.id), "green": ("running", NEW.id)},
                          health={8081: 200, 8082: 503})
    fixed = d.repair_locked()
    assert host.files[nginx.upstream_path(cfg)] == nginx.render_upstream(cfg, "blue", OLD.id)
    assert nginx.live_port(host.files[nginx.upstream_path(cfg)]) == cfg.deploy.colours["blue"]
    assert host.reloads() == 1
    wrote = host.index(lambda e: e == ("write", nginx.upstream_path(cfg)))
    assert wrote < host.index(lambda e: e == ("run", D.test_reload_argv(cfg)))
    r = outcome(host, d, NEW.id)
    assert r.outcome == FAILED and "traffic moved back" in r.note
    assert outcome(host, d, OLD.id).outcome == SUCCESS
    assert len(fixed) == 1 and "moved back to blue" in fixed[0]


def test_new_colour_not_answering_at_all_after_the_swap_moves_traffic_back(cfg):
    host, d = interrupted(cfg, live="green", containers={"blue": ("running", OLD.id), "green": ("exited", NEW.id)},
                          health={8081: 200})
    d.repair_locked()
    assert nginx.live_port(host.files[nginx.upstream_path(cfg)]) == cfg.deploy.colours["blue"]
    assert host.reloads() == 1
    assert outcome(host, d, NEW.id).outcome == FAILED


def test_container_never_started_is_aborted_and_traffic_is_left_alone(cfg):
    # killed after recording the entry, before `docker run`: no green container at all
    host, d = interrupted(cfg, live="blue", containers={"blue": ("running", OLD.id)}, health={8081: 200})
    upstream_before = host.files[nginx.upstream_path(cfg)]
    fixed = d.repair_locked()
    r = outcome(host, d, NEW.id)
    assert r.outcome == ABORTED and "before traffic moved" in r.note
    assert host.files[nginx.upstream_path(cfg)] == upstream_before
    assert host.reloads() == 0 and host.removed() == []
    assert not any(e == ("write", nginx.upstream_path(cfg)) for e in host.log)
    assert len(fixed) == 1 and "traffic had not moved" in fixed[0]
    assert History.parse(host.files[d.history_path]).in_progress() == []


@pytest.mark.parametrize("state", ["created", "exited", "running"])
def test_container_started_but_traffic_never_moved_is_removed_and_aborted(cfg, state):
    host, d = interrupted(cfg, live="blue", containers={"blue": ("running", OLD.id), "green": (state, NEW.id)},
                          health={8081: 200, 8082: 200})
    d.repair_locked()
    assert host.removed() == [D.container_name(cfg, "green")]
    assert outcome(host, d, NEW.id).outcome == ABORTED
    assert nginx.live_port(host.files[nginx.upstream_path(cfg)]) == cfg.deploy.colours["blue"]
    assert host.reloads() == 0


def test_an_older_warm_container_in_the_idle_colour_is_not_removed_by_repair(cfg):
    # green still holds an earlier release (kept warm); the interrupted entry never started
    host, d = interrupted(cfg, live="blue", containers={"blue": ("running", OLD.id), "green": ("running", "r-older")},
                          health={8081: 200, 8082: 200})
    d.repair_locked()
    assert host.removed() == []
    assert outcome(host, d, NEW.id).outcome == ABORTED

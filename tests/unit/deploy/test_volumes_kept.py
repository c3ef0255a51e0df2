"""No ferry command deletes a volume: repair and prune, executed by the runner against an
in-memory host, never run a command that names the volumes directory (a rollback's plan is
checked in test_plans; the real thing in tests/integration/deploy/test_release_steps.py)."""

from __future__ import annotations

import json

from ferry import nginx
from ferry.deploy import docker as D
from ferry.deploy.history import IN_PROGRESS, SUCCESS, History, Release
from ferry.deploy.host import Result
from ferry.deploy.runner import HostDeployer

from .fixtures import shop
from .test_repair import FakeHost

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def rel(rid, digest, colour, outcome=SUCCESS):
    return Release(id=rid, version=rid, digest=digest, image=f"127.0.0.1:5000/shop@{digest}", colour=colour,
                   time="t", who="me", outcome=outcome)


class ImagesHost(FakeHost):
    """Also lists old images, so prune has something to remove."""

    def run(self, argv, stdin=None, timeout=None) -> Result:
        if list(argv) == D.images_argv(self.cfg, "127.0.0.1:5000/shop"):
            rows = [{"Repository": "127.0.0.1:5000/shop", "Digest": "sha256:" + c * 64} for c in "cdef"]
            self.log.append(("run", list(argv)))
            return Result("images", 0, "\n".join(json.dumps(r) for r in rows), "")
        return super().run(argv, stdin, timeout)


def commands(host) -> list[str]:
    return [" ".join(e[1]) for e in host.log if e[0] == "run"]


def test_repair_and_prune_never_name_the_volumes_directory():
    cfg = shop()
    for live, health in (("green", {34081: 200, 34082: 200}), ("green", {34081: 200}), ("blue", {34081: 200})):
        host = ImagesHost(cfg, {"blue": ("running", "r1"), "green": ("running", "r2")}, health)
        d = HostDeployer(host, cfg)
        history = History((rel("r1", A, "blue"), rel("r2", B, "green", IN_PROGRESS)))
        host.files[d.history_path] = history.dumps()
        host.files[nginx.upstream_path(cfg)] = nginx.render_upstream(cfg, live, {"blue": "r1", "green": "r2"}[live])
        assert d.repair_locked()
        d.prune(history, {A})
        ran = commands(host)
        assert any(" rmi " in c for c in ran)  # prune did remove images
        assert not any(D.volumes_dir(cfg) in c for c in ran), ran

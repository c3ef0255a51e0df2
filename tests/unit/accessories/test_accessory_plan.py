"""decide(): what up / reboot / down do, from what the host shows (pure)."""

from __future__ import annotations

import pytest

from ferry.accessories import argv as A
from ferry.accessories.plan import Facts, Observed, decide, rotation
from ferry.accessories.spec import accessory

from .conftest import make_cfg

DOCKER = ("docker",)
PINNED = "127.0.0.1:5000/ferry/postgres@sha256:" + "a" * 64


def running(db, ref=PINNED, up=True) -> Observed:
    return Observed("running" if up else "exited", up, "2026-01-01T00:00:00Z", ref.rsplit("@", 1)[1],
                    A.spec_hash(db, ref))


def kinds(plan):
    return [s.kind for s in plan.steps]


def test_first_up_prepares_generates_the_password_starts_and_gates(cfg):
    db = accessory(cfg, "db")
    p = decide("up", Facts(None, None, False), db, PINNED, DOCKER)
    assert kinds(p) == ["run", "password", "run", "health"]
    assert p.steps[2].argv == tuple(A.run_argv(DOCKER, db, PINNED))


def test_up_on_a_running_accessory_changes_nothing_even_with_a_new_image(cfg):
    db = accessory(cfg, "db")
    assert decide("up", Facts(running(db), "15", True), db, PINNED, DOCKER).steps == ()
    newer = PINNED.replace("a" * 64, "b" * 64)
    p = decide("up", Facts(running(db), "15", True), db, newer, DOCKER)
    assert p.steps == () and "ferry accessory reboot db" in p.note


def test_up_starts_a_stopped_container_and_keeps_the_password(cfg):
    db = accessory(cfg, "db")
    p = decide("up", Facts(running(db, up=False), "15", True), db, PINNED, DOCKER)
    assert kinds(p) == ["run", "run", "health"]
    assert p.steps[1].argv == ("docker", "start", "shop-db")


def test_reboot_replaces_the_container_and_never_touches_the_volume(cfg):
    db = accessory(cfg, "db")
    newer = PINNED.replace("a" * 64, "b" * 64)
    p = decide("reboot", Facts(running(db), "15", True), db, newer, DOCKER)
    assert [s.argv[:2] for s in p.steps if s.kind == "run"][1:] == [("docker", "stop"), ("docker", "rm"),
                                                                    ("docker", "run")]
    assert p.note == "replaced"
    assert not any("rm" == a or "-rf" in a for s in p.steps for a in s.argv if s.argv[0] != "docker")


@pytest.mark.parametrize("action", ["up", "reboot"])
def test_a_major_version_change_is_refused_with_dump_and_restore_steps(action):
    db = accessory(make_cfg({"db": {"kind": "postgres", "version": "17"}}), "db")
    p = decide(action, Facts(None, "15", True), db, PINNED, DOCKER)
    assert p.steps == ()
    assert "made by PostgreSQL 15" in p.refused and "asks for PostgreSQL 17" in p.refused
    assert "ferry accessory backup db" in p.hint and "ferry accessory restore db" in p.hint


def test_data_without_its_password_is_refused_rather_than_given_a_new_one(cfg):
    db = accessory(cfg, "db")
    p = decide("up", Facts(None, "15", False), db, PINNED, DOCKER)
    assert p.refused and "password" in p.refused and p.steps == ()


def test_down_stops_and_removes_only_the_container(cfg):
    db = accessory(cfg, "db")
    p = decide("down", Facts(running(db), "15", True), db, PINNED, DOCKER)
    assert [s.argv for s in p.steps] == [("docker", "stop", "--time", "60", "shop-db"),
                                         ("docker", "rm", "--force", "shop-db")]
    assert decide("down", Facts(None, "15", True), db, PINNED, DOCKER).steps == ()


def test_observed_parses_inspect_output():
    assert Observed.parse("running|true|2026-01-01T00:00:00Z|sha256:ab|1234|2\n") == Observed(
        "running", True, "2026-01-01T00:00:00Z", "sha256:ab", "1234", 2)
    assert Observed.parse("") is None


def test_rotation_keeps_the_newest_and_ignores_other_files():
    files = ["db-20260101T000000000Z.dump", "db-20260103T000000000Z.dump", "db-20260102T000000000Z.dump",
             "notes.txt", ".db-20260104T000000000Z.dump.partial", "dbx-20250101T000000000Z.dump"]
    assert rotation(files, "db", 2) == ["db-20260101T000000000Z.dump"]
    assert rotation(files, "db", 7) == []

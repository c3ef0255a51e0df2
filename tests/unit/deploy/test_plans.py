"""plan.py's decisions as data: observed facts in, the steps a release, a rollback and a repair
take out (no host, no shell)."""

from __future__ import annotations

import pytest

from ferry.deploy import plan as P
from ferry.deploy.history import ABORTED, FAILED, IN_PROGRESS, SUCCESS, History, Release
from ferry.errors import NothingToRollBack

from .fixtures import plain, shop

A, B, C = ("sha256:" + x * 64 for x in "abc")


def rel(rid: str, digest: str, colour: str, outcome=SUCCESS, kind="deploy") -> Release:
    return Release(id=rid, version=rid, digest=digest, image=f"127.0.0.1:5000/shop@{digest}", colour=colour,
                   time="t", who="me", outcome=outcome, kind=kind)


def web(colour: str, release: str, digest: str, running=True) -> P.Container:
    return P.Container(colour, f"shop-{colour}", running, release, release, digest, "Up" if running else "Exited")


def worker(process: str, n: int, colour: str, release: str, running=True) -> P.Container:
    return P.Container(colour, f"shop-{process}-{n}-{colour}", running, release, release, A, "Up", "worker", process, n)


def facts(live="blue", containers=(), workers=(), oneoffs=(), healthy=("blue",), history=()) -> P.HostFacts:
    return P.HostFacts(History(tuple(history)), live, {c.colour: c for c in containers}, tuple(workers),
                       tuple(oneoffs), frozenset(healthy))


def target(digest=B, **kw) -> P.Target:
    return P.Target(f"127.0.0.1:5000/shop@{digest}", digest, "2.0", **kw)


def kinds(steps) -> list[str]:
    return [type(s).__name__ for s in steps]


OLD_WORKERS = [worker("beat", 1, "blue", "r1"), worker("worker", 1, "blue", "r1"), worker("worker", 2, "blue", "r1")]


def test_a_release_with_every_feature_takes_every_step_in_order():
    f = facts(containers=[web("blue", "r1", A)], workers=OLD_WORKERS, history=[rel("r1", A, "blue")])
    steps = P.release_plan(shop(), f, target(), "r2")
    new = ("shop-beat-1-green", "shop-worker-1-green", "shop-worker-2-green")
    assert steps == [
        P.Pull(target().image), P.PrepareVolumes(target().image), P.Record("r2", "green", "deploy", ""),
        P.RunReleaseCommand("r2"), P.StartWeb("green", "r2"), P.StartWorkers("green", "r2", new),
        P.GateWeb("green"), P.GateWorkers(new), P.Swap("green", "r2", web("blue", "r1", A)), P.Commit("r2"),
        P.StopWorkers(("shop-beat-1-blue",), 30.0), P.StopWorkers(("shop-worker-1-blue", "shop-worker-2-blue"), 20.0),
        P.Retire(web("blue", "r1", A)), P.Prune((A, B))]


def test_volumes_come_before_anything_is_recorded_and_the_release_command_before_the_new_colour():
    steps = kinds(P.release_plan(shop(), facts(live=None, healthy=()), target(), "r1"))
    assert steps.index("PrepareVolumes") < steps.index("Record") < steps.index("RunReleaseCommand") \
        < steps.index("StartWeb")


def test_a_plain_app_has_no_volume_release_command_or_worker_steps():
    steps = P.release_plan(plain(), facts(live=None, healthy=()), target(), "r1")
    assert kinds(steps) == ["Pull", "Record", "StartWeb", "GateWeb", "Swap", "Commit", "Prune"]


def test_the_release_command_runs_on_the_first_host_only_and_never_for_a_rollback():
    f = facts(live=None, healthy=())
    assert "RunReleaseCommand" not in kinds(P.release_plan(shop(), f, target(release_command=False), "r1"))
    assert "RunReleaseCommand" not in kinds(P.release_plan(shop(), f, target(kind="rollback"), "r1"))


def test_leftovers_in_the_idle_colour_make_way_but_the_live_ones_are_untouched():
    # green holds a warm earlier release and its stopped workers
    f = facts(containers=[web("blue", "r2", B), web("green", "r1", A)],
              workers=[worker("worker", 1, "green", "r1", running=False), *[
                  worker("worker", n, "blue", "r2") for n in (1, 2)]], healthy=("blue", "green"))
    steps = P.release_plan(shop(), f, target(C), "r3")
    assert steps[steps.index(P.RunReleaseCommand("r3")) + 1] == P.RemoveContainers(("shop-green", "shop-worker-1-green"))


def test_the_live_healthy_image_with_all_its_workers_is_already_live():
    live = web("blue", "r1", B)
    ws = [worker("beat", 1, "blue", "r1"), worker("worker", 1, "blue", "r1"), worker("worker", 2, "blue", "r1")]
    assert P.release_plan(shop(), facts(containers=[live], workers=ws), target(B), "r2") == [P.AlreadyLive(live)]
    # a worker missing, or the colour not answering: a real release
    assert kinds(P.release_plan(shop(), facts(containers=[live], workers=ws[:2]), target(B), "r2"))[0] == "Pull"
    assert kinds(P.release_plan(shop(), facts(containers=[live], workers=ws, healthy=()), target(B), "r2"))[0] == "Pull"


HISTORY = [rel("r1", A, "blue"), rel("r2", B, "green")]


def test_rollback_to_a_warm_healthy_colour_is_warm_else_cold():
    f = facts(live="green", containers=[web("blue", "r1", A), web("green", "r2", B)], healthy=("blue", "green"),
              history=HISTORY)
    route = P.rollback_route(f, None)
    assert (route.kind, route.target.id, route.warm) == ("warm", "r1", web("blue", "r1", A))
    unhealthy = facts(live="green", containers=[web("blue", "r1", A), web("green", "r2", B)], healthy=("green",),
                      history=HISTORY)
    assert P.rollback_route(unhealthy, None).kind == "cold"
    stopped = facts(live="green", containers=[web("blue", "r1", A, running=False), web("green", "r2", B)],
                    healthy=("green",), history=HISTORY)
    assert P.rollback_route(stopped, None).kind == "cold"
    assert P.rollback_route(f, "r2").kind == "none"


def test_rollback_with_nothing_earlier_or_an_unknown_release_is_an_error():
    with pytest.raises(NothingToRollBack, match="no earlier successful release"):
        P.rollback_route(facts(containers=[web("blue", "r1", A)], history=[rel("r1", A, "blue")]), None)
    with pytest.raises(NothingToRollBack, match="no successful release 'nope'"):
        P.rollback_route(facts(history=HISTORY), "nope")


def test_a_warm_rollback_restarts_the_previous_workers_then_one_reload_and_never_the_release_command():
    current = [worker("beat", 1, "green", "r2"), worker("worker", 1, "green", "r2"), worker("worker", 2, "green", "r2")]
    stopped = [worker("worker", 1, "blue", "r1", running=False)]
    f = facts(live="green", containers=[web("blue", "r1", A), web("green", "r2", B)], workers=current + stopped,
              healthy=("blue", "green"), history=HISTORY)
    route = P.rollback_route(f, None)
    names = ("shop-beat-1-blue", "shop-worker-1-blue", "shop-worker-2-blue")
    assert P.warm_rollback_plan(shop(), f, route, "r3") == [
        P.Record("r3", "blue", "rollback", "rollback to r1 (warm)"), P.RemoveContainers(("shop-worker-1-blue",)),
        P.StartWorkers("blue", "r1", names), P.GateWorkers(names), P.Swap("blue", "r1", web("green", "r2", B)),
        P.Commit("r3"), P.StopWorkers(("shop-beat-1-green",), 30.0),
        P.StopWorkers(("shop-worker-1-green", "shop-worker-2-green"), 20.0), P.Retire(web("green", "r2", B))]


def test_a_cold_rollback_is_a_gated_release_of_the_old_digest_without_the_release_command():
    f = facts(live="green", containers=[web("green", "r2", B)], healthy=("green",), history=HISTORY)
    route = P.rollback_route(f, None)
    t = P.cold_rollback_target(route)
    assert (t.digest, t.kind, t.release_command) == (A, "rollback", False)
    steps = kinds(P.release_plan(shop(), f, t, "r3"))
    assert "RunReleaseCommand" not in steps and steps[:3] == ["Pull", "PrepareVolumes", "Record"]


NEW = rel("r2", B, "green", outcome=IN_PROGRESS)


def test_repair_of_a_release_killed_during_its_release_command_removes_the_one_off_and_aborts():
    oneoff = P.Container("", "shop-release-r2", True, "r2", "2.0", B, "Up", "release")
    f = facts(containers=[web("blue", "r1", A)], workers=OLD_WORKERS, oneoffs=[oneoff],
              history=[rel("r1", A, "blue"), NEW])
    steps = P.repair_plan(shop(), f)
    assert steps[:2] == [P.CleanTemp(), P.RemoveContainers(("shop-release-r2",))]
    assert isinstance(steps[2], P.Resolve) and (steps[2].release, steps[2].outcome) == ("r2", ABORTED)
    assert len(steps) == 3  # the live release's workers are not touched


def test_repair_after_the_swap_completes_and_stops_the_old_workers():
    new_workers = [worker("worker", n, "green", "r2") for n in (1, 2)]
    f = facts(live="green", containers=[web("blue", "r1", A), web("green", "r2", B)],
              workers=OLD_WORKERS + new_workers, healthy=("blue", "green"), history=[rel("r1", A, "blue"), NEW])
    steps = P.repair_plan(shop(), f)
    assert kinds(steps) == ["CleanTemp", "Reload", "StopWorkers", "StopWorkers", "Resolve"]
    assert steps[-1].outcome == SUCCESS
    assert steps[3] == P.StopWorkers(("shop-worker-1-blue", "shop-worker-2-blue"), 20.0)


def test_repair_after_the_swap_to_an_unhealthy_colour_moves_back_and_removes_the_new_workers():
    new_workers = [worker("worker", 1, "green", "r2")]
    f = facts(live="green", containers=[web("blue", "r1", A), web("green", "r2", B)],
              workers=OLD_WORKERS + new_workers, healthy=("blue",), history=[rel("r1", A, "blue"), NEW])
    steps = P.repair_plan(shop(), f)
    assert steps[1:3] == [P.PointUpstream("blue", "r1"), P.RemoveContainers(("shop-worker-1-green",))]
    assert steps[-1].outcome == FAILED


def test_nothing_in_progress_needs_no_repair():
    assert P.repair_plan(shop(), facts(history=[rel("r1", A, "blue")])) == []


def test_no_plan_ever_removes_a_volume():
    # volumes are directories, never containers: no RemoveContainers / StopWorkers names one,
    # whatever the plan (release, warm and cold rollback, every repair branch)
    f = facts(live="green", containers=[web("blue", "r1", A), web("green", "r2", B)], workers=OLD_WORKERS,
              healthy=("blue",), history=[rel("r1", A, "blue"), NEW])
    plans = [P.release_plan(shop(), f, target(C), "r3"), P.repair_plan(shop(), f),
             P.release_plan(shop(), f, P.cold_rollback_target(P.rollback_route(f, "r1")), "r3")]
    for steps in plans:
        for s in steps:
            for name in getattr(s, "names", ()):
                assert "volumes" not in name and name.startswith("shop-")


def test_parsers_of_docker_output():
    assert P.parse_worker_states("/shop-worker-1-green|running|0|0\n/shop-beat-1-green|restarting|1|3\n") == {
        "shop-worker-1-green": P.ContainerState("running", 0, 0), "shop-beat-1-green": P.ContainerState("restarting", 1, 3)}
    assert P.worker_failure(P.ContainerState("running", 0, 0)) is None
    assert P.worker_failure(P.ContainerState("exited", 3, 0)) == "it exited (exit code 3)"
    assert "keeps restarting" in P.worker_failure(P.ContainerState("running", 1, 2))
    assert P.worker_failure(None) == "the container is gone"
    assert P.web_failure(["exited", "1", "0", "r1"]) == "the container exited at start (exit code 1)"
    assert P.web_failure(["running", "0", "0", "r1"]) is None
    assert P.parse_du("4096\t/opt/ferry/shop/volumes/data\n12\t/opt/ferry/shop/volumes/media\n") == {
        "/opt/ferry/shop/volumes/data": 4096, "/opt/ferry/shop/volumes/media": 12}
    assert P.parse_user("65532:65532") == (65532, 65532) and P.parse_user("1000") == (1000, 1000)
    assert P.parse_user("") == (0, 0) and P.parse_user("nobody") is None


def test_containers_from_ps_sorts_web_workers_and_one_offs():
    rows = [{"Names": "shop-blue", "State": "running", "Status": "Up",
             "Labels": "dev.ferry.app=shop,dev.ferry.colour=blue,dev.ferry.release=r1,dev.ferry.role=web"},
            {"Names": "shop-worker-1-blue", "State": "exited", "Status": "Exited (0)",
             "Labels": "dev.ferry.app=shop,dev.ferry.colour=blue,dev.ferry.release=r1,dev.ferry.role=worker,"
                       "dev.ferry.process=worker,dev.ferry.replica=1"},
            {"Names": "shop-release-r2", "State": "running", "Status": "Up",
             "Labels": "dev.ferry.app=shop,dev.ferry.release=r2,dev.ferry.role=release"},
            {"Names": "shop-green", "State": "running", "Status": "Up",  # labelled before roles existed
             "Labels": "dev.ferry.app=shop,dev.ferry.colour=green,dev.ferry.release=r0"}]
    web_, workers, oneoffs = P.containers_from_ps(rows)
    assert sorted(web_) == ["blue", "green"] and web_["green"].release == "r0"
    assert [(w.name, w.process, w.replica, w.running) for w in workers] == [("shop-worker-1-blue", "worker", 1, False)]
    assert [o.name for o in oneoffs] == ["shop-release-r2"]


# --- reading what the host's one-command scripts print ---------------------------------------

PS_ROW = ('{"Names":"shop-blue","State":"running","Status":"Up 2 minutes","Labels":"dev.ferry.app=shop,'
          'dev.ferry.colour=blue,dev.ferry.release=r1,dev.ferry.digest=' + A + '"}')


def test_observe_output_splits_into_containers_and_each_colours_probe():
    text = (f"{PS_ROW}\nWARNING: not json\n--ferry-observe-- 0\n"
            "--ferry-observe--\nok\n200--ferry-observe--\n\n000")
    seen = P.parse_observe(text, ["blue", "green"])
    assert (seen.ps_exit, seen.probes) == (0, {"blue": 200, "green": 0})
    assert [r["Names"] for r in seen.rows()] == ["shop-blue"]
    web_, _, _ = P.containers_from_ps(seen.rows())
    assert P.healthy_colours(web_, seen.probes) == frozenset({"blue"})


def test_observe_output_without_its_separator_is_a_failed_ps_and_unanswered_probes():
    seen = P.parse_observe("Cannot connect to the Docker daemon\n", ["blue", "green"])
    assert (seen.ps_exit, seen.probes) == (1, {"blue": 0, "green": 0})
    assert P.parse_observe("permission denied\n--ferry-observe-- 1\n", ["blue"]).ps_exit == 1


def test_a_colour_is_healthy_only_when_it_runs_and_answers_2xx_or_3xx():
    running, stopped = web("blue", "r1", A), web("green", "r2", B, running=False)
    assert P.healthy_colours({"blue": running, "green": stopped}, {"blue": 302, "green": 200}) == {"blue"}
    assert P.healthy_colours({"blue": running}, {"blue": 503}) == frozenset()


def test_verified_needs_the_release_the_colours_port_and_a_good_status():
    head = "HTTP/1.1 200 OK\nServer: nginx\nX-Ferry-Release: r7\nX-Ferry-Upstream: 127.0.0.1:34082\n"
    assert P.verified(head, "r7", 34082)
    assert not P.verified(head, "r6", 34082)
    assert not P.verified(head, "r7", 34081)  # the old colour answered
    assert not P.verified(head.replace("200 OK", "502 Bad Gateway"), "r7", 34082)
    assert not P.verified("curl: (7) Failed to connect\n", "r7", 34082)


def test_health_polls_quickly_while_the_app_boots_then_an_interval_between_passes():
    from ferry.config import Health

    h = Health(interval=1.0, start_interval=0.1, healthy_after=3)
    assert P.health_poll_delay(h, 0) == 0.1  # no pass yet: booting
    assert P.health_poll_delay(h, 1) == 1.0  # passes in a row are an interval apart
    assert P.health_poll_delay(h, 2) == 1.0
    # a start interval above the interval never slows the polls down
    assert P.health_poll_delay(Health(interval=0.2, start_interval=5.0), 0) == 0.2

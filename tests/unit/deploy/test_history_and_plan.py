from __future__ import annotations

from ferry.deploy.history import FAILED, SUCCESS, History, Release, release_id
from ferry.deploy.plan import idle_colour, images_to_prune


def rel(i: str, digest: str, outcome=SUCCESS, kind="deploy", colour="blue") -> Release:
    return Release(id=i, version=f"v{i}", digest=digest, image=f"r/app@{digest}", colour=colour, time="t",
                   who="me", outcome=outcome, kind=kind)


def test_idle_colour_alternates_and_starts_blue():
    assert idle_colour(None) == "blue"
    assert idle_colour("blue") == "green"
    assert idle_colour("green") == "blue"


def test_release_id_names_time_and_digest():
    rid = release_id("sha256:" + "ab12cd3" + "0" * 57)
    assert rid.endswith("-ab12cd3") and len(rid) == len("20261126-101500-ab12cd3")


def test_rollback_goes_to_the_deploy_before_the_live_one_and_skips_failures():
    h = History((rel("a", "sha256:a"), rel("b", "sha256:b"), rel("x", "sha256:x", outcome=FAILED),
                 rel("c", "sha256:c")))
    assert h.rollback_target("sha256:c").id == "b"


def test_rolling_back_twice_walks_further_back_not_forward():
    h = History((rel("a", "sha256:a"), rel("b", "sha256:b"), rel("c", "sha256:c"),
                 rel("r1", "sha256:b", kind="rollback")))
    assert h.rollback_target("sha256:b").id == "a"


def test_nothing_to_roll_back_to_on_first_release():
    assert History((rel("a", "sha256:a"),)).rollback_target("sha256:a") is None


def test_history_round_trips_and_updates():
    h = History((rel("a", "sha256:a", outcome="in-progress"),))
    h2 = History.parse(h.update("a", outcome=SUCCESS, duration=1.5).dumps())
    assert h2.releases[0].outcome == SUCCESS and h2.releases[0].duration == 1.5
    assert History.parse(None).releases == ()


def test_get_by_id_or_version():
    h = History((rel("a", "sha256:a"), rel("b", "sha256:b")))
    assert h.get("b").id == "b"
    assert h.get("va").id == "a"
    assert h.get("nope") is None


def test_prune_keeps_recent_releases_and_images_in_use():
    h = History(tuple(rel(str(i), f"sha256:{i}") for i in range(6)))
    rows = [{"Repository": "r/app", "Digest": f"sha256:{i}"} for i in range(6)] + [
        {"Repository": "r/app", "Digest": "<none>"}]
    assert images_to_prune(rows, h, keep=3, in_use={"sha256:0"}) == ["r/app@sha256:1", "r/app@sha256:2"]


def test_release_ids_are_unique_within_the_history():
    """A repair then the same image again, within one second: two entries, two ids (one id for
    both made recording the second's success rewrite the repaired entry as well)."""
    from datetime import datetime, timezone

    when, digest = datetime(2026, 12, 3, 14, 0, 0, tzinfo=timezone.utc), "sha256:" + "ab12cd3" + "0" * 57
    first = release_id(digest, when)
    assert first == "20261203-140000-ab12cd3"
    assert release_id(digest, when, taken={first}) == first + "-2"
    assert release_id(digest, when, taken={first, first + "-2"}) == first + "-3"
    h = History((Release(first, "v2", digest, "img", "blue", "t", "ci", outcome="aborted"),))
    second = release_id(digest, when, taken={r.id for r in h.releases})
    h = h.append(Release(second, "v2", digest, "img", "green", "t", "ci")).update(second, outcome=SUCCESS)
    assert [r.outcome for r in h.releases] == ["aborted", SUCCESS]

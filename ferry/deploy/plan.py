"""Pure decisions of a deploy: which colour is idle, which images to prune, which hosts go in
what order. No I/O: unit-tested as plain data."""

from __future__ import annotations

from .history import SUCCESS, History


def idle_colour(live: str | None) -> str:
    """The colour a new release starts in: the one not serving (blue on a fresh host)."""
    return "green" if live == "blue" else "blue"


def images_to_prune(rows: list[dict], history: History, keep: int, in_use: set[str]) -> list[str]:
    """Image references (repo@digest) on the host beyond the last ``keep`` successful releases,
    never one a container (live or warm) still uses. ``rows`` are `docker images --format json`."""
    kept: list[str] = []
    for r in reversed(history.releases):
        if r.outcome == SUCCESS and r.digest not in kept:
            kept.append(r.digest)
        if len(kept) >= keep:
            break
    keep_set = set(kept) | in_use
    out = []
    for row in rows:
        digest = row.get("Digest") or ""
        if not digest.startswith("sha256:") or digest in keep_set:
            continue
        out.append(f"{row.get('Repository')}@{digest}")
    return sorted(set(out))

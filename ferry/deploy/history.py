"""A host's release history (``<root>/<app>/releases.json``), as plain data.

Every deploy writes its entry *before* traffic moves (outcome ``in-progress``): if the entry
cannot be written (disk full, read-only) the deploy stops while the old colour still serves,
and if ferry dies mid-swap the next command finds the entry and repairs the host.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone

IN_PROGRESS = "in-progress"
SUCCESS = "success"
FAILED = "failed"
ABORTED = "aborted"  # interrupted before traffic moved; repaired by the next command
MAX_ENTRIES = 200


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def release_id(digest: str, when: datetime | None = None, taken=()) -> str:
    """<UTC second>-<digest>, unique among ``taken`` (the history's ids): two releases of one
    image in one second (a repair, then the same deploy again) must not share an id, or
    recording one's outcome would rewrite the other's."""
    t = (when or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    rid = base = f"{t}-{digest.split(':')[-1][:7]}"
    n = 1
    while rid in taken:
        n += 1
        rid = f"{base}-{n}"
    return rid


@dataclass(frozen=True)
class Release:
    id: str
    version: str
    digest: str
    image: str  # repository@digest
    colour: str
    time: str
    who: str
    outcome: str = IN_PROGRESS
    kind: str = "deploy"  # deploy | rollback
    note: str = ""
    duration: float | None = None
    # deploy.release_command, when this release ran it: {"exit_code", "duration", "ok"}
    release_command: dict | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Release":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass(frozen=True)
class History:
    releases: tuple[Release, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> "History":
        if not text or not text.strip():
            return cls()
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("releases.json is not valid JSON") from None
        return cls(tuple(Release.from_json(r) for r in data.get("releases", [])))

    def dumps(self) -> str:
        recent = self.releases[-MAX_ENTRIES:]
        return json.dumps({"releases": [r.to_json() for r in recent]}, indent=2) + "\n"

    def append(self, r: Release) -> "History":
        return History((*self.releases, r))

    def update(self, rid: str, **changes) -> "History":
        return History(tuple(replace(r, **changes) if r.id == rid else r for r in self.releases))

    def get(self, rid_or_version: str) -> Release | None:
        for r in reversed(self.releases):
            if r.id == rid_or_version:
                return r
        for r in reversed(self.releases):
            if r.version == rid_or_version and r.outcome == SUCCESS:
                return r
        return None

    def successes(self) -> list[Release]:
        return [r for r in self.releases if r.outcome == SUCCESS]

    def last_success(self) -> Release | None:
        s = self.successes()
        return s[-1] if s else None

    def in_progress(self) -> list[Release]:
        return [r for r in self.releases if r.outcome == IN_PROGRESS]

    def rollback_target(self, live_digest: str | None) -> Release | None:
        """What `ferry rollback` goes back to: the successful deploy made before the one that
        put the live image there. Rollbacks themselves are skipped, so rolling back twice from
        C goes to B, then to A (not back to C)."""
        deploys = [r for r in self.successes() if r.kind == "deploy"]
        idx = None
        for i in range(len(deploys) - 1, -1, -1):
            if deploys[i].digest == live_digest:
                idx = i
                break
        candidates = deploys[:idx] if idx is not None else deploys
        for r in reversed(candidates):
            if r.digest != live_digest:
                return r
        return None

    def recent(self, n: int = 5) -> list[Release]:
        return list(self.releases[-n:])[::-1]

"""What a deploy, a rollback and a status report per host: frozen dataclasses, ``to_json()`` for
``--json``. The JSON keys are the contract (tests/unit/deploy/test_results_json.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReleaseCommandRun:
    """deploy.release_command as it ran on this host (the first of the release)."""

    exit_code: int | None  # None: killed at release_timeout
    duration: float
    ok: bool

    def to_json(self) -> dict:
        return {"exit_code": self.exit_code, "duration": self.duration, "ok": self.ok}


@dataclass(frozen=True)
class DeployResult:
    """One host after ``ferry deploy``: ``action`` is ``deployed`` or ``none`` (already live)."""

    host: str
    action: str
    release: str
    colour: str
    digest: str
    version: str
    previous: str | None = None
    duration: float | None = None
    repaired: tuple[str, ...] = ()
    release_command: ReleaseCommandRun | None = None
    workers: tuple[str, ...] = ()  # the containers of [processes.*] now running for the release

    def to_json(self) -> dict:
        return {"host": self.host, "action": self.action, "release": self.release, "colour": self.colour,
                "digest": self.digest, "version": self.version, "previous": self.previous,
                "duration": self.duration, "repaired": list(self.repaired),
                "release_command": self.release_command.to_json() if self.release_command else None,
                "workers": list(self.workers)}


@dataclass(frozen=True)
class RollbackResult:
    """One host after ``ferry rollback``: ``rolled-back`` (warm: one reload, or a gated deploy
    of the earlier image) or ``none`` (already live)."""

    host: str
    action: str
    release: str
    colour: str
    digest: str
    version: str
    warm: bool = False
    entry: str | None = None  # the rollback's own history entry
    previous: str | None = None
    swap_seconds: float | None = None
    duration: float | None = None
    repaired: tuple[str, ...] = ()
    workers: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"host": self.host, "action": self.action, "release": self.release, "colour": self.colour,
                "digest": self.digest, "version": self.version, "warm": self.warm, "entry": self.entry,
                "previous": self.previous, "swap_seconds": self.swap_seconds, "duration": self.duration,
                "repaired": list(self.repaired), "workers": list(self.workers)}


@dataclass(frozen=True)
class VolumeStatus:
    name: str
    path: str  # in the containers
    host_path: str
    size: int | None  # bytes (du -sb); None: not created yet

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "host_path": self.host_path, "size": self.size}


@dataclass(frozen=True)
class WorkerStatus:
    name: str
    process: str
    replica: int
    release: str
    colour: str
    running: bool
    state: str

    def to_json(self) -> dict:
        return {"name": self.name, "process": self.process, "replica": self.replica, "release": self.release,
                "colour": self.colour, "running": self.running, "state": self.state}


@dataclass(frozen=True)
class HostStatus:
    host: str
    live: dict | None
    health: dict | None
    warm: tuple[dict, ...]
    lock: dict | None
    pending: tuple[str, ...]
    releases: tuple[dict, ...]
    repaired: tuple[str, ...]
    volumes: tuple[VolumeStatus, ...] = ()
    workers: dict[str, tuple[WorkerStatus, ...]] | None = None  # release id -> its workers

    def to_json(self) -> dict:
        return {"host": self.host, "live": self.live, "health": self.health, "warm": list(self.warm),
                "lock": self.lock, "pending": list(self.pending), "releases": list(self.releases),
                "repaired": list(self.repaired), "volumes": [v.to_json() for v in self.volumes],
                "workers": {r: [w.to_json() for w in ws] for r, ws in (self.workers or {}).items()}}

"""The app's deploy lock on a host: ``<root>/<app>/lock/`` made with ``mkdir`` (atomic: of two
deploys racing, exactly one creates it), holding ``info.json`` (who, command, version, pid,
machine, since). The holder touches it while it works; a lock is *stale* when its holder
process is gone (same machine) or it has not been touched for a long while.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from ..config import Config
from ..errors import DeployError, LockHeld
from ..processes import pid_alive


@dataclass(frozen=True)
class LockInfo:
    holder: str  # user@machine
    machine: str
    pid: int
    command: str
    version: str
    since: str  # ISO time, UTC

    @classmethod
    def mine(cls, command: str, version: str = "") -> "LockInfo":
        machine = socket.gethostname()
        user = os.environ.get("FERRY_WHO") or getpass.getuser()
        return cls(f"{user}@{machine}", machine, os.getpid(), command, version,
                   datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "LockInfo":
        return cls(**{k: d.get(k, "" if k != "pid" else 0) for k in cls.__dataclass_fields__})


def stale_after(cfg: Config) -> float:
    """A holder touches the lock at least this often while it works (each step, each poll)."""
    d = cfg.deploy
    # a quiet release command (a long migration) touches the lock only when it prints
    return max(d.health.timeout, d.drain_timeout, d.release_timeout if d.release_command else 0.0) + 120.0


def stale_reason(info: LockInfo, age: float | None, limit: float, this_machine: str,
                 pid_alive) -> str | None:
    """Why the lock is stale, or None when its holder may still be working (pure)."""
    if info.machine == this_machine and info.pid and not pid_alive(info.pid):
        return f"its holder (pid {info.pid} on {info.machine}) is gone"
    if age is not None and age > limit:
        return f"it has not been touched for {int(age)}s"
    return None


def lock_dir(cfg: Config) -> str:
    return f"{cfg.deploy.root}/{cfg.app.name}/lock"


@dataclass
class LockState:
    info: LockInfo | None
    age: float | None
    stale: str | None

    def to_json(self) -> dict | None:
        if self.info is None:
            return None
        return {**self.info.to_json(), "age_seconds": None if self.age is None else int(self.age),
                "stale": self.stale is not None, "stale_reason": self.stale}

    def describe(self) -> str:
        i = self.info
        if i is None:
            return "unlocked"
        s = f"held by {i.holder} (pid {i.pid}, `{i.command}`{', version ' + i.version if i.version else ''}) since {i.since}"
        if self.stale:
            s += f"; stale: {self.stale}"
        return s


class Lock:
    def __init__(self, host, cfg: Config):
        self.host = host
        self.cfg = cfg
        self.dir = lock_dir(cfg)
        self.info_path = f"{self.dir}/info.json"
        self.held: LockInfo | None = None
        self._touched = 0.0

    def read(self) -> LockState:
        r = self.host.run(["sh", "-c", f"cat {self.info_path} 2>/dev/null; echo; echo @@; "
                                       f"now=$(date +%s); m=$(stat -c %Y {self.dir} {self.info_path} 2>/dev/null | sort -n | tail -1); "
                                       f"[ -n \"$m\" ] && echo $((now - m)) || true"])
        if "@@" not in r.stdout:
            return LockState(None, None, None)
        body, _, age_s = r.stdout.partition("@@")
        age = float(age_s.strip()) if age_s.strip() else None
        if age is None:  # no lock directory
            return LockState(None, None, None)
        try:
            info = LockInfo.from_json(json.loads(body.strip()))
        except (json.JSONDecodeError, TypeError):
            # the holder died between mkdir and writing info.json
            info = LockInfo("unknown", "unknown", 0, "unknown", "", "unknown")
            return LockState(info, age, "the lock has no holder information" if age > 30 else None)
        return LockState(info, age, stale_reason(info, age, stale_after(self.cfg), socket.gethostname(), pid_alive))

    def acquire(self, info: LockInfo, force: bool = False, progress=None) -> None:
        self.host.mkdir(f"{self.cfg.deploy.root}/{self.cfg.app.name}", parents=True)
        for attempt in range(2):
            if self.host.mkdir(self.dir):
                try:
                    self.host.write(self.info_path, json.dumps(info.to_json(), indent=2) + "\n")
                except Exception:
                    self.host.run(["rm", "-rf", self.dir])
                    raise
                self._touched = time.monotonic()
                self.held = info
                return
            state = self.read()
            if state.info is None:
                continue  # released between our mkdir and read: try once more
            certain = state.stale and state.info.machine == info.machine and state.info.pid and \
                not pid_alive(state.info.pid)
            if state.stale and (force or certain):
                if progress:
                    progress.warn(f"breaking a stale lock ({state.describe()})", host=self.host.name)
                self.host.run(["rm", "-rf", self.dir])
                continue
            hint = ("it is stale: run `ferry lock release --force` or pass --force to break it"
                    if state.stale else
                    "wait for that deploy to finish; `ferry lock status` shows it")
            raise LockHeld(f"{self.host.name}: the deploy lock of {self.cfg.app.name} is {state.describe()}", hint)
        raise DeployError(f"{self.host.name}: could not take the deploy lock", "run the command again")

    def touch(self) -> None:
        """Keep the lock fresh; at most every 10 s (staleness is measured in minutes)."""
        if self.held and time.monotonic() - self._touched > 10:
            self.host.run(["touch", self.info_path])
            self._touched = time.monotonic()

    def release(self) -> None:
        if self.held:
            try:
                self.host.remove(self.info_path)
                self.host.sftp().rmdir(self.dir)
            except OSError:
                self.host.run(["rm", "-rf", self.dir])
            self.held = None

    def force_release(self) -> LockState:
        state = self.read()
        if state.info is not None:
            self.host.run(["rm", "-rf", self.dir])
        return state

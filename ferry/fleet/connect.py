"""Reaching the hosts: ``connect`` one, ``connected`` all of them for a with-block, and
``for_each_host``: resolve, connect, run an action, close, in batches of ``parallel`` hosts (one
thread and one Fabric connection each), stopping at the first batch with a failure.

What to do with a failure (annotate it, keep going) is the caller's: ``run_on_hosts`` returns a
``FleetRun`` that says which hosts are done, which failed and which were never touched.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from ..config import Config
from ..deploy.host import Host
from ..errors import ConfigError, FerryError
from ..progress import NULL, Progress
from . import hosts as H
from .hosts import HostTarget


def connect(cfg: Config, target: HostTarget, progress: Progress = NULL) -> Host:
    """An open SSH connection to ``target`` (a context manager: closes on exit)."""
    key = cfg.deploy.ssh_key
    if key and not os.path.exists(os.path.expanduser(key)):
        raise ConfigError(f"deploy.ssh_key: {key} does not exist", "point it at the private key for the hosts")
    return Host(target.spec, key_filename=os.path.expanduser(key) if key else None, progress=progress,
                gateway=target.gateway).open()


@dataclass(frozen=True)
class Connected:
    """A host of the app and its open connection: what the stack knows about it (``target``)
    stays beside the connection instead of being copied onto it."""

    target: HostTarget
    host: Host

    @property
    def name(self) -> str:
        return self.host.name


@contextlib.contextmanager
def connected(cfg: Config, progress: Progress = NULL,
              targets: Sequence[HostTarget] | None = None) -> Iterator[list[Connected]]:
    """Every host open at once (certs needs them together: one order, every host's webroot);
    all closed on the way out, also when opening a later one fails."""
    targets = H.resolve_hosts(cfg, progress) if targets is None else targets
    opened: list[Connected] = []
    try:
        for t in targets:
            opened.append(Connected(t, connect(cfg, t, progress)))
        yield opened
    finally:
        for c in opened:
            c.host.close()


def batches(targets: Sequence[Any], parallel: int, first_alone: bool = False) -> list[list[Any]]:
    """Hosts in the order they are worked on, ``parallel`` at a time. ``first_alone``: the first
    host is a batch of its own (the release command runs there, before any other host moves)."""
    if parallel < 1:
        raise ValueError("parallel must be at least 1")
    items = list(targets)
    head: list[list[Any]] = [items[:1]] if first_alone and items else []
    rest = items[1:] if head else items
    return head + [rest[i:i + parallel] for i in range(0, len(rest), parallel)]


@dataclass(frozen=True)
class FleetRun:
    """What happened across the hosts: results in host order for the hosts that finished,
    failures in host order, hosts never reached (batches after the one that failed)."""

    targets: tuple[HostTarget, ...]
    done: tuple[tuple[HostTarget, Any], ...]
    failed: tuple[tuple[HostTarget, FerryError], ...]
    untouched: tuple[HostTarget, ...]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def results(self) -> list[Any]:
        return [r for _, r in self.done]

    def index(self, target: HostTarget) -> int:
        return self.targets.index(target)


def run_on_hosts(cfg: Config, action: Callable[[HostTarget, Host], Any], progress: Progress = NULL,
                 parallel: int = 1, targets: Sequence[HostTarget] | None = None,
                 first_alone: bool = False, keep_going: bool = False) -> FleetRun:
    """``action(target, host)`` on every host, each connected for its turn and closed after.
    A FerryError stops the run after its batch (the other hosts of that batch finish what they
    do: a half-done swap is worse than a finished one), unless ``keep_going`` (status: every
    host is looked at); anything else (a bug, Ctrl-C) propagates after the batch's threads are
    done."""
    targets = tuple(H.resolve_hosts(cfg, progress) if targets is None else targets)
    plan = batches(targets, parallel, first_alone)
    done: dict[HostTarget, Any] = {}
    failed: dict[HostTarget, FerryError] = {}

    def one(target: HostTarget) -> None:
        with connect(cfg, target, progress) as host:
            done[target] = action(target, host)

    for b, batch in enumerate(plan):
        for t in batch:
            progress.step(f"host {targets.index(t) + 1}/{len(targets)}: {t}")
        if len(batch) == 1:
            outcomes = [_catch(one, batch[0])]
        else:
            with ThreadPoolExecutor(max_workers=len(batch), thread_name_prefix="ferry-host") as pool:
                outcomes = list(pool.map(lambda t: _catch(one, t), batch))
        for t, exc in zip(batch, outcomes, strict=True):
            if isinstance(exc, FerryError):
                failed[t] = exc
        unexpected = next((e for e in outcomes if e is not None and not isinstance(e, FerryError)), None)
        if unexpected is not None:
            raise unexpected
        if failed and not keep_going:
            untouched = tuple(t for later in plan[b + 1:] for t in later)
            return FleetRun(targets, tuple((t, done[t]) for t in targets if t in done),
                            tuple((t, failed[t]) for t in targets if t in failed), untouched)
    return FleetRun(targets, tuple((t, done[t]) for t in targets if t in done),
                    tuple((t, failed[t]) for t in targets if t in failed), ())


def _catch(fn: Callable[[HostTarget], None], target: HostTarget) -> BaseException | None:
    try:
        fn(target)
        return None
    except BaseException as e:  # noqa: BLE001 - handed back to the caller's thread
        return e


def for_each_host(cfg: Config, action: Callable[[HostTarget, Host], Any], progress: Progress = NULL,
                  parallel: int = 1, targets: Sequence[HostTarget] | None = None) -> list[Any]:
    """``run_on_hosts`` that raises the first failure as it is; the results in host order."""
    run = run_on_hosts(cfg, action, progress, parallel, targets)
    if run.failed:
        raise run.failed[0][1]
    return run.results


"""The app's scrape targets: one per running colour, in Prometheus' file_sd JSON format (pure).

Prometheus re-reads the file when it changes, so a release relabels its targets without a
restart. Each target carries ``app``, ``colour``, ``release`` and ``role`` (``live`` behind
nginx, ``idle`` kept warm for a rollback): alerts on a target being down skip the idle colour,
which the deployer stops on a timer. The app's own ``version`` label is left as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Mapping

from ..deploy.docker import labels_of
from .render import dump_json
from .settings import LOOPBACK, Settings


@dataclass(frozen=True)
class Slot:
    """What one colour's container runs, as the host's labels tell it."""

    colour: str
    release: str
    version: str
    running: bool = True


def targets_doc(s: Settings, slots: Iterable[Slot], live_colour: str | None) -> list[dict]:
    out = []
    for slot in sorted(slots, key=lambda x: x.colour):
        if not slot.running or slot.colour not in s.colours:
            continue
        out.append({
            "targets": [f"{LOOPBACK}:{s.colours[slot.colour]}"],
            "labels": {
                "job": s.job,
                "__metrics_path__": s.mon.metrics_path,
                "app": s.app,
                "colour": slot.colour,
                "release": slot.release or "unknown",
                "role": "live" if slot.colour == live_colour else "idle",
            },
        })
    return out


def targets_json(s: Settings, slots: Iterable[Slot], live_colour: str | None) -> str:
    return dump_json(targets_doc(s, slots, live_colour))


def slots_from_ps(ps_rows: Iterable[Mapping], app: str, label_prefix: str = "dev.ferry") -> list[Slot]:
    """`docker ps --format '{{json .}}'` rows -> the app's colours (labels set by the deployer)."""
    out = []
    for row in ps_rows:
        labels = labels_of(row)
        if labels.get(f"{label_prefix}.app") != app:
            continue
        colour = labels.get(f"{label_prefix}.colour")
        if not colour:
            continue
        out.append(Slot(colour, labels.get(f"{label_prefix}.release", ""), labels.get(f"{label_prefix}.version", ""),
                        row.get("State") == "running"))
    return out


def parse_ps(stdout: str) -> list[dict]:
    rows = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a warning line from the docker client, not a row
    return rows


def live_colour_of(s: Settings, live_port: int | None) -> str | None:
    return next((c for c, p in s.colours.items() if p == live_port), None)

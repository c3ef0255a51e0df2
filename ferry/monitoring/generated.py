"""What is checked in under the repository's monitoring/ (the templates themselves are ferry's
package data, ferry/assets/monitoring): the example rendered for the repository's ferry.toml
(rendered/, which the promtool tests run against) and the dashboards' JSON (dashboards/).
`ferry monitoring render` writes them; a test fails when they are stale."""

from __future__ import annotations

from pathlib import Path

from ..config import Config

# what the checked-in example shows for the app's targets: blue live, green kept warm
EXAMPLE_SLOTS = (("blue", "20260101-120000-3f2a9c1", "v2"), ("green", "20260101-110000-8b7e0d4", "v1"))


def render_all(cfg: Config, check: bool = False) -> dict:
    """Write (or with ``check``, compare) what is checked in under monitoring/: the rendered
    example (rendered/) and the dashboards (dashboards/*.json), for this ferry.toml."""
    from . import dashboards, render
    from .settings import generated_dir, settings
    from .targets import Slot, targets_json

    host = cfg.deploy.hosts[0] if cfg.deploy.hosts else None
    s = settings(cfg, host)
    slots = [Slot(c, r, v) for c, r, v in EXAMPLE_SLOTS]
    out = generated_dir(cfg)
    want: dict[Path, str] = {}
    for rel, text in render.example(s, targets_json(s, slots, "blue")).items():
        want[out / "rendered" / rel] = text
    for name, text in dashboards.generate(s).items():
        want[out / "dashboards" / name] = text
    stale = [str(p) for p, text in sorted(want.items()) if not p.is_file() or p.read_text() != text]
    if not check:
        for p, text in want.items():
            if str(p) in stale:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
    return {"files": sorted(str(p) for p in want), "stale": stale, "written": [] if check else stale,
            "ok": not (check and stale)}

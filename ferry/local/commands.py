"""`ferry local up | down | status`: this machine as a deploy host on loopback."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli import Context, command, emit
from ..config import DEFAULT_CONFIG, LocalConfig
from . import pebble


def _target(ctx: Context):
    from .target import LocalTarget

    if ctx.config_path is None and not Path(DEFAULT_CONFIG).exists():
        # no ferry.toml here: the local target works with its defaults
        settings, root = LocalConfig(), "/opt/ferry"
    else:  # a ferry.toml that is wrong is an error, not a reason to use defaults
        cfg = ctx.config()
        settings, root = cfg.local, cfg.deploy.root
    return LocalTarget(settings, deploy_root=root, progress=ctx.progress)


def _status_text(r: dict) -> str:
    lines = [f"{'component':<16} {'pid':>8}  {'address':<44} health"]
    for c in r["components"]:
        lines.append(f"{c['name']:<16} {str(c['pid'] or '-'):>8}  {c['address']:<44} "
                     f"{'ok' if c['healthy'] else c['note']}")
    if "acme" in r:
        for c in r["acme"].get("components", []):
            lines.append(f"{c['name']:<16} {str(c.get('pid') or '-'):>8}  {c['address']:<44} "
                         f"{'ok' if c.get('healthy') else 'down'}")
    lines.append("local target: " + ("healthy" if r["healthy"] else "NOT healthy (run `ferry local up`)"))
    return "\n".join(lines)


def parse_pythons(values: tuple[str, ...], no_base_image: bool = False) -> tuple[str, ...]:
    """``--python 3.13,3.14`` (or repeated) as ("3.13", "3.14"), each one ferry has a recipe for."""
    from ..errors import ConfigError

    wanted = tuple(dict.fromkeys(v.strip() for value in values for v in value.split(",") if v.strip()))
    if not wanted:
        return ()  # the default path (`make demo`) reads no recipe here
    from ..images.baseimage import available_pythons

    if no_base_image:
        raise ConfigError("--python makes base images, --no-base-image says not to", "pass one of them")
    known = available_pythons()
    unknown = [v for v in wanted if v not in known]
    if unknown:
        raise ConfigError(f"--python: ferry has no base for Python {', '.join(unknown)}",
                          f"use one or more of {', '.join(known)} (ferry/assets/base/python-3.X.toml)")
    return wanted


def register(main: click.Group) -> None:
    @main.group()
    def local() -> None:
        """This machine as a host: Docker engine, registries, sshd, nginx on loopback.

        \b
        Examples:
          ferry local up            # idempotent: a second run changes nothing
          ferry local up --python 3.13,3.14   # also the Python 3.13 and 3.14 bases
          ferry local up --acme     # also pebble (a test ACME CA) for `ferry certs`
          ferry local status --json
          ferry local down          # stops exactly what `up` started
        """

    @command(local, "up")
    @click.option("--acme", is_flag=True, help="Also start pebble + pebble-challtestsrv (test ACME CA).")
    @click.option("--no-base-image", is_flag=True, help="Do not build/push the Python base image.")
    @click.option("--python", "pythons", multiple=True, metavar="3.X[,3.Y]",
                  help="Also make the bases for these Pythons (127.0.0.1:5000/ferry/python:3.X); 3.11 is always made.")
    def up(ctx: Context, acme: bool, no_base_image: bool, pythons: tuple[str, ...]) -> None:
        """Start what is not running (dockerd, registries, sshd, nginx) and push the base image."""
        wanted = parse_pythons(pythons, no_base_image)  # before anything starts
        t = _target(ctx)
        r = t.up(with_base_image=not no_base_image, pythons=wanted)
        if acme:
            r["acme"] = pebble.start(t.settings.state_dir)
        emit(ctx, r, lambda r: "local target up" + ("" if r["changed"] else " (nothing changed)")
             + f": registry {r['registry']}, ssh {r['ssh']}, nginx http://127.0.0.1:8080"
             + "".join(f"\n  base {b['image']} ({b['action'] if b['action'] != 'none' else 'up to date'})"
                       for b in r.get("base_images", {}).values()))

    @command(local, "status")
    def status(ctx: Context) -> None:
        """Each daemon's pid, address and health; exit 1 if one is unhealthy."""
        t = _target(ctx)
        r = t.status()
        st = pebble.status(t.settings.state_dir)
        if st.get("components") and any(c.get("pid") for c in st["components"]):
            r["acme"] = st
        emit(ctx, r, _status_text)
        if not r["healthy"]:
            raise SystemExit(1)

    @command(local, "down")
    def down(ctx: Context) -> None:
        """Stop exactly the daemons `up` started (by their recorded pids)."""
        t = _target(ctx)
        pebble.stop(t.settings.state_dir)
        r = t.down()
        emit(ctx, r, lambda r: "stopped: " + (", ".join(r["stopped"]) or "nothing was running"))

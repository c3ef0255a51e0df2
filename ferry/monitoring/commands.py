"""`ferry monitoring up | down | status | open | render | images`."""

from __future__ import annotations

import subprocess

import click

from ..cli import Context, command, emit
from ..errors import FerryError

def _up_text(r: dict) -> str:
    lines = []
    for h in r["hosts"]:
        lines.append(f"{h['host']}: " + ("changed" if h["changed"] else "nothing changed"))
        for c in h["components"]:
            lines.append(f"  {c['container']:<24} {c['action']:<8} {c['image']}")
    lines.append(f"Prometheus {r['prometheus_url']}  Alertmanager {r['alertmanager_url']}  "
                 f"Grafana {r['grafana_url'] or '(not configured)'}  (on the host's loopback: `ferry monitoring open`)")
    return "\n".join(lines)


def _status_text(r: dict) -> str:
    lines = []
    for h in r["hosts"]:
        lines.append(f"{h['host']}: " + ("healthy" if h["healthy"] else "NOT healthy"))
        for c in h["components"]:
            mark = "ok" if c["healthy"] else ("-" if c["state"] == "not configured" else "DOWN")
            lines.append(f"  {c['component']:<18} {c['state']:<15} {mark:<5} {c['url']}")
            if not c["healthy"] and c.get("why") and c["state"] != "not configured":
                lines.append(f"    {c['why']}")
        down = h["targets_down"]
        pending = f", {h['targets_unknown']} not scraped yet" if h.get("targets_unknown") else ""
        lines.append(f"  targets: {h['targets_up']} up, {len(down)} down{pending}")
        for t in down:
            lines.append(f"    {t['job']} {t['instance']}: {t['last_error'] or t['health']}")
    lines.append(f"Prometheus {r['prometheus_url']}  Grafana {r['grafana_url'] or '(not configured)'}")
    return "\n".join(lines)


def register(main: click.Group) -> None:
    @main.group()
    def monitoring() -> None:
        """Prometheus, Alertmanager, exporters and Grafana beside the app, on each host.

        \b
        Examples:
          ferry monitoring images --push     # build the stack's images, print pinned refs
          ferry monitoring up                # idempotent: a second run changes nothing
          ferry monitoring status --json     # components, targets, prometheus_url, grafana_url
          ferry monitoring open --start      # SSH tunnel to Prometheus/Grafana on the host
          ferry monitoring render --check    # are monitoring/rendered and dashboards current?
          ferry monitoring down
        """

    @command(monitoring, "up")
    def up(ctx: Context) -> None:
        """Start or update the stack on every host (only what changed)."""
        from .runner import up as run_up

        emit(ctx, run_up(ctx.config(), ctx.progress), _up_text)

    @command(monitoring, "status")
    def status(ctx: Context) -> None:
        """Each component's state and health, and Prometheus' targets."""
        from .runner import status as run_status

        r = run_status(ctx.config(), ctx.progress)
        emit(ctx, r, _status_text)
        if not r["ok"]:
            raise SystemExit(1)

    @command(monitoring, "down")
    @click.option("--purge", is_flag=True, help="Also delete configs, metrics history and secrets on the host.")
    def down(ctx: Context, purge: bool) -> None:
        """Stop and remove the stack's containers (data is kept unless --purge)."""
        from .runner import down as run_down

        emit(ctx, run_down(ctx.config(), ctx.progress, purge),
             lambda r: "\n".join(f"{h['host']}: removed {', '.join(h['removed']) or 'nothing'}" for h in r["hosts"]))

    @command(monitoring, "open")
    @click.option("--host", "host", default=None, help="Which host (default: the first).")
    @click.option("--offset", default=0, type=int, show_default=True,
                  help="Local port = remote port + OFFSET (when 9090/3000 are taken here).")
    @click.option("--start", is_flag=True, help="Run the tunnel in the foreground until Ctrl-C.")
    def open_(ctx: Context, host: str | None, offset: int, start: bool) -> None:
        """The SSH tunnel to Prometheus, Alertmanager and Grafana (they bind the host's loopback).

        \b
        Example:
          ferry monitoring open --start      # then browse http://127.0.0.1:3000
        """
        from .runner import open_tunnel

        r = open_tunnel(ctx.config(), host, offset, ctx.progress)
        import shlex

        def text(r: dict) -> str:
            urls = f"Prometheus {r['prometheus_url']}  Alertmanager {r['alertmanager_url']}  " \
                   f"Grafana {r['grafana_url'] or '(not configured)'}"
            if not r["command"]:
                return f"{r['note']}\n{urls}"
            return f"{shlex.join(r['command'])}\nthen: {urls}"

        emit(ctx, r, text)
        if start and r["command"]:
            ctx.progress.step("tunnel open: Ctrl-C closes it")
            try:
                code = subprocess.call(r["command"])
            except KeyboardInterrupt:
                code = 0
            if code not in (0, 130, 255):
                raise FerryError(f"ssh exited with {code}", "is a local port already in use? try --offset 10000")

    @command(monitoring, "render")
    @click.option("--check", is_flag=True, help="Only compare; exit 1 if anything is stale.")
    def render_cmd(ctx: Context, check: bool) -> None:
        """Regenerate monitoring/rendered/ and monitoring/dashboards/*.json from ferry.toml."""
        from .generated import render_all

        r = render_all(ctx.config(), check)

        def text(r: dict) -> str:
            if check:
                return "up to date" if not r["stale"] else "stale (run `ferry monitoring render`):\n  " + "\n  ".join(r["stale"])
            return ("wrote:\n  " + "\n  ".join(r["written"])) if r["written"] else "nothing changed"

        emit(ctx, r, text)
        if not r["ok"]:
            raise SystemExit(1)

    @command(monitoring, "images")
    @click.option("--push", is_flag=True, help="Push to the registry (default: only build).")
    @click.option("--registry", default="127.0.0.1:5000", show_default=True, help="Registry host[:port].")
    @click.option("--prefix", default="ferry", show_default=True, help="Repository prefix: REGISTRY/PREFIX/NAME (on AWS: the stack output monitoringPrefix).")
    def images_cmd(ctx: Context, push: bool, registry: str, prefix: str) -> None:
        """Build the stack's images from Debian's binaries (reproducible; amd64).

        \b
        Example:
          ferry monitoring images --push --json   # pinned refs for [monitoring.images]
        """
        from . import images

        built = images.build(progress=ctx.progress)
        out = {"images": [{"component": b.component.name, "digest": b.image.digest, "version": b.version,
                           "package": f"{b.component.package}={b.debian_version}"} for b in built]}
        if push:
            out["pushed"] = images.push(built, registry, prefix, ctx.progress)

        def text(r: dict) -> str:
            if "pushed" in r:
                lines = ["[monitoring.images]"]
                lines += [f'{p["component"].replace("-", "_")} = "{p["reference"]}"' for p in r["pushed"]]
                return "\n".join(lines)
            return "\n".join(f"{i['component']:<18} {i['version']:<8} {i['digest']}" for i in r["images"])

        emit(ctx, out, text)

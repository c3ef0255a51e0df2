"""`ferry release | deploy | rollback | status | lock`."""

from __future__ import annotations

import click

from ..cli import Context, command, emit
from . import release as R


def _host_lines(r: dict) -> str:
    lines = []
    for h in r["hosts"]:
        action = h.get("action")
        if action == "none":
            lines.append(f"{h['host']}: already live: {h['release']} ({h['colour']})")
        elif action == "rolled-back":
            how = "warm, one reload" if h.get("warm") else "gated swap"
            lines.append(f"{h['host']}: rolled back to {h['release']} ({h['colour']}, {how}, {h['duration']}s)")
        else:
            lines.append(f"{h['host']}: release {h['release']} live on {h['colour']} ({h.get('duration')}s)")
        rc = h.get("release_command")
        if rc:
            lines.append(f"  release command: exit {rc['exit_code']} ({rc['duration']}s)")
        if h.get("workers"):
            lines.append(f"  workers: {', '.join(h['workers'])}")
        for fix in h.get("repaired", []):
            lines.append(f"  repaired: {fix}")
    lines.append(f"url: {r['url']}")
    return "\n".join(lines)


def _status_text(r: dict) -> str:
    lines = [f"app {r['app']}: {r['url']}"]
    for h in r["hosts"]:
        if "error" in h:
            lines.append(f"{h['host']}: UNREACHABLE: {h['error']}")
            continue
        live = h["live"]
        if live:
            health = h["health"] or {}
            lines.append(f"{h['host']}: live {live['colour']} release {live['release']} version {live['version']} "
                         f"{live['digest'][:19]} health {'ok' if health.get('ok') else 'FAILING (' + str(health.get('status')) + ')'}")
        else:
            lines.append(f"{h['host']}: nothing deployed")
        for w in h["warm"]:
            lines.append(f"  warm: {w['colour']} release {w['release']} (rollback is one reload)")
        if h["lock"]:
            lines.append(f"  lock: held by {h['lock']['holder']} since {h['lock']['since']}"
                         + (f" (stale: {h['lock']['stale_reason']})" if h["lock"]["stale"] else ""))
        for p in h.get("pending", []):
            lines.append(f"  interrupted deploy {p}: run `ferry deploy` or `ferry status` to repair")
        for fix in h.get("repaired", []):
            lines.append(f"  repaired: {fix}")
        for release, workers in (h.get("workers") or {}).items():
            states = ", ".join(f"{w['name']} {'running' if w['running'] else w['state']}" for w in workers)
            lines.append(f"  workers of {release}: {states}")
        for v in h.get("volumes", []):
            size = "not created" if v["size"] is None else f"{v['size']} bytes"
            lines.append(f"  volume {v['name']}: {v['host_path']} -> {v['path']} ({size})")
        for rel in h["releases"]:
            rc = rel.get("release_command")
            ran = f"  release command exit {rc['exit_code']} in {rc['duration']}s" if rc else ""
            lines.append(f"  {rel['time']}  {rel['id']:<24} {rel['kind']:<8} {rel['outcome']:<11} "
                         f"{rel['version']:<14} {rel['colour']:<5} {rel['who']}{ran}")
    return "\n".join(lines)


def _events(ctx: Context, cfg):
    """The deploy's events go to monitoring's metrics writer. Wired here, in the command line
    where the areas meet: the deploy library (release.py, runner.py) never imports monitoring.
    Without [monitoring] nothing listens, and monitoring's modules are not even imported."""
    if not cfg.monitoring.enabled:
        from ..fleet.events import no_events

        return no_events
    from ..monitoring.events import deploy_event_sink

    return deploy_event_sink(cfg, ctx.progress)


def register(main: click.Group) -> None:
    @command(main, "deploy")
    @click.argument("image")
    @click.option("--version", "version", default=None, help="Version label (default: git describe).")
    @click.option("--force", is_flag=True, help="Break a stale deploy lock.")
    def deploy_cmd(ctx: Context, image: str, version: str | None, force: bool) -> None:
        """Deploy IMAGE@DIGEST (already in the registry) to every host, blue/green.

        \b
        Example:
          ferry deploy 127.0.0.1:5000/hello@sha256:4f1c...
        """
        cfg = ctx.config()
        r = R.deploy(cfg, image, version, ctx.progress, force, events=_events(ctx, cfg))
        emit(ctx, r, _host_lines)

    @command(main, "release")
    @click.option("--version", "version", default=None, help="Version label (default: git describe).")
    @click.option("--force", is_flag=True, help="Break a stale deploy lock.")
    def release_cmd(ctx: Context, version: str | None, force: bool) -> None:
        """Build, push and deploy: what scripts/release runs.

        \b
        Example:
          ferry release --version 1.4.2 --json
        """
        from ..images.commands import build_and_push

        cfg = ctx.config()
        version = version or R.default_version(cfg)
        R.read_secrets(cfg)  # fail before building when a secret is missing
        built = build_and_push(cfg, ctx.progress, version=version)
        r = R.deploy(cfg, built["image"], version, ctx.progress, force, events=_events(ctx, cfg))
        r["build"] = built
        emit(ctx, r, _host_lines)

    @command(main, "rollback")
    @click.option("--to", "to", default=None, metavar="RELEASE", help="Release id or version to go back to.")
    @click.option("--force", is_flag=True, help="Break a stale deploy lock.")
    def rollback_cmd(ctx: Context, to: str | None, force: bool) -> None:
        """Back to the previous successful release (one reload when it is still warm).

        \b
        Examples:
          ferry rollback
          ferry rollback --to 20261126-101500-4f1c2ab
        """
        cfg = ctx.config()
        r = R.rollback(cfg, to, ctx.progress, force, events=_events(ctx, cfg))
        emit(ctx, r, _host_lines)

    @command(main, "status")
    def status_cmd(ctx: Context) -> None:
        """Per host: live colour, release, digest, health, warm colour, workers per release,
        volumes and their size, lock, last releases (with their release command's exit code)."""
        cfg = ctx.config()
        r = R.status(cfg, ctx.progress)
        emit(ctx, r, _status_text)
        if not r["ok"]:
            raise SystemExit(1)

    @main.group()
    def lock() -> None:
        """See or clear the deploy lock on the hosts."""

    @command(lock, "status")
    def lock_status(ctx: Context) -> None:
        """Who holds the lock, since when, and whether it is stale."""
        r = R.lock_status(ctx.config(), ctx.progress)
        emit(ctx, r, lambda r: "\n".join(f"{h['host']}: {h['text']}" for h in r["hosts"]))

    @command(lock, "release")
    @click.option("--force", is_flag=True, help="Also clear a lock whose holder looks alive.")
    def lock_release(ctx: Context, force: bool) -> None:
        """Clear a stale lock (or any lock with --force)."""
        r = R.lock_release(ctx.config(), force, ctx.progress)
        emit(ctx, r, lambda r: "\n".join(f"{h['host']}: {h['text']}" for h in r["hosts"]))

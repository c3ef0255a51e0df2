"""`ferry accessory up|down|reboot|status|logs|exec|backup|restore|images`."""

from __future__ import annotations

import sys

import click

from ..cli import Context, command, emit
from ..errors import FerryError


def _action_text(r: dict) -> str:
    head = f"{r['host']}: {r['container']} {r['action']}: " + (r["note"] or ("done" if r["changed"] else "nothing to do"))
    return "\n".join([head, *(f"  {s}" for s in r["steps"])])


def _status_text(r: dict) -> str:
    lines = []
    for a in r["accessories"]:
        mark = "ok" if a["healthy"] else "DOWN"
        lines.append(f"{a['host']}: {a['container']:<24} {a['state']:<10} {mark:<5} 127.0.0.1:{a['port']}  "
                     f"{a['digest'] or '-'}")
        lines.append(f"  volume {a['volume']}" + (f" (PostgreSQL {a['data_version']})" if a["data_version"] else ""))
        if a["backups"]:
            lines.append(f"  {a['backups']} backup(s), latest {a['latest_backup']}")
    return "\n".join(lines) or "no accessories in ferry.toml"


def register(main: click.Group) -> None:
    @main.group()
    def accessory() -> None:
        """Databases and caches beside the app: [accessories.NAME] in ferry.toml.

        \b
        Examples:
          ferry accessory images --push        # build PostgreSQL/Redis from Debian's packages
          ferry accessory up db                # start it (volume, password, health gate)
          ferry accessory status --json
          ferry accessory exec db psql -c 'select 1'
          ferry accessory backup db            # pg_dump -Fc, rotated (backup.keep)
          ferry accessory restore db latest    # or a file name from status
          ferry accessory reboot db            # a new image; the data stays
          ferry accessory down db              # stops it; the volume is kept
        """

    @command(accessory, "up")
    @click.argument("name")
    def up(ctx: Context, name: str) -> None:
        """Start NAME if it is not running (never restarts a running one)."""
        from . import runner

        emit(ctx, runner.up(ctx.config(), name, ctx.progress), _action_text)

    @command(accessory, "reboot")
    @click.argument("name")
    def reboot(ctx: Context, name: str) -> None:
        """Replace NAME's container (new image or settings); the data stays. A PostgreSQL major
        change is refused with the dump and restore steps."""
        from . import runner

        emit(ctx, runner.reboot(ctx.config(), name, ctx.progress), _action_text)

    @command(accessory, "down")
    @click.argument("name")
    def down(ctx: Context, name: str) -> None:
        """Stop and remove NAME's container; its volume and password are kept."""
        from . import runner

        emit(ctx, runner.down(ctx.config(), name, ctx.progress), _action_text)

    @command(accessory, "status")
    @click.argument("name", required=False)
    def status(ctx: Context, name: str | None) -> None:
        """State, health, image digest, data version and backups (exit 1 when one is down)."""
        from . import runner

        r = runner.status(ctx.config(), name, ctx.progress)
        emit(ctx, r, _status_text)
        if not r["ok"]:
            raise SystemExit(1)

    @command(accessory, "logs")
    @click.argument("name")
    @click.option("--tail", default=100, show_default=True, help="Lines from the end.")
    def logs(ctx: Context, name: str, tail: int) -> None:
        """The container's last log lines."""
        from . import runner

        out = runner.logs(ctx.config(), name, tail, ctx.progress)
        emit(ctx, {"logs": out}, out.rstrip("\n"))

    @command(accessory, "exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
    @click.option("-i", "--stdin", "pass_stdin", is_flag=True, help="Pass this command's stdin to it (read to the end first).")
    @click.argument("name")
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def exec_cmd(ctx: Context, pass_stdin: bool, name: str, args: tuple[str, ...]) -> None:
        """Run a command in NAME's container (default: psql or redis-cli, already connected).

        \b
        Example:
          ferry accessory exec db psql -c 'select count(*) from orders'
          echo 'SET k v' | ferry accessory exec -i cache redis-cli
        """
        from . import runner

        stdin = sys.stdin.read() if pass_stdin else None
        r = runner.exec_(ctx.config(), name, list(args), stdin, ctx.progress)
        emit(ctx, {"exit_code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr}, r.stdout.rstrip("\n"))
        if r.stderr and not ctx.json:
            click.echo(r.stderr.rstrip("\n"), err=True)
        if r.exit_code:
            raise SystemExit(r.exit_code)

    @command(accessory, "backup")
    @click.argument("name")
    def backup(ctx: Context, name: str) -> None:
        """pg_dump -Fc into <root>/<app>/backups/NAME/ (rotated; uploaded to backup.s3_bucket if set)."""
        from . import runner

        emit(ctx, runner.backup(ctx.config(), name, ctx.progress),
             lambda r: f"{r['file']} ({r['bytes']} bytes)" + (f" -> {r['s3']}" if r["s3"] else ""))

    @command(accessory, "restore")
    @click.argument("name")
    @click.argument("file")
    def restore(ctx: Context, name: str, file: str) -> None:
        """Load FILE (a name in the backups directory, a host path, or "latest") into the
        database: pg_restore --clean --if-exists, in one transaction."""
        from . import runner

        emit(ctx, runner.restore(ctx.config(), name, file, ctx.progress),
             lambda r: f"restored {r['restored']} into {r['database']}")

    @command(accessory, "images")
    @click.option("--push", is_flag=True, help="Push them (default registry: the local one; the stack's ECR "
                                               "when deploy.stack is set).")
    @click.option("--registry", default=None, help="Registry host[:port] (default: see --push).")
    @click.option("--prefix", default=None, help="Repository prefix: REGISTRY/PREFIX/postgres.")
    @click.option("--postgres", "versions", multiple=True, type=click.Choice(["15", "17", "18"]),
                  help="PostgreSQL majors to build (default: those ferry.toml uses, else 15).")
    @click.option("--exporter/--no-exporter", default=True, show_default=True, help="Also postgres_exporter.")
    @click.option("--refresh", is_flag=True, help="Resolve the packages again (Debian security updates).")
    def images_cmd(ctx: Context, push: bool, registry: str | None, prefix: str | None, versions: tuple[str, ...],
                   exporter: bool, refresh: bool) -> None:
        """Build the accessories' images from Debian's packages (reproducible, amd64).

        \b
        Example:
          ferry accessory images --push --json    # pinned references for accessories.NAME.image
        """
        from . import images
        from .runner import image_home

        cfg = None
        if not versions or push:
            try:
                cfg = ctx.config()
            except FerryError:  # images can be built without a ferry.toml
                cfg = None
        if not versions:
            used = sorted({a.version or images.DEFAULT_POSTGRES for a in (cfg.accessories.values() if cfg else [])
                           if a.kind == "postgres"})
            versions = tuple(used or [images.DEFAULT_POSTGRES])
        built = images.build(images.recipes_for(versions, exporter=exporter), refresh=refresh, progress=ctx.progress)
        out: dict = {"images": [{"name": b.recipe.name, "tag": b.recipe.tag, "version": b.version,
                                 "suite": b.recipe.suite, "digest": b.image.digest} for b in built]}
        if push:
            reg, pre = (image_home(cfg, ctx.progress) if cfg else (None, images.DEFAULT_PREFIX))
            registry = registry or reg or "127.0.0.1:5000"
            out["pushed"] = images.push(built, registry, prefix or pre, ctx.progress)

        def text(r: dict) -> str:
            if "pushed" in r:
                return "\n".join(f"{p['name']:<18} {p['reference']}" for p in r["pushed"])
            return "\n".join(f"{i['name']:<18} {i['tag']:<9} {i['version']:<10} {i['digest']}" for i in r["images"])

        emit(ctx, out, text)

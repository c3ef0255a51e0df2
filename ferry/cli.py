"""The command line: a thin shell over the library.

Parses arguments, loads ferry.toml, calls one library function, prints its result (text, or
one JSON document with ``--json``) and turns a ``FerryError`` into one line on stderr and a
non-zero exit; any other exception too (its type and message, exit 1; ``--debug`` shows the
traceback). Commands of each area live beside their code (``ferry/<area>/commands.py``)
and are registered here.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import click

from . import __version__
from .errors import FerryError, UnexpectedError
from .progress import Progress


@dataclass
class Context:
    config_path: str | None
    json: bool
    debug: bool
    progress: Progress

    def config(self):
        from .config import load

        return load(self.config_path)


def emit(ctx: Context, result: Any, text: Callable[[Any], str] | str | None = None) -> None:
    """Print a command's result: JSON on --json, else the human text."""
    if ctx.json:
        click.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
    elif text is not None:
        out = text(result) if callable(text) else text
        if out:
            click.echo(out)


def command(group: click.Group, name: str | None = None, **kw):
    """Register a command that takes --json/--debug like every ferry command and whose
    FerryErrors become one clear line and an honest exit code."""

    def wrap(fn):
        @group.command(name=name, **kw)
        @click.option("--json", "json_", is_flag=True, help="Print one JSON document on stdout.")
        @click.option("--debug", is_flag=True, help="Show tracebacks.")
        @click.pass_obj
        @functools.wraps(fn)
        def inner(obj: Context, json_: bool, debug: bool, *args, **kwargs):
            obj.json = obj.json or json_
            obj.debug = obj.debug or debug
            try:
                return fn(obj, *args, **kwargs)
            except FerryError as e:
                fail(obj, e)
            except KeyboardInterrupt:
                click.echo("ferry: interrupted", err=True)
                sys.exit(130)
            except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
                raise  # click's own: usage errors and exits are click's to print
            except Exception as e:  # noqa: BLE001 - a bug or an unforeseen failure: still one line
                fail(obj, UnexpectedError(e))

        return inner

    return wrap


def fail(ctx: Context, e: FerryError) -> None:
    if ctx.debug:
        traceback.print_exc()
    if ctx.json:
        # the error, its hint and its details (e.g. which host has which release): never "ok"
        click.echo(json.dumps({**e.to_json(), "ok": False}, indent=2, sort_keys=True, default=str))
    click.echo(f"ferry: error: {e}", err=True)
    sys.exit(e.exit_code)


# which module registers which top-level command: imported only when that command runs, so
# `ferry build` does not pay for the deploy's imports (start-up is most of a warm build's time)
COMMANDS = {
    "local": "ferry.local.commands",
    "build": "ferry.images.commands",
    "release": "ferry.deploy.commands", "deploy": "ferry.deploy.commands", "rollback": "ferry.deploy.commands",
    "status": "ferry.deploy.commands", "lock": "ferry.deploy.commands",
    "certs": "ferry.certs.commands",
    "monitoring": "ferry.monitoring.commands",
    "init": "ferry.init",
    "logs": "ferry.fleet.commands", "exec": "ferry.fleet.commands",
    "accessory": "ferry.accessories.commands",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str):
        if name not in self.commands and name in COMMANDS:
            import importlib

            importlib.import_module(COMMANDS[name]).register(self)
        return self.commands.get(name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", default=None, metavar="PATH",
              help="Config file (default: ./ferry.toml).", envvar="FERRY_CONFIG")
@click.option("--json", "json_", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="ferry")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, json_: bool, debug: bool) -> None:
    """ferry: build images without Docker, release them blue/green behind nginx.

    \b
    Examples:
      ferry init                     # a commented ferry.toml for the app here
      ferry local up                 # this machine becomes a deploy host
      ferry build --push             # build the app image and push it
      ferry release                  # build, push, deploy with zero downtime
      ferry rollback                 # back to the previous release
      ferry status --json
    """
    ctx.obj = Context(config_path=config_path, json=json_, debug=debug, progress=Progress())

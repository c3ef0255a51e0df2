"""`ferry logs` and `ferry exec`: the live app's logs and a command in its environment. Neither
takes the deploy lock and neither changes what serves traffic."""

from __future__ import annotations

import json
import sys

import click

from ..cli import Context, command
from . import operate as O


def register(main: click.Group) -> None:
    @command(main, "logs")
    @click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
    @click.option("--since", default=None, metavar="WHEN", help="Only lines since: 10m, 1h30m, 2026-12-03T10:00:00Z.")
    @click.option("--tail", type=int, default=None, metavar="N", help="Only the last N lines of each container.")
    @click.option("--process", default=O.WEB, show_default=True, metavar="NAME",
                  help="web (the live colour) or a [processes.NAME] worker.")
    @click.option("--host", default=None, metavar="HOST", help="One host (user@host:port or its name); default all.")
    def logs_cmd(ctx: Context, follow: bool, since: str | None, tail: int | None, process: str,
                 host: str | None) -> None:
        """Print the app's container logs, each line prefixed with its host and container.

        With --json: one JSON object a line, {host, container, stream, line}.

        \b
        Examples:
          ferry logs --since 10m
          ferry logs --follow --process worker --host web-1
        """
        cfg = ctx.config()

        def sink(line: O.LogLine) -> None:
            text = json.dumps(line.to_json(), sort_keys=True) if ctx.json else line.text()
            click.echo(text, err=not ctx.json and line.stream == "stderr")

        O.logs(cfg, sink, follow=follow, since=since, tail=tail, process=process, host=host, progress=ctx.progress)

    @command(main, "exec", context_settings={"ignore_unknown_options": True})
    @click.option("--host", default=None, metavar="HOST", help="The host (default: the first).")
    @click.option("-i", "--interactive", is_flag=True, help="Keep stdin open (a terminal too when there is one).")
    @click.option("--live", is_flag=True, help="Run inside the live container (docker exec), not a one-off one.")
    @click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
    def exec_cmd(ctx: Context, host: str | None, interactive: bool, live: bool, cmd: tuple[str, ...]) -> None:
        """Run CMD in a one-off container of the live release (its image, env, secrets, volumes,
        host network) and exit with CMD's exit code; --live runs it in the live container.

        \b
        Examples:
          ferry exec -- python3 manage.py createsuperuser
          ferry exec -i -- python3 manage.py shell
          ferry exec --live -- ps aux
        """
        cfg = ctx.config()
        tty = interactive and sys.stdin.isatty() and sys.stdout.isatty()
        if ctx.json:
            r = O.exec_(cfg, cmd, host=host, interactive=interactive, live=live,
                        stdin=sys.stdin if interactive else None, progress=ctx.progress)
            click.echo(json.dumps(r.to_json(), indent=2, sort_keys=True))
        else:
            r = O.exec_(cfg, cmd, host=host, interactive=interactive, live=live, out=sys.stdout, err=sys.stderr,
                        stdin=sys.stdin, tty=tty, progress=ctx.progress)
        if r.exit_code:
            sys.exit(r.exit_code)

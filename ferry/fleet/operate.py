"""Operating the live app: ``ferry logs`` and ``ferry exec``. Neither takes the deploy lock and
neither changes what serves traffic: they only read the host (nginx's upstream file, `docker
ps`) and run docker logs / a one-off container / docker exec beside the live release.

Which containers to read and what to run are pure (``log_containers``, ``live_container``);
the host commands come from ``argv.py``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Callable, Sequence

from .. import nginx
from ..config import Config
from ..deploy import docker as D
from ..deploy.host import LineSink
from ..errors import DeployError, HostError
from ..progress import NULL, Progress
from . import argv as A
from .connect import connect
from .hosts import HostTarget, resolve_hosts, select

WEB = "web"


# --- what to read (pure) -------------------------------------------------------------------------

def live_colour(cfg: Config, upstream_text: str | None) -> str | None:
    port = nginx.live_port(upstream_text)
    return next((c for c, p in cfg.deploy.colours.items() if p == port), None)


def parse_ps(stdout: str) -> list[dict]:
    rows = []
    for line in stdout.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def log_containers(rows: list[dict], app: str, colour: str | None, process: str = WEB) -> list[str]:
    """The containers ``ferry logs`` reads on one host: the live colour's (``web``), or every
    running container of a process (labelled ``dev.ferry.process``, or named
    ``<app>-<process>-<n>[-<colour>]``), by name."""
    if process == WEB:
        name = f"{app}-{colour}" if colour else None
        return [name] if name and any(r.get("Names") == name for r in rows) else []
    pattern = re.compile(rf"^{re.escape(app)}-{re.escape(process)}-\d+(-(blue|green))?$")
    out = []
    for r in rows:
        labels = D.labels_of(r)
        if r.get("State") != "running":
            continue
        if labels.get(f"{D.LABEL}.process") == process or pattern.match(r.get("Names", "")):
            out.append(r["Names"])
    return sorted(out)


@dataclass(frozen=True)
class LogLine:
    host: str
    container: str
    stream: str  # stdout | stderr (the container's own)
    line: str

    def to_json(self) -> dict:
        return {"host": self.host, "container": self.container, "stream": self.stream, "line": self.line}

    def text(self) -> str:
        return f"{self.host} {self.container} | {self.line}"


# --- ferry logs ------------------------------------------------------------------------------------

def logs(cfg: Config, sink: Callable[[LogLine], None], *, follow: bool = False, since: str | None = None,
         tail: int | None = None, process: str = WEB, host: str | None = None, progress: Progress = NULL) -> dict:
    """docker logs of the live colour (or ``process``'s containers) on every host (or ``host``),
    each line handed to ``sink`` as it comes, prefixed with its host and container. One thread
    per container; returns which containers were read on which host."""
    A.check_since(since)
    targets = select(resolve_hosts(cfg, progress), host)
    mu = threading.Lock()

    def emit(line: LogLine) -> None:
        with mu:
            sink(line)

    hosts, workers, errors, opened = [], [], [], []
    try:
        # every host's containers first: a host with nothing to read fails before any line
        plan = []
        for t in targets:
            h = connect(cfg, t, progress)
            opened.append(h)
            names = _containers_on(cfg, h, t, process)
            hosts.append({"host": str(t), "containers": names})
            plan += [(h, str(t), name) for name in names]
        for h, label, name in plan:
            th = threading.Thread(target=_read_logs, daemon=True, name=f"logs-{name}",
                                  args=(cfg, h, label, name, emit, errors, follow, since, tail))
            th.start()
            workers.append(th)
        for th in workers:
            while th.is_alive():
                th.join(0.2)  # in slices, so Ctrl-C reaches the main thread
    finally:
        for h in opened:
            h.close()
    if errors:
        raise errors[0]
    return {"hosts": hosts}


def _containers_on(cfg: Config, h, t: HostTarget, process: str) -> list[str]:
    r = h.run(D.ps_argv(cfg))
    if not r.ok:
        raise HostError(f"{h.name}: cannot list containers: {(r.stderr or r.stdout).strip()[-300:]}",
                        "is Docker running on the host?")
    colour = live_colour(cfg, h.read(nginx.upstream_path(cfg)))
    names = log_containers(parse_ps(r.stdout), cfg.app.name, colour, process)
    if not names:
        if process == WEB:
            raise DeployError(f"{t}: nothing is live for {cfg.app.name}", "deploy first (`ferry release`)")
        raise DeployError(f"{t}: no {process} container of {cfg.app.name} runs",
                          "check --process against [processes] in ferry.toml, or deploy first (`ferry release`)")
    return names


def _read_logs(cfg, h, host: str, name: str, emit, errors: list, follow: bool, since, tail) -> None:
    out = LineSink(lambda line: emit(LogLine(host, name, "stdout", line)), verbatim=True)
    err = LineSink(lambda line: emit(LogLine(host, name, "stderr", line)), verbatim=True)
    try:
        code = h.attach(A.logs_argv(cfg, name, follow=follow, since=since, tail=tail), out, err)
        out.close()
        err.close()
        if code != 0:
            errors.append(HostError(f"{host}: docker logs {name} exited {code}", "is the container still there?"))
    except HostError as e:
        errors.append(e)


# --- ferry exec ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExecResult:
    host: str
    container: str  # the one-off container, or the live one (--live)
    image: str
    release: str
    live: bool
    exit_code: int
    stdout: str | None = None  # captured only for --json
    stderr: str | None = None

    def to_json(self) -> dict:
        return {"host": self.host, "container": self.container, "image": self.image, "release": self.release,
                "live": self.live, "exit_code": self.exit_code, "stdout": self.stdout, "stderr": self.stderr}


def live_container(cfg: Config, inspect_stdout: str, name: str) -> dict[str, str]:
    """The image and release labels of the live container (argv.inspect_image_argv's line)."""
    image, release, version, digest = (inspect_stdout.strip().split("|") + ["", "", "", ""])[:4]
    if "@sha256:" not in image:
        raise DeployError(f"{name} runs {image!r}, not an image pinned by digest", "release again with ferry")
    return {"image": image, "release": release, "version": version, "digest": digest}


def exec_(cfg: Config, command: Sequence[str], *, host: str | None = None, interactive: bool = False,
          live: bool = False, out: IO[str] | None = None, err: IO[str] | None = None, stdin: IO[str] | None = None,
          tty: bool = False, progress: Progress = NULL) -> ExecResult:
    """``command`` in a one-off container of the live release on one host (the first, or
    ``host``), or inside the live container (``live``). Output goes to ``out``/``err`` as it
    comes; without them it is captured into the result. The exit code is the command's."""
    if not command:
        raise DeployError("ferry exec: no command", "e.g. ferry exec -- python3 manage.py shell")
    target = select(resolve_hosts(cfg, progress), host)[0]
    with connect(cfg, target, progress) as h:
        colour = live_colour(cfg, h.read(nginx.upstream_path(cfg)))
        name = D.container_name(cfg, colour) if colour else None
        r = h.run(A.inspect_image_argv(cfg, name)) if name else None
        if r is None or not r.ok:
            raise DeployError(f"{target}: nothing is live for {cfg.app.name}", "deploy first (`ferry release`)")
        rel = live_container(cfg, r.stdout, name)
        if live:
            container, argv = name, A.exec_live_argv(cfg, name, command, interactive=interactive, tty=tty)
        else:
            container = A.exec_name(cfg, f"{int(time.time())}-{os.getpid()}")
            argv = A.exec_run_argv(cfg, rel["image"], command, name=container, release=rel,
                                   interactive=interactive, tty=tty)
        progress.step(f"{'docker exec in ' + name if live else 'one-off container of release ' + rel['release']}: "
                      f"{' '.join(command)}", host=str(target))
        if out is None:
            res = h.run(argv, stdin=stdin.read() if stdin is not None else None)
            return ExecResult(str(target), container, rel["image"], rel["release"], live, res.exit_code,
                              res.stdout, res.stderr)
        code = h.attach(argv, out, err or sys.stderr, stdin=stdin if interactive else None, pty=tty)
        return ExecResult(str(target), container, rel["image"], rel["release"], live, code)

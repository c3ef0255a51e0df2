#!/usr/bin/env python3
"""Release time against the number of hosts: 1, 2 and 4 independent hosts on this machine.

Each host is a network and mount namespace (``unshare --net --mount``) with its own loopback,
its own Docker engine, nginx, ``/var/lib/ferry-local`` and ``/opt/ferry`` (bind mounts over a
directory under /var/lib/ferry-hosts), started from the local target's own component
descriptions (``ferry/local/components.py``). Its sshd listens in the root namespace on
127.0.0.1:3860N and runs every command inside the host's namespaces (``ForceCommand`` →
``nsenter``), so ferry reaches it over SSH like any host. The host's 127.0.0.1:5000 is the
local target's registry, through two loopback forwarders (a TCP listener in the namespace, a
unix socket, the registry's TCP port in the root namespace).

For each count of hosts, and each ``deploy.parallel`` (1 and all of them), ``ferry release`` of
a one-line change of examples/hello (build + push + the swap on every host), timed as a whole
command, median of --reps. Nothing is timed in the tests; this is a benchmark.

Usage: .venv/bin/python benchmarks/hosts.py [--hosts 1,2,4] [--reps 3] [--write]
(root, the local target up: `ferry local up`). Writes benchmarks/results/hosts.csv and
release-hosts.png, and with --write the hosts section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ferry.config import LocalConfig  # noqa: E402
from ferry.local import components as C  # noqa: E402
from ferry.local.appconfig import app_toml  # noqa: E402
from ferry.local.target import healthy  # noqa: E402

BASE = Path("/var/lib/ferry-hosts")
REGISTRY_SOCK = BASE / "registry.sock"
LOCAL = Path("/var/lib/ferry-local")
SSH_PORT0 = 38600  # host N's sshd: 127.0.0.1:38600+N (root namespace)
APP = "bench-hosts"
HTTP, BLUE, GREEN = 18920, 18923, 18924  # inside each host's own loopback
FERRY = [sys.executable, "-m", "ferry"]
RESULTS = ROOT / "benchmarks" / "results"


# --- loopback forwarders (asyncio, one thread) ---------------------------------------------

async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    try:
        while data := await r.read(1 << 16):
            w.write(data)
            await w.drain()
        if w.can_write_eof():
            w.write_eof()
    except (ConnectionError, OSError):
        pass


def _forwarder(listen: tuple, connect: tuple, ready: threading.Event) -> None:
    """Accept on ``listen`` ("tcp", host, port) | ("unix", path), connect each to ``connect``."""

    async def opener():
        if connect[0] == "tcp":
            return await asyncio.open_connection(connect[1], connect[2])
        return await asyncio.open_unix_connection(connect[1])

    async def handle(r, w):
        try:
            r2, w2 = await opener()
        except OSError:
            w.close()
            return
        await asyncio.gather(_pipe(r, w2), _pipe(r2, w))
        for x in (w, w2):
            x.close()

    async def serve():
        if listen[0] == "tcp":
            server = await asyncio.start_server(handle, listen[1], listen[2], reuse_address=True)
        else:
            Path(listen[1]).unlink(missing_ok=True)
            server = await asyncio.start_unix_server(handle, listen[1])
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def forward(listen: tuple, connect: tuple) -> None:
    ready = threading.Event()
    threading.Thread(target=_forwarder, args=(listen, connect, ready), daemon=True).start()
    if not ready.wait(10):
        raise SystemExit(f"forwarder {listen} -> {connect} did not start")


# --- one host, inside its namespaces (python hosts.py _host N) ------------------------------

def host_main(n: int) -> None:
    d = BASE / f"h{n}"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["mount", "--bind", str(d / "state"), str(LOCAL)], check=True)
    subprocess.run(["mount", "--bind", str(d / "opt"), "/opt/ferry"], check=True)
    forward(("tcp", "127.0.0.1", 5000), ("unix", str(REGISTRY_SOCK)))
    p = C.Paths(LOCAL)
    (p.logs).mkdir(parents=True, exist_ok=True)
    procs = []
    for c in (C.dockerd(p), C.nginx(p, LocalConfig(), "/opt/ferry")):
        for path, content in c.files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(content)
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (p.root / "nginx" / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        for stale in c.stale_files:
            Path(stale).unlink(missing_ok=True)
        log = open(p.logs / f"{c.name}.log", "ab")
        procs.append(subprocess.Popen(c.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + c.start_timeout
        while not healthy(c.check):
            if time.monotonic() > deadline or procs[-1].poll() is not None:
                raise SystemExit(f"host {n}: {c.name} did not start (see {d / 'state' / 'logs'})")
            time.sleep(0.1)
    remove_containers(p)  # an earlier run stopped uncleanly: its /opt/ferry is gone
    (d / "pid").write_text(str(os.getpid()))
    while not stop.wait(1):
        pass
    remove_containers(p)
    for proc in reversed(procs):
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def remove_containers(p: C.Paths) -> None:
    docker = ["docker", "-H", f"unix://{p.docker_sock}"]
    ids = subprocess.run([*docker, "ps", "-aq"], capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run([*docker, "rm", "-f", *ids], capture_output=True)


# --- the harness (root namespace) -----------------------------------------------------------

class Hosts:
    """Start ``count`` hosts; stop them (containers, daemons, namespaces) on exit."""

    def __init__(self, count: int):
        self.count = count
        self.keepers: list[subprocess.Popen] = []
        self.sshds: list[subprocess.Popen] = []

    def __enter__(self) -> "Hosts":
        BASE.mkdir(exist_ok=True)
        forward(("unix", str(REGISTRY_SOCK)), ("tcp", "127.0.0.1", 5000))
        try:
            for n in range(1, self.count + 1):
                self._start(n)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self, n: int) -> None:
        d = BASE / f"h{n}"
        shutil.rmtree(d / "opt", ignore_errors=True)
        for sub in ("state/ssh", "opt"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "pid").unlink(missing_ok=True)
        log = open(d / "host.log", "ab")
        self.keepers.append(subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "--fork", "--",
             sys.executable, __file__, "_host", str(n)], stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 90
        while not (d / "pid").exists():
            if time.monotonic() > deadline or self.keepers[-1].poll() is not None:
                raise SystemExit(f"host {n} did not start: {(d / 'host.log').read_text()[-2000:]}")
            time.sleep(0.2)
        pid = (d / "pid").read_text().strip()
        ssh = d / "state" / "ssh"
        if not (ssh / "host_ed25519").exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "host_ed25519")], check=True)
        shutil.copy(LOCAL / "ssh" / "authorized_keys", ssh / "authorized_keys")
        enter = d / "enter"
        # ForceCommand replaces subsystems too: sftp (ferry's file writes) is the request for
        # sshd's internal-sftp, served by sftp-server inside the host's namespaces instead
        enter.write_text(f'#!/bin/sh\nns="nsenter -t {pid} -m -n --"\n'
                         'if [ "$SSH_ORIGINAL_COMMAND" = internal-sftp ]; then exec $ns /usr/lib/openssh/sftp-server; fi\n'
                         'exec $ns /bin/bash -c "$SSH_ORIGINAL_COMMAND"\n')
        enter.chmod(0o755)
        c = C.sshd(C.Paths(d / "state"), LocalConfig(ssh_port=SSH_PORT0 + n))
        self.sshds.append(subprocess.Popen([*c.argv, "-o", f"ForceCommand={enter}"], stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 10
        while not healthy(c.check):
            if time.monotonic() > deadline:
                raise SystemExit(f"host {n}: sshd did not start: {(d / 'host.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def __exit__(self, *_exc) -> None:
        for p in self.sshds:
            p.terminate()
        for n in range(1, len(self.keepers) + 1):
            pid = BASE / f"h{n}" / "pid"
            try:  # the host process inside the namespaces: it stops its containers and daemons
                os.kill(int(pid.read_text()), signal.SIGTERM)
            except (OSError, ValueError):
                self.keepers[n - 1].terminate()
        for p in [*self.sshds, *self.keepers]:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        for n in range(1, self.count + 1):
            shutil.rmtree(BASE / f"h{n}" / "opt", ignore_errors=True)


def config(path: Path, source: Path, hosts: int, parallel: int) -> None:
    text = app_toml(app=APP, source=source, http_port=HTTP, blue=BLUE, green=GREEN,
                    repository="127.0.0.1:5000/bench/hosts", drain_timeout="30s",
                    health='path = "/healthz", interval = "200ms", timeout = "60s", healthy_after = 2',
                    deploy_extra=f"parallel = {parallel}\n")
    targets = ", ".join(f'"root@127.0.0.1:{SSH_PORT0 + n}"' for n in range(1, hosts + 1))
    path.write_text(re.sub(r"^hosts = \[.*\]$", f"hosts = [{targets}]", text, count=1, flags=re.M))


def release(cfg: Path) -> tuple[float, dict]:
    t = time.monotonic()
    r = subprocess.run([*FERRY, "-c", str(cfg), "release", "--json"], capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - t
    if r.returncode != 0:
        raise SystemExit(f"ferry release failed:\n{r.stderr[-3000:]}")
    return wall, json.loads(r.stdout)


def edit(source: Path, n: int) -> None:
    f = source / "hello" / "__init__.py"
    f.write_text(re.sub(r'GREETING = ".*"', f'GREETING = "hello from ferry, hosts change {n}"', f.read_text()))


def measure(counts: list[int], reps: int, work: Path) -> list[dict]:
    source = work / "hello"
    shutil.copytree(ROOT / "examples" / "hello", source, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = work / "ferry.toml"
    rows, change = [], 0
    with Hosts(max(counts)):
        config(cfg, source, max(counts), max(counts))
        print(f"two releases to {max(counts)} hosts first (the pulls of the base and the dependencies, "
              "both colours started once)", file=sys.stderr)
        for _ in range(2):
            change += 1
            edit(source, change)
            release(cfg)
        for hosts in counts:
            for parallel in sorted({1, hosts}):
                config(cfg, source, hosts, parallel)
                for rep in range(reps):
                    change += 1
                    edit(source, change)
                    wall, out = release(cfg)
                    rows.append({"hosts": hosts, "parallel": parallel, "rep": rep + 1, "seconds": round(wall, 3)})
                    print(f"hosts={hosts} parallel={parallel} rep={rep + 1}: {wall:.2f} s", file=sys.stderr)
    return rows


def medians(rows: list[dict]) -> dict[tuple[int, int], float]:
    keys = sorted({(r["hosts"], r["parallel"]) for r in rows})
    return {k: statistics.median(r["seconds"] for r in rows if (r["hosts"], r["parallel"]) == k) for k in keys}


def plot(path: Path, med: dict, caption: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (make bench installs it): no plot", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(7, 4.6))
    counts = sorted({h for h, _ in med})
    serial = [(h, med[(h, 1)]) for h in counts if (h, 1) in med]
    together = [(h, med[(h, h)]) for h in counts if (h, h) in med]
    ax.plot([h for h, _ in serial], [s for _, s in serial], "o-", label="deploy.parallel = 1 (one host at a time)")
    ax.plot([h for h, _ in together], [s for _, s in together], "^--", label="deploy.parallel = hosts (all at once)")
    ax.set_xticks(counts)
    ax.set_xlabel("hosts")
    ax.set_ylabel("ferry release, one-line change (s, median)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(caption, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_section(med: dict, reps: int, args_line: str, plotted: bool) -> None:
    path = ROOT / "BENCHMARKS.md"
    counts = sorted({h for h, _ in med})
    lines = ["<!-- hosts:begin (written by benchmarks/hosts.py) -->", "### Release time against hosts", "",
             f"Command: `{args_line}`  ",
             f"Measured {time.strftime('%Y-%m-%d')} on this machine ({os.cpu_count()} cores, {platform.machine()}): "
             "each host a network and mount namespace with its own Docker engine, nginx and "
             "/opt/ferry, reached over its own sshd; `ferry release` of a one-line change of "
             f"examples/hello as a whole command, median of {reps}, no load.", "",
             "| hosts | deploy.parallel = 1 | deploy.parallel = hosts |", "|---:|---:|---:|"]
    for h in counts:
        lines.append(f"| {h} | {med[(h, 1)]:.2f} s | {med[(h, h)]:.2f} s |")
    lines.append("")
    top = counts[-1]
    if top > 1 and (1, 1) in med:
        step = (med[(top, 1)] - med[(1, 1)]) / (top - 1)
        lines += [f"- One host at a time, each host adds about {step:.2f} s: its swap (pull of the new layer, "
                  "start, health gate, reload, verify, drain), while the build and push happen once.",
                  f"- All at once, {top} hosts take {med[(top, top)]:.2f} s, {med[(top, top)] / med[(1, 1)]:.1f}x one "
                  f"host's: the hosts share this machine's {os.cpu_count()} cores (each one's gunicorn boot, "
                  "Docker engine and nginx reload), so the curve rises where real hosts, each with its own "
                  "CPUs, would stay near one host's time plus the SSH connections.", ""]
    if plotted:
        lines += ["![release time against hosts](benchmarks/results/release-hosts.png)", ""]
    lines += ["Data: benchmarks/results/hosts.csv.", "<!-- hosts:end -->"]
    block = "\n".join(lines)
    text = path.read_text()
    if "<!-- hosts:begin" in text:
        text = re.sub(r"<!-- hosts:begin.*?<!-- hosts:end -->", lambda _: block, text, flags=re.S)
    else:
        text = text.replace("### Warm rollback:", block + "\n\n### Warm rollback:", 1)
    path.write_text(text)


def main() -> None:
    import logging

    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # connections still open at exit
    if len(sys.argv) == 3 and sys.argv[1] == "_host":
        host_main(int(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="1,2,4", help="host counts, comma-separated")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("benchmarks/hosts.py needs root (unshare --net --mount, mount --bind, sshd)")
    if not healthy(C.Check("tcp", "127.0.0.1:5000")) or not (LOCAL / "ssh" / "authorized_keys").exists():
        raise SystemExit("the local target is not up: run `.venv/bin/ferry local up` first")
    counts = sorted({int(x) for x in a.hosts.split(",")})
    with tempfile.TemporaryDirectory(prefix="ferry-hosts-") as tmp:
        rows = measure(counts, a.reps, Path(tmp))
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "hosts.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["hosts", "parallel", "rep", "seconds"])
        w.writeheader()
        w.writerows(rows)
    med = medians(rows)
    args_line = f".venv/bin/python benchmarks/hosts.py --hosts {a.hosts} --reps {a.reps} --write"
    caption = (f"{args_line}\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores {platform.machine()}, "
               "hosts = network namespaces on one machine")
    plotted = plot(RESULTS / "release-hosts.png", med, caption)
    print(json.dumps({"rows": rows, "medians": {f"{h} hosts, parallel {p}": s for (h, p), s in med.items()}}, indent=2))
    if a.write:
        write_section(med, a.reps, args_line, plotted)


if __name__ == "__main__":
    main()

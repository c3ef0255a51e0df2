#!/usr/bin/env python3
"""Warm rollback as a whole command, on the local target: the median of N `ferry rollback`s.

Releases examples/hello twice (two versions, so both colours run, the previous one warm), then
rolls back N times: each rollback goes to the other colour's release, which is still warm
(the first is a plain `ferry rollback`, the next alternate with `--to VERSION`, the same warm
path). Each is timed as a user runs it: a new `python -m ferry` process, Python's start and
imports included. With --load, a bounded hey load (loopback) runs through every rollback and
the failed requests are counted. With --compare DIR (another ferry checkout, e.g. `git archive
main ferry | tar -x -C DIR`), the rollbacks alternate between that tree and this one, so both
see the same machine load (it is shared), and each gets its own medians.

Prints one JSON document: wall times, "traffic moved" (the host's swap_seconds), their
medians, the machine's load average before and after.
Usage: .venv/bin/python benchmarks/rollback.py [--reps 7] [--load] [--keep] [--compare DIR]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ferry.loadgen import Load  # noqa: E402
from ferry.local.appconfig import app_toml  # noqa: E402

FERRY = [sys.executable, "-m", "ferry"]
APP = "rollback-bench"
HTTP, BLUE, GREEN = 38700, 38703, 38704
DOCKER = ["/usr/bin/docker", "-H", "unix:///var/lib/ferry-local/docker.sock"]
NGINX_CONF = "/var/lib/ferry-local/nginx/nginx.conf"


def ferry(cfg: Path, *args: str, tree: Path = ROOT) -> dict:
    # cwd: not a ferry checkout, as `python -m` puts it before PYTHONPATH
    r = subprocess.run([*FERRY, "-c", str(cfg), *args, "--json"], capture_output=True, text=True, timeout=900,
                       cwd=cfg.parent, env={**os.environ, "PYTHONPATH": str(tree)})
    if r.returncode != 0:
        raise SystemExit(f"ferry {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout)


def edit(source: Path, n: int) -> None:
    f = source / "hello" / "__init__.py"
    f.write_text(re.sub(r'GREETING = ".*"', f'GREETING = "hello from ferry, rollback bench {n}"', f.read_text()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--load", action="store_true", help="hey through nginx during each rollback")
    ap.add_argument("--keep", action="store_true", help="leave the app deployed (for profiling by hand)")
    ap.add_argument("--compare", type=Path, help="another ferry tree: its rollbacks alternate with this tree's")
    args = ap.parse_args()
    trees = [ROOT] + ([args.compare.resolve()] if args.compare else [])
    for tree in trees:
        compileall.compile_dir(str(tree / "ferry"), quiet=1)  # as a wheel install has it
    tmp = Path(tempfile.mkdtemp(prefix="ferry-bench-rollback-"))
    source = tmp / "hello"
    shutil.copytree(ROOT / "examples/hello", source, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = tmp / "ferry.toml"
    cfg.write_text(app_toml(app=APP, source=source, http_port=HTTP, blue=BLUE, green=GREEN,
                            repository=f"127.0.0.1:5000/bench/{APP}", drain_timeout="30s",
                            health='path = "/healthz", interval = "200ms", timeout = "60s", healthy_after = 2'))
    url = f"http://127.0.0.1:{HTTP}/"
    runs: dict[Path, dict] = {t: {"wall_s": [], "traffic_moved_s": [], "requests": 0, "failed": 0} for t in trees}
    load_before = os.getloadavg()
    try:
        for n in (0, 1):
            edit(source, n)
            ferry(cfg, "release", "--version", f"v{n}")
        for i in range(args.reps * len(trees)):
            tree = trees[i % len(trees)]
            argv = ["rollback"] if i == 0 else ["rollback", "--to", f"v{i % 2}"]
            lo = Load(url, concurrency=16, max_seconds=60, qps=10) if args.load else None
            t0 = time.perf_counter()
            try:
                r = ferry(cfg, *argv, tree=tree)
            finally:
                wall = time.perf_counter() - t0
                hey = lo.stop() if lo else None
            h = r["hosts"][0]
            if not h.get("warm"):
                raise SystemExit(f"rollback {i + 1} was not warm: {h}")
            run = runs[tree]
            run["wall_s"].append(round(wall, 3))
            run["traffic_moved_s"].append(h.get("swap_seconds"))
            if hey:
                run["failed"] += hey["failed"]
                run["requests"] += hey["total"]
            print(f"  rollback {i + 1} ({tree}): {wall:.3f} s, traffic moved after {h.get('swap_seconds')} s",
                  file=sys.stderr)
    finally:
        if not args.keep:
            subprocess.run([*DOCKER, "rm", "-f", f"{APP}-blue", f"{APP}-green"], capture_output=True)
            shutil.rmtree(f"/opt/ferry/{APP}", ignore_errors=True)
            subprocess.run(["nginx", "-c", NGINX_CONF, "-s", "reload"], capture_output=True)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"config kept: {cfg}", file=sys.stderr)
    out: dict = {"reps": args.reps, "load": args.load, "loadavg_before": [round(x, 2) for x in load_before],
                 "loadavg_after": [round(x, 2) for x in os.getloadavg()], "trees": {}}
    for tree, run in runs.items():
        run["median_wall_s"] = statistics.median(run["wall_s"])
        run["median_traffic_moved_s"] = statistics.median(m for m in run["traffic_moved_s"] if m is not None)
        if not args.load:
            del run["requests"], run["failed"]
        out["trees"][str(tree)] = run
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

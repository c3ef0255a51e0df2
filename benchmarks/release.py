#!/usr/bin/env python3
"""Release benchmark on the local target: ferry's blue/green against a naive redeploy.

In one run, on the sample service behind nginx, with a bounded load (hey, 16 connections,
loopback only) running through each operation:

- steady state (no operation): latency p50/p99 as the reference;
- `ferry release` of a one-line source change (build + push + gated swap);
- `ferry rollback` while the previous colour is warm (one reload);
- `ferry rollback --to` an older release that is not warm (a gated swap, no build);
- the naive way: `docker stop` + `docker run` of the same image on the port nginx points at.

Prints a JSON document and, with --write, replaces the release section of BENCHMARKS.md.
Usage: .venv/bin/python benchmarks/release.py [--write]
"""

from __future__ import annotations

import argparse
import compileall
import json
import re
import shutil
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
APP = "bench-release"
HTTP, BLUE, GREEN, NAIVE_HTTP, NAIVE_PORT = 18900, 18903, 18904, 18905, 18906
DOCKER = ["/usr/bin/docker", "-H", "unix:///var/lib/ferry-local/docker.sock"]
NGINX_CONF = "/var/lib/ferry-local/nginx/nginx.conf"


def config(path: Path, source: Path) -> None:
    path.write_text(app_toml(app=APP, source=source, http_port=HTTP, blue=BLUE, green=GREEN,
                             repository="127.0.0.1:5000/bench/hello", drain_timeout="30s",
                             health='path = "/healthz", interval = "200ms", timeout = "60s", healthy_after = 2'))


def ferry(cfg: Path, *args: str) -> dict:
    r = subprocess.run([*FERRY, "-c", str(cfg), *args, "--json"], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"ferry {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout)


def edit(source: Path, n: int) -> None:
    f = source / "hello" / "__init__.py"
    f.write_text(re.sub(r'GREETING = ".*"', f'GREETING = "hello from ferry, change {n}"', f.read_text()))


def under_load(url: str, op) -> tuple[float, dict]:
    lo = Load(url, concurrency=16, max_seconds=300, qps=10)
    t0 = time.perf_counter()
    try:
        value = op()
    finally:
        elapsed = time.perf_counter() - t0
        result = lo.stop()
    result["value"] = value
    return elapsed, result


def steady(url: str, seconds: float = 8.0) -> dict:
    return under_load(url, lambda: time.sleep(seconds))[1]


def naive(image: str) -> tuple[float, dict]:
    """nginx → one fixed port; redeploy = docker stop + docker run of the same image."""
    site = Path(f"/opt/ferry/{APP}-naive/nginx/site.conf")
    site.parent.mkdir(parents=True, exist_ok=True)
    site.write_text(f"server {{ listen 127.0.0.1:{NAIVE_HTTP}; location / {{ proxy_pass http://127.0.0.1:{NAIVE_PORT}; }} }}\n")
    subprocess.run(["nginx", "-c", NGINX_CONF, "-s", "reload"], check=True)
    name = f"{APP}-naive"
    run = [*DOCKER, "run", "-d", "--name", name, "--network", "host", "-e", f"PORT={NAIVE_PORT}", image]
    subprocess.run([*DOCKER, "rm", "-f", name], capture_output=True)
    subprocess.run(run, check=True, capture_output=True)
    wait_http(f"http://127.0.0.1:{NAIVE_HTTP}/healthz")

    def redeploy():
        subprocess.run([*DOCKER, "stop", name], check=True, capture_output=True)
        subprocess.run([*DOCKER, "rm", name], check=True, capture_output=True)
        subprocess.run(run, check=True, capture_output=True)
        wait_http(f"http://127.0.0.1:{NAIVE_HTTP}/healthz")

    try:
        return under_load(f"http://127.0.0.1:{NAIVE_HTTP}/", redeploy)
    finally:
        subprocess.run([*DOCKER, "rm", "-f", name], capture_output=True)
        shutil.rmtree(site.parent.parent, ignore_errors=True)
        subprocess.run(["nginx", "-c", NGINX_CONF, "-s", "reload"], capture_output=True)


def wait_http(url: str, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} never answered")


RUNS, SWAPS = 5, 5


def swap_series(cfg: Path, url: str, images: list[str]) -> list[dict]:
    """p99 during swaps against the p99 just before, RUNS times: each run is a steady window,
    then SWAPS `ferry deploy`s of prebuilt images in turn (no build on this machine: what a host
    sees when CI builds elsewhere) under one load window."""
    out = []
    for run in range(RUNS):
        s = steady(url, 4.0)
        t0 = time.perf_counter()

        def swaps():
            for i in range(SWAPS):
                ferry(cfg, "deploy", images[i % 2], "--version", f"s{run}-{i}")

        _, r = under_load(url, swaps)
        out.append({"run": run + 1, "swaps": SWAPS, "seconds": round(time.perf_counter() - t0, 2),
                    "requests": r["total"], "failed": r["failed"],
                    "steady_p99_ms": None if s["p99"] is None else round(s["p99"] * 1000, 1),
                    "p99_ms": None if r["p99"] is None else round(r["p99"] * 1000, 1),
                    "ratio": round(r["p99"] / s["p99"], 2) if r["p99"] and s["p99"] else None})
        print(f"  swap run {run + 1}: {out[-1]}", file=sys.stderr)
    return out


def row(name: str, seconds: float | None, r: dict) -> dict:
    return {"operation": name, "seconds": None if seconds is None else round(seconds, 2),
            "requests": r["total"], "failed": r["failed"],
            "p50_ms": None if r["p50"] is None else round(r["p50"] * 1000, 1),
            "p99_ms": None if r["p99"] is None else round(r["p99"] * 1000, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = ap.parse_args()
    # ferry as a user has it installed: a wheel install writes its bytecode, an editable one
    # (this checkout) does not, and PYTHONDONTWRITEBYTECODE would make every run compile it.
    compileall.compile_dir(str(ROOT / "ferry"), quiet=1)
    tmp = Path(tempfile.mkdtemp(prefix="ferry-bench-release-"))
    source = tmp / "hello"
    shutil.copytree(ROOT / "examples/hello", source, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = tmp / "ferry.toml"
    config(cfg, source)
    url = f"http://127.0.0.1:{HTTP}/"
    try:
        edit(source, 0)
        first = ferry(cfg, "release", "--version", "b0")
        edit(source, 1)
        ferry(cfg, "release", "--version", "b1")
        rows = [row("steady state (no operation)", None, steady(url))]
        edit(source, 2)
        t, r = under_load(url, lambda: ferry(cfg, "release", "--version", "b2"))
        second = r["value"]
        rows.append(row("ferry release, one-line change (build+push+swap)", t, r))
        t, r = under_load(url, lambda: ferry(cfg, "rollback"))
        rows.append(row("ferry rollback, previous colour warm", t, r))
        rows[-1]["traffic_moved_s"] = r["value"]["hosts"][0].get("swap_seconds")
        # --to takes a release id or a version
        t, r = under_load(url, lambda: ferry(cfg, "rollback", "--to", "b0"))
        rows.append(row("ferry rollback --to an older release, not warm (gated swap)", t, r))
        t, r = naive(first["image"])
        rows.append(row("naive: docker stop + docker run, same image", t, r))
        swaps = swap_series(cfg, url, [first["image"], second["image"]])
    finally:
        subprocess.run([*DOCKER, "rm", "-f", f"{APP}-blue", f"{APP}-green"], capture_output=True)
        shutil.rmtree(f"/opt/ferry/{APP}", ignore_errors=True)
        subprocess.run(["nginx", "-c", NGINX_CONF, "-s", "reload"], capture_output=True)
    print(json.dumps({"rows": rows, "swaps": swaps}, indent=2))
    if args.write:
        write_section(rows, swaps)


def write_section(rows: list[dict], swaps: list[dict]) -> None:
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    steady_p99 = rows[0]["p99_ms"]
    lines = ["<!-- release:begin -->", "## Release: blue/green vs a naive redeploy",
             "", "Command: `make setup && .venv/bin/ferry local up && .venv/bin/python benchmarks/release.py --write`",
             f"Measured {time.strftime('%Y-%m-%d')} on the local target (2 cores), hey: 16 connections x 10 req/s "
             "through nginx on loopback during each operation.", "",
             "Wall time is the whole command (Python start, SSH connection, lock, swap, drain, unlock); "
             "\"traffic moved\" counts from the host's SSH connection to the verified swap. The local "
             "target's sshd sets SHLVL=1, so root's ~/.bashrc (pyenv init on this machine, ~140 ms) is not "
             "run for every command, as on a deploy host.", "",
             "| operation | wall time | requests | failed | p50 | p99 | p99 / steady |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['p99_ms'] / steady_p99:.1f}x" if r["p99_ms"] and steady_p99 else "-"
        secs = "-" if r["seconds"] is None else f"{r['seconds']:.2f} s"
        if r.get("traffic_moved_s") is not None:
            secs += f" (traffic moved after {r['traffic_moved_s']:.2f} s)"
        lines.append(f"| {r['operation']} | {secs} | {r['requests']} | {r['failed']} | {r['p50_ms']} ms | "
                     f"{r['p99_ms']} ms | {ratio} |")
    lines += ["", f"Latency during swaps, {RUNS} runs of {SWAPS} (`ferry deploy` of prebuilt images in turn, "
              "so the host does only what it does when CI builds elsewhere; each run's steady p99 measured just before):",
              "", "| run | swaps | wall time | requests | failed | steady p99 | p99 during swaps | ratio |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in swaps:
        lines.append(f"| {s['run']} | {s['swaps']} | {s['seconds']:.1f} s | {s['requests']} | {s['failed']} | "
                     f"{s['steady_p99_ms']} ms | {s['p99_ms']} ms | {s['ratio']}x |")
    ratios = sorted(s["ratio"] for s in swaps if s["ratio"])
    release = next(r for r in rows if r["operation"].startswith("ferry release"))
    warm = next(r for r in rows if r["operation"].startswith("ferry rollback, previous"))
    lines += ["", "Targets (issue 13), on these figures:", ""]

    def check(ok: bool, text: str) -> None:
        lines.append(f"- {'met' if ok else 'NOT met'}: {text}")

    check(release["seconds"] <= 1.5, f"one-line release (build + push + swap) at most 1.5 s ({release['seconds']:.2f} s)")
    check(warm["seconds"] <= 0.5, f"warm rollback as a whole command at most 0.5 s ({warm['seconds']:.2f} s)")
    if ratios:
        median = ratios[len(ratios) // 2]
        check(median <= 1.5, f"p99 during a swap at most 1.5x steady state (median of {len(ratios)} runs "
                             f"{median:.2f}x, worst {ratios[-1]:.2f}x)")
    check(all(r["failed"] == 0 for r in rows[:-1]) and all(s["failed"] == 0 for s in swaps),
          "0 failed requests in every ferry operation")
    lines.append("<!-- release:end -->")
    block = "\n".join(lines)
    if "<!-- release:begin -->" in text:
        text = re.sub(r"<!-- release:begin -->.*<!-- release:end -->", block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()

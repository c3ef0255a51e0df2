"""Benchmark: `docker build` + `docker push` of a well-written Dockerfile vs `ferry build --push`.

Same sample (examples/hello), same base image, same registry, same machine, one run:

    scenario          cold | one-line source change | one dependency added | no change
    mode              warm  (local caches kept: docker's builder cache and images, ferry's cache)
                      fresh (a new CI runner: docker's builder cache pruned and its images removed,
                             ferry's cache removed; the registry keeps what was pushed before)

Wall time covers build + push. Bytes uploaded are counted at a small HTTP proxy in front of the
registry (request bodies of POST/PUT/PATCH: blobs and manifests), through which both tools push
and pull. Each repetition pushes to new repositories, so "cold" is cold in the registry too.

Needs the local target (`ferry local up`): its registry (127.0.0.1:5000), its Docker engine and
the base image ferry/python:3.11. Docker is Debian's 20.10 client (/usr/bin/docker) with
BuildKit. The Dockerfile's pip reaches the package index through the machine's proxy: its CA
is passed as a build secret (never a layer) and the build uses the host network.

    .venv/bin/python benchmarks/build.py [--reps 3] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import compileall
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello"
SCENARIOS = ("cold", "one-line change", "dependency added", "no change")
MODES = ("warm", "fresh")
# one per repetition: each repetition's change is new to every cache (docker's builder cache,
# ferry's layer cache), as a real change is, while the warm caches keep everything else
ADDED_DEPENDENCIES = ("six==1.16.0", "six==1.15.0", "six==1.14.0", "six==1.13.0", "six==1.12.0")
CA_BUNDLE_CANDIDATES = ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


# --- the counting proxy ------------------------------------------------------------------------

class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.uploaded = 0
        self.requests = 0

    def add(self, n: int) -> None:
        with self.lock:
            self.uploaded += n
            self.requests += 1

    def snapshot(self) -> int:
        with self.lock:
            return self.uploaded


HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


def make_handler(upstream: tuple[str, int], counter: Counter):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out as separate writes: without TCP_NODELAY, Nagle's algorithm and
        # delayed ACKs would add ~40 ms to every request, for both contenders
        disable_nagle_algorithm = True

        def log_message(self, *args):  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _forward(self) -> None:
            body = self._body()
            if self.command in ("POST", "PUT", "PATCH"):
                counter.add(len(body))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection(*upstream, timeout=300)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data) if self.command != "HEAD"
                                                       else resp.getheader("Content-Length", "0")))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                conn.close()

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    return Handler


def start_proxy(upstream: str) -> tuple[ThreadingHTTPServer, Counter]:
    host, port = upstream.rsplit(":", 1)
    counter = Counter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler((host, int(port)), counter))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, counter


# --- the two contenders -------------------------------------------------------------------------

DOCKERFILE = """\
# deps before source: a source change reuses the dependency layer from the builder cache
FROM {base}
USER root
WORKDIR /app
COPY requirements.txt .
RUN --mount=type=bind,source=.pip,target=/pip --mount=type=secret,id=ca,target=/ca.pem,mode=0444 \\
    ["python3", "/pip/pip.whl/pip", "install", "--no-cache-dir", "--disable-pip-version-check", \\
     "--cert", "/ca.pem", "--target", "/app/deps", "-r", "requirements.txt"]
COPY README.md gunicorn.conf.py ./
COPY hello/ hello/
ENV PYTHONPATH=/app:/app/deps PATH=/app/deps/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PORT=8000
USER 65532:65532
EXPOSE 8000
ENTRYPOINT ["python3", "-m", "gunicorn", "-c", "gunicorn.conf.py", "hello:app"]
"""

FERRY_TOML = """\
[app]
name = "hello"
[image]
repository = "{repository}"
base = "{base}"
source = "."
requirements = "requirements.txt"
entrypoint = ["python3", "-m", "gunicorn", "-c", "gunicorn.conf.py", "hello:app"]
exclude = ["__pycache__", "*.pyc", ".pip", "Dockerfile", ".dockerignore", "ferry.toml"]
port = 8000
platforms = ["linux/amd64"]
"""


@dataclass
class Run:
    tool: str
    mode: str
    rep: int
    scenario: str
    seconds: float
    uploaded: int
    digest: str


@dataclass
class Bench:
    registry: str  # the proxy's address
    counter: Counter
    work: Path
    docker: list[str]
    ferry: list[str]
    base_repo: str
    ca: str
    pip_wheel: Path
    runs: list[Run] = field(default_factory=list)
    docker_tags: set[str] = field(default_factory=set)

    def app(self, name: str) -> Path:
        d = self.work / name
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(HELLO, d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (d / ".pip").mkdir()
        shutil.copy(self.pip_wheel, d / ".pip" / "pip.whl")
        (d / "Dockerfile").write_text(DOCKERFILE.format(base=f"{self.registry}/{self.base_repo}"))
        (d / ".dockerignore").write_text("Dockerfile\n.dockerignore\nferry.toml\n")
        return d

    def measure(self, tool: str, mode: str, rep: int, scenario: str, fn) -> Run:
        before = self.counter.snapshot()
        t0 = time.perf_counter()
        digest = fn()
        run = Run(tool, mode, rep, scenario, time.perf_counter() - t0, self.counter.snapshot() - before, digest)
        self.runs.append(run)
        print(f"  {tool:6} {mode:5} {scenario:17} {run.seconds:7.2f} s {run.uploaded:>10} B  {digest[:19]}",
              file=sys.stderr)
        return run

    # docker ----------------------------------------------------------------------------------
    def docker_fresh(self) -> None:
        subprocess.run([*self.docker, "builder", "prune", "-af"], capture_output=True, check=True)
        for tag in sorted(self.docker_tags) + [f"{self.registry}/{self.base_repo}"]:
            subprocess.run([*self.docker, "image", "rm", "-f", tag], capture_output=True)
        self.docker_tags.clear()
        # images a later build untagged still carry this run's registry address: remove them too
        listed = subprocess.run([*self.docker, "images", "--format", "{{.ID}} {{.Repository}}"],
                                capture_output=True, text=True).stdout.split("\n")
        ours = sorted({line.split()[0] for line in listed if line.strip() and
                       line.split()[1].startswith(self.registry + "/")})
        if ours:
            subprocess.run([*self.docker, "image", "rm", "-f", *ours], capture_output=True)

    def docker_build(self, app: Path, ref: str) -> None:
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        b = subprocess.run([*self.docker, "build", "--network", "host", "--secret", f"id=ca,src={self.ca}",
                            "-t", ref, str(app)], capture_output=True, text=True, env=env)
        if b.returncode != 0:
            raise SystemExit(f"docker build failed:\n{b.stderr[-3000:]}")
        self.docker_tags.add(ref)

    def docker_build_push(self, app: Path, ref: str) -> str:
        self.docker_build(app, ref)
        p = subprocess.run([*self.docker, "push", ref], capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"docker push failed:\n{p.stderr[-3000:]}")
        for line in p.stdout.splitlines():
            if "digest: sha256:" in line:
                return line.split("digest: ", 1)[1].split()[0]
        return "?"

    # ferry -----------------------------------------------------------------------------------
    def ferry_build_push(self, app: Path, cache: Path, push: bool = True) -> str:
        env = {**os.environ, "FERRY_CACHE_DIR": str(cache)}
        env.pop("UV_CACHE_DIR", None)  # uv's cache lives in ferry's: a fresh machine has neither
        r = subprocess.run([*self.ferry, "-c", str(app / "ferry.toml"), "build", *(["--push"] if push else []), "--json"],
                           capture_output=True, text=True, env=env, cwd=app)
        if r.returncode != 0:
            raise SystemExit(f"ferry build failed:\n{r.stderr[-3000:]}")
        return json.loads(r.stdout)["digest"]


def edit_line(app: Path, rep: int) -> None:
    f = app / "hello" / "__init__.py"
    text = f.read_text()
    assert 'GREETING = "hello from ferry"' in text, "examples/hello changed: update the benchmark's edit"
    f.write_text(text.replace('GREETING = "hello from ferry"', f'GREETING = "hello from ferry, edit {rep}"'))


def add_dependency(app: Path, rep: int) -> None:
    with open(app / "requirements.txt", "a") as f:
        f.write(ADDED_DEPENDENCIES[rep % len(ADDED_DEPENDENCIES)] + "\n")


STEPS = {"cold": None, "one-line change": edit_line, "dependency added": add_dependency, "no change": None}


def series(bench: Bench, tool: str, mode: str, rep: int, run_id: str) -> None:
    repo = f"bench/{tool}-{mode}-{run_id}-{rep}"
    app = bench.app(f"{tool}-{mode}-{rep}")
    # one cache for both modes, as docker has one daemon: a fresh series leaves behind what it
    # built, for the next warm series, on both sides
    cache = bench.work / "ferry-cache"
    if tool == "ferry":
        (app / "ferry.toml").write_text(FERRY_TOML.format(repository=f"{bench.registry}/{repo}",
                                                          base=f"{bench.registry}/{bench.base_repo}"))
    if mode == "warm":
        # warm caches: the same app was built on this machine before, but never pushed
        if tool == "docker":
            bench.docker_build(app, f"{bench.registry}/bench/warmup-{run_id}:docker")
        else:
            bench.ferry_build_push(app, cache, push=False)
    for scenario, change in STEPS.items():
        if change:
            change(app, rep)
        if mode == "fresh":
            if tool == "docker":
                bench.docker_fresh()
            else:
                shutil.rmtree(cache, ignore_errors=True)
        if tool == "docker":
            bench.measure(tool, mode, rep, scenario, lambda: bench.docker_build_push(app, f"{bench.registry}/{repo}:latest"))
        else:
            bench.measure(tool, mode, rep, scenario, lambda: bench.ferry_build_push(app, cache))


# --- report -------------------------------------------------------------------------------------

def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def summarise(runs: list[Run]) -> list[dict]:
    rows = []
    for mode in MODES:
        for scenario in SCENARIOS:
            d = [r for r in runs if r.tool == "docker" and r.mode == mode and r.scenario == scenario]
            f = [r for r in runs if r.tool == "ferry" and r.mode == mode and r.scenario == scenario]
            if not d or not f:
                continue
            dt, ft = statistics.median(r.seconds for r in d), statistics.median(r.seconds for r in f)
            db, fb = statistics.median(r.uploaded for r in d), statistics.median(r.uploaded for r in f)
            rows.append({
                "mode": mode, "scenario": scenario,
                "docker_s": round(dt, 3), "ferry_s": round(ft, 3), "speedup": round(dt / ft, 2) if ft else None,
                "docker_bytes": int(db), "ferry_bytes": int(fb),
                "bytes_ratio": round(fb / db, 5) if db else None,
                "docker_same": same_digest(runs, "docker", scenario), "ferry_same": same_digest(runs, "ferry", scenario),
                "reps": len(f),
            })
    return rows


def same_digest(runs: list[Run], tool: str, scenario: str) -> str:
    """In how many repetitions the warm and the fresh build of the same inputs gave one digest."""
    reps = sorted({r.rep for r in runs})
    same = 0
    for rep in reps:
        digests = {r.digest for r in runs if r.tool == tool and r.scenario == scenario and r.rep == rep}
        same += len(digests) == 1
    return f"{same}/{len(reps)}"


def markdown(rows: list[dict], reps: int, command: str, machine: str) -> str:
    out = [
        "<!-- build-benchmark:begin (written by benchmarks/build.py) -->",
        "## Build: `ferry build --push` vs `docker build` + `docker push`",
        "",
        f"Command: `{command}` ({reps} repetitions, medians; {machine}).",
        "",
        "Sample: examples/hello (Flask, gunicorn, prometheus-client; 10 pinned distributions) on the base",
        "`ferry/python:3.11` from the local registry. Docker: Debian's docker 20.10 client, BuildKit, a",
        "Dockerfile with dependencies before source (pip from a bind-mounted wheel, the index's CA as a",
        "build secret, host network). Time is build + push; bytes are request bodies (blobs and",
        "manifests) counted at a proxy in front of the registry. *warm*: local caches kept; *fresh*: a",
        "new CI runner (docker's builder cache pruned and its images removed; ferry's cache, uv's",
        "included, removed); the registry keeps earlier pushes. *same digest*: in how many repetitions",
        "the warm and the fresh build of the same inputs gave one digest. Each repetition pushes to new",
        "repositories; its one-line change and added dependency (a different `six` pin each time) are",
        "new to every cache, as real changes are, while warm caches keep everything else (docker also",
        "remembers which repositories it pushed layers to and mounts them from there; so does ferry).",
        "",
        "| mode | scenario | docker | ferry | speed-up | docker bytes | ferry bytes | ferry / docker bytes | same digest docker / ferry |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = "n/a" if r["bytes_ratio"] is None else f"{100 * r['bytes_ratio']:.2f} %"
        out.append(f"| {r['mode']} | {r['scenario']} | {r['docker_s']:.2f} s | {r['ferry_s']:.2f} s | "
                   f"{r['speedup']:.1f}× | {human(r['docker_bytes'])} | {human(r['ferry_bytes'])} | {ratio} | "
                   f"{r['docker_same']} / {r['ferry_same']} |")
    out += ["", "Targets (issue 3), checked on these medians:", ""]
    out += [f"- {line}" for line in targets(rows)]
    out += ["", "<!-- build-benchmark:end -->"]
    return "\n".join(out) + "\n"


def targets(rows: list[dict]) -> list[str]:
    by = {(r["mode"], r["scenario"]): r for r in rows}
    out = []

    def check(ok: bool, text: str) -> None:
        out.append(f"{'met' if ok else 'NOT met'}: {text}")

    r = by.get(("fresh", "one-line change"))
    if r:
        check(r["speedup"] >= 10, f"fresh one-line change at least 10× faster than docker ({r['speedup']:.1f}×)")
        check(r["bytes_ratio"] is not None and r["bytes_ratio"] < 0.01,
              f"fresh one-line change under 1 % of docker's bytes ({100 * (r['bytes_ratio'] or 0):.2f} %)")
    r = by.get(("warm", "one-line change"))
    if r:
        check(r["ferry_s"] <= 1.5 * r["docker_s"],
              f"warm one-line change within 1.5× of docker's time ({r['ferry_s'] / r['docker_s']:.2f}×)")
    for mode in MODES:
        r = by.get((mode, "dependency added"))
        if r:
            check(r["ferry_s"] <= r["docker_s"], f"{mode} dependency change no slower than docker "
                                                 f"({r['ferry_s']:.2f} s vs {r['docker_s']:.2f} s)")
    for mode in MODES:
        r = by.get((mode, "no change"))
        if r:
            check(r["ferry_bytes"] == 0, f"{mode} no change uploads 0 B ({r['ferry_bytes']} B)")
    check(all(r["ferry_same"].split("/")[0] == r["ferry_same"].split("/")[1] for r in rows),
          "ferry gives the same digest warm and fresh (reproducible on a new machine)")
    return out


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    begin, end = "<!-- build-benchmark:begin", "<!-- build-benchmark:end -->"
    if begin in text and end in text:
        head = text[:text.index(begin)]
        tail = text[text.index(end) + len(end):].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--registry", default="127.0.0.1:5000")
    ap.add_argument("--base", default="ferry/python:3.11", help="base repository:tag in that registry")
    ap.add_argument("--docker-host", default="unix:///var/lib/ferry-local/docker.sock")
    ap.add_argument("--docker", default="/usr/bin/docker", help="Debian's 20.10 client (BuildKit built in)")
    ap.add_argument("--write", metavar="BENCHMARKS.md", help="replace the build section of this file")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    args = ap.parse_args()

    # ferry as a user has it installed: a wheel install writes its bytecode, an editable one
    # (this checkout) does not, and PYTHONDONTWRITEBYTECODE would make every run compile it.
    compileall.compile_dir(str(ROOT / "ferry"), quiet=1)
    ca = next((os.environ[v] for v in CA_BUNDLE_CANDIDATES if os.environ.get(v)), "/etc/ssl/certs/ca-certificates.crt")
    server, counter = start_proxy(args.registry)
    proxy = f"127.0.0.1:{server.server_address[1]}"
    work = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    try:
        wheels = work / "pip"
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), "pip==24.0"],
                       check=True, capture_output=True)
        bench = Bench(registry=proxy, counter=counter, work=work,
                      docker=[args.docker, "-H", args.docker_host],
                      ferry=[sys.executable, "-m", "ferry"], base_repo=args.base, ca=ca,
                      pip_wheel=next(wheels.glob("pip-*.whl")))
        run_id = uuid.uuid4().hex[:6]
        print(f"registry proxy {proxy} -> {args.registry}; work {work}", file=sys.stderr)
        for rep in range(args.reps):
            for mode in MODES:
                for tool in ("docker", "ferry"):
                    series(bench, tool, mode, rep, run_id)
        rows = summarise(bench.runs)
        command = "python benchmarks/build.py" + (f" --reps {args.reps}" if args.reps != 3 else "") + \
                  (f" --write {args.write}" if args.write else "")
        machine = f"{os.cpu_count()} cores, docker {docker_version(bench.docker)}"
        section = markdown(rows, args.reps, command, machine)
        print(section, file=sys.stderr)
        if args.write:
            write_section(Path(args.write), section)
        if args.json:
            print(json.dumps({"rows": rows, "runs": [r.__dict__ for r in bench.runs]}, indent=2))
        bench.docker_fresh()
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def docker_version(docker: list[str]) -> str:
    r = subprocess.run([*docker, "version", "-f", "{{.Server.Version}}"], capture_output=True, text=True)
    return r.stdout.strip() or "?"


if __name__ == "__main__":
    main()

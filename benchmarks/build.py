"""Benchmark: `ferry build --push` against docker build + push, as a skilled user runs docker.

Same samples, same base image, same registry, same machine, one run. Three contenders:

    docker         `docker build` + `docker push` of a good Dockerfile (dependencies before source)
    docker+cache   the same, the way CI users run it: BuildKit's inline registry cache
                   (`--build-arg BUILDKIT_INLINE_CACHE=1 --cache-from <repo>:latest`), so a new
                   runner reuses the dependency layer from the registry too
    ferry          `ferry build --push`

    scenario          cold | one-line source change | one dependency added | no change
    mode              warm  (local caches kept: docker's builder cache and images, ferry's cache)
                      fresh (a new CI runner: docker's builder cache pruned and its images removed,
                             ferry's cache removed; the registry keeps what was pushed before)

Samples (--samples): `hello` (examples/hello, Flask), `django` (examples/django: collectstatic as a
build step, a RUN step for docker), `wheels` (hello plus numpy and pandas: ~100 MB of wheels;
fresh mode, cold and one-line change only: the size curve). The per-sample rows go to
benchmarks/results/build.csv and the curves to benchmarks/results/build-size.png.

Wall time covers build + push. Bytes uploaded are counted at a small HTTP proxy in front of the
registry (request bodies of POST/PUT/PATCH: blobs and manifests), through which every tool pushes
and pulls. Each repetition pushes to new repositories, so "cold" is cold in the registry too.

Needs the local target (`ferry local up`): its registry (127.0.0.1:5000), its Docker engine and
the base image ferry/python:3.11. Docker is Debian's 20.10 client (/usr/bin/docker) with
BuildKit. The Dockerfile's pip reaches the package index through the machine's proxy: its CA
is passed as a build secret (never a layer) and the build uses the host network.

    .venv/bin/python benchmarks/build.py [--reps 3] [--samples hello,django,wheels] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import http.client
import json
import os
import re
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


# --- the samples ---------------------------------------------------------------------------------

# deps before source: a source change reuses the dependency layer from the builder cache (or,
# with the inline cache, from the registry). pip's wheel (the base has no pip) is bind-mounted
# from the context and never copied (the COPY lines name the app's own files), the index's CA
# is a build secret.
DOCKERFILE = """\
FROM {base}
USER root
WORKDIR /app
COPY requirements.txt .
RUN --mount=type=bind,source=.pip,target=/pip --mount=type=secret,id=ca,target=/ca.pem,mode=0444 \\
    ["python3", "/pip/pip.whl/pip", "install", "--no-cache-dir", "--disable-pip-version-check", \\
     "--cert", "/ca.pem", "--target", "/app/deps", "-r", "requirements.txt"]
{copy}ENV PYTHONPATH=/app:/app/deps PATH=/app/deps/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PORT=8000
{run}USER 65532:65532
EXPOSE 8000
ENTRYPOINT {entrypoint}
"""

FERRY_TOML = """\
[app]
name = "{name}"
[image]
repository = "{repository}"
base = "{base}"
source = "."
requirements = "requirements.txt"
entrypoint = {entrypoint}
exclude = ["__pycache__", "*.pyc", ".pip", "Dockerfile", ".dockerignore", "ferry.toml", ".git", "tests"]
port = 8000
platforms = ["linux/amd64"]
{build}"""

DOCKERIGNORE = "Dockerfile\n.dockerignore\nferry.toml\n__pycache__\n*.pyc\n.git\ntests\n"


@dataclass(frozen=True)
class Sample:
    """An app to build: where it is, how it starts, what a one-line change edits."""

    name: str
    src: Path
    entrypoint: tuple[str, ...]
    edit_file: str  # relative to the app: the file a one-line change edits
    build: tuple[tuple[str, ...], ...] = ()  # build steps (ferry image.build; docker RUN)
    build_env: tuple[tuple[str, str], ...] = ()
    extra_requirements: tuple[str, ...] = ()  # appended to the app's requirements.txt
    scenarios: tuple[str, ...] = ("cold", "one-line change", "dependency added", "no change")
    modes: tuple[str, ...] = ("warm", "fresh")
    own: bool = False  # the app's own Dockerfile and ferry.toml (repository and base replaced)
    max_reps: int | None = None  # fewer repetitions for the slow samples: make bench stays under 15 min

    def dockerfile(self, base: str, app: Path) -> str:
        """COPY lines as a skilled user writes them: the top-level files in one, each folder in its own."""
        skip = {".pip", "Dockerfile", ".dockerignore", "ferry.toml", "requirements.txt", "__pycache__", ".git", "tests"}
        entries = sorted(p for p in app.iterdir() if p.name not in skip)
        files = [p.name for p in entries if p.is_file()]
        copy = f"COPY {' '.join(files)} ./\n" if files else ""
        copy += "".join(f"COPY {p.name}/ {p.name}/\n" for p in entries if p.is_dir())
        run = ""
        for step in self.build:
            env = " ".join(f"{k}={v}" for k, v in self.build_env)
            run += f"RUN {env + ' ' if env else ''}{' '.join(step)}\n"
        return DOCKERFILE.format(base=base, copy=copy, run=run, entrypoint=json.dumps(list(self.entrypoint)))

    def ferry_toml(self, repository: str, base: str) -> str:
        if self.own:
            text = (self.src / "ferry.toml").read_text()
            text = re.sub(r'(?m)^repository = ".*"$', f'repository = "{repository}"', text, count=1)
            text = re.sub(r'(?m)^base = ".*"$', f'base = "{base}"', text, count=1)
            return text.replace("exclude = [", 'exclude = [".pip", ', 1)
        build = ""
        if self.build:
            build += f"build = {json.dumps([list(s) for s in self.build])}\n"
        if self.build_env:
            build += "build_env = { " + ", ".join(f'{k} = "{v}"' for k, v in self.build_env) + " }\n"
        return FERRY_TOML.format(name=self.name, repository=repository, base=base,
                                 entrypoint=json.dumps(list(self.entrypoint)), build=build)


GUNICORN = ("python3", "-m", "gunicorn", "-c", "gunicorn.conf.py")
SAMPLES = {
    "hello": Sample("hello", ROOT / "examples" / "hello", GUNICORN + ("hello:app",), "hello/__init__.py"),
    # numpy + pandas: ~100 MB of wheels, the "big app" end of the size curve
    "wheels": Sample("wheels", ROOT / "examples" / "hello", GUNICORN + ("hello:app",), "hello/__init__.py",
                     extra_requirements=("numpy==2.2.6", "pandas==2.2.3", "python-dateutil==2.9.0.post0",
                                         "pytz==2025.2", "tzdata==2025.2", "six==1.17.0"),
                     scenarios=("cold", "one-line change"), modes=("fresh",), max_reps=2),
}


def django_sample() -> Sample | None:
    """examples/django, as its own ferry.toml builds it: collectstatic is its build step."""
    src = ROOT / "examples" / "django"
    toml_path = src / "ferry.toml"
    if not toml_path.is_file():
        return None
    import tomllib

    image = tomllib.loads(toml_path.read_text()).get("image", {})
    edit = next((str(p.relative_to(src)) for p in sorted(src.rglob("views.py"))), "manage.py")
    return Sample("django", src, tuple(image.get("entrypoint", ())), edit,
                  build=tuple(tuple(s) for s in image.get("build", ())),
                  build_env=tuple(sorted(image.get("build_env", {}).items())), own=True, max_reps=2)


@dataclass
class Run:
    sample: str
    tool: str
    mode: str
    rep: int
    scenario: str
    seconds: float
    uploaded: int
    digest: str


TOOLS = ("docker", "docker+cache", "ferry")


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

    def app(self, sample: Sample, name: str) -> Path:
        d = self.work / name
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(sample.src, d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "ferry.toml",
                                                                    "Dockerfile", ".dockerignore", "tests"))
        if sample.extra_requirements:
            with open(d / "requirements.txt", "a") as f:
                f.write("\n".join(sample.extra_requirements) + "\n")
        base = f"{self.registry}/{self.base_repo}"
        if sample.own:  # the app's own Dockerfile, its base pointed at the same registry
            text = (sample.src / "Dockerfile").read_text()
            (d / "Dockerfile").write_text(re.sub(r"(?m)^ARG BASE=.*$", f"ARG BASE={base}", text, count=1))
        else:
            (d / "Dockerfile").write_text(sample.dockerfile(base, d))
        (d / ".pip").mkdir()
        shutil.copy(self.pip_wheel, d / ".pip" / "pip.whl")
        (d / ".dockerignore").write_text(DOCKERIGNORE)
        return d

    def measure(self, sample: str, tool: str, mode: str, rep: int, scenario: str, fn) -> Run:
        before = self.counter.snapshot()
        t0 = time.perf_counter()
        digest = fn()
        run = Run(sample, tool, mode, rep, scenario, time.perf_counter() - t0, self.counter.snapshot() - before, digest)
        self.runs.append(run)
        print(f"  {sample:6} {tool:12} {mode:5} {scenario:17} {run.seconds:7.2f} s {run.uploaded:>10} B  {digest[:19]}",
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

    def docker_build(self, app: Path, ref: str, cache_from: str | None = None) -> None:
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        cache = ["--build-arg", "BUILDKIT_INLINE_CACHE=1", "--cache-from", cache_from] if cache_from else []
        b = subprocess.run([*self.docker, "build", "--network", "host", "--secret", f"id=ca,src={self.ca}",
                            *cache, "-t", ref, str(app)], capture_output=True, text=True, env=env)
        if b.returncode != 0:
            raise SystemExit(f"docker build failed:\n{b.stderr[-3000:]}")
        self.docker_tags.add(ref)

    def docker_build_push(self, app: Path, ref: str, cache_from: str | None = None) -> str:
        self.docker_build(app, ref, cache_from)
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


def edit_line(sample: Sample, app: Path, rep: int) -> None:
    """One changed line in one source file, new to every cache."""
    f = app / sample.edit_file
    f.write_text(f.read_text() + f"# edit {rep}: a one-line change\n")


HASHES: dict[str, str] = {}  # pin -> sha256 of its wheel, for requirements files with hashes


def pin_hashes(work: Path) -> None:
    """The added pins' wheel hashes: a requirements file with --hash lines (pip-compile
    --generate-hashes, as examples/django's) makes pip require one for every line."""
    d = work / "pins"
    for pin in ADDED_DEPENDENCIES:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                        "-d", str(d / pin), pin], check=True, capture_output=True)
        wheel = next((d / pin).glob("*.whl"))
        HASHES[pin] = hashlib.sha256(wheel.read_bytes()).hexdigest()


def add_dependency(sample: Sample, app: Path, rep: int) -> None:
    req = app / "requirements.txt"
    pin = ADDED_DEPENDENCIES[rep % len(ADDED_DEPENDENCIES)]
    hashed = "--hash=sha256:" in req.read_text()
    with open(req, "a") as f:
        f.write(pin + (f" --hash=sha256:{HASHES[pin]}" if hashed else "") + "\n")


CHANGES = {"cold": None, "one-line change": edit_line, "dependency added": add_dependency, "no change": None}


def series(bench: Bench, sample: Sample, tool: str, mode: str, rep: int, run_id: str) -> None:
    slug = tool.replace("+", "-")
    repo = f"bench/{sample.name}-{slug}-{mode}-{run_id}-{rep}"
    app = bench.app(sample, f"{sample.name}-{slug}-{mode}-{rep}")
    # one cache for both modes, as docker has one daemon: a fresh series leaves behind what it
    # built, for the next warm series, on both sides
    cache = bench.work / "ferry-cache"
    ref = f"{bench.registry}/{repo}:latest"
    cache_from = ref if tool == "docker+cache" else None
    if tool == "ferry":
        (app / "ferry.toml").write_text(sample.ferry_toml(f"{bench.registry}/{repo}", f"{bench.registry}/{bench.base_repo}"))
    if mode == "warm":
        # warm caches: the same app was built on this machine before, but never pushed. The two
        # docker series share one daemon: each starts from its own warm-up only, so neither finds
        # the other's builds of this repetition's changes in the builder cache
        if tool == "ferry":
            bench.ferry_build_push(app, cache, push=False)
        else:
            bench.docker_fresh()
            bench.docker_build(app, f"{bench.registry}/bench/warmup-{run_id}:docker")
    for scenario in sample.scenarios:
        change = CHANGES[scenario]
        if change:
            change(sample, app, rep)
        if mode == "fresh":
            if tool == "ferry":
                shutil.rmtree(cache, ignore_errors=True)
            else:
                bench.docker_fresh()
        if tool == "ferry":
            bench.measure(sample.name, tool, mode, rep, scenario, lambda: bench.ferry_build_push(app, cache))
        else:
            bench.measure(sample.name, tool, mode, rep, scenario,
                          lambda: bench.docker_build_push(app, ref, cache_from))


# --- report -------------------------------------------------------------------------------------

def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def summarise(runs: list[Run]) -> list[dict]:
    """Medians per (sample, mode, scenario), one column group per tool."""
    rows = []
    keys = list(dict.fromkeys((r.sample, r.mode, r.scenario) for r in runs))
    for sample, mode, scenario in keys:
        row: dict = {"sample": sample, "mode": mode, "scenario": scenario}
        for tool in TOOLS:
            rs = [r for r in runs if (r.sample, r.tool, r.mode, r.scenario) == (sample, tool, mode, scenario)]
            if not rs:
                continue
            row[f"{tool}_s"] = round(statistics.median(r.seconds for r in rs), 3)
            row[f"{tool}_bytes"] = int(statistics.median(r.uploaded for r in rs))
            row[f"{tool}_same"] = same_digest(runs, sample, tool, scenario)
            row["reps"] = len(rs)
        rows.append(row)
    return rows


def same_digest(runs: list[Run], sample: str, tool: str, scenario: str) -> str:
    """In how many repetitions the warm and the fresh build of the same inputs gave one digest."""
    reps = sorted({r.rep for r in runs if r.sample == sample})
    same = 0
    for rep in reps:
        digests = {r.digest for r in runs if (r.sample, r.tool, r.scenario, r.rep) == (sample, tool, scenario, rep)}
        same += len(digests) == 1
    return f"{same}/{len(reps)}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}×" if a and b else "n/a"


def markdown(rows: list[dict], reps: int, command: str, machine: str, samples: dict[str, Sample],
             app_bytes: dict[str, int]) -> str:
    out = [
        "<!-- build-benchmark:begin (written by benchmarks/build.py) -->",
        "## Build: `ferry build --push` vs docker build + push, with and without BuildKit's registry cache",
        "",
        f"Command: `{command}` ({reps} repetitions, medians; {machine}).",
        "",
        "On the base `ferry/python:3.11` from the local registry. *docker*: Debian's docker 20.10 client,",
        "BuildKit, a Dockerfile with dependencies before source (pip's wheel and the index's CA as build",
        "secrets, host network). *docker+cache*: the same with BuildKit's inline registry cache",
        "(`--build-arg BUILDKIT_INLINE_CACHE=1 --cache-from <repo>:latest`), what a CI user runs: the row",
        "the targets are checked on. Time is build + push; bytes are request bodies (blobs and",
        "manifests) counted at a proxy in front of the registry. *warm*: local caches kept; *fresh*: a",
        "new CI runner (docker's builder cache pruned and its images removed; ferry's cache, uv's",
        "included, removed); the registry keeps earlier pushes. *same digest*: in how many repetitions",
        "the warm and the fresh build of the same inputs gave one digest. Each repetition pushes to new",
        "repositories; its one-line change and added dependency (a different `six` pin each time) are",
        "new to every cache, as real changes are.",
        "",
    ]
    for sample in dict.fromkeys(r["sample"] for r in rows):
        s = samples[sample]
        size = app_bytes.get(sample)
        steps = f"; build step {' '.join(s.build[0])}" if s.build else ""
        n = max(r.get("reps", 0) for r in rows if r["sample"] == sample)
        out += [f"### {sample}: {s.src.relative_to(ROOT)}" + (f" + {len(s.extra_requirements)} more requirements"
                                                             if s.extra_requirements else "")
                + (f" ({human(size)} of app layers{steps})" if size else "") + f"; {n} repetitions", "",
                "| mode | scenario | docker | docker+cache | ferry | ferry vs docker+cache | docker bytes | "
                "docker+cache bytes | ferry bytes | same digest docker / ferry |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in rows if r["sample"] == sample):
            cells = [r["mode"], r["scenario"]]
            cells += [f"{r[f'{t}_s']:.2f} s" if f"{t}_s" in r else "-" for t in TOOLS]
            cells.append(_ratio(r.get("docker+cache_s"), r.get("ferry_s")) + " faster")
            cells += [human(r[f"{t}_bytes"]) if f"{t}_bytes" in r else "-" for t in TOOLS]
            cells.append(f"{r.get('docker_same', '-')} / {r.get('ferry_same', '-')}")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    out += ["Targets (issue 13), checked on these medians against docker+cache:", ""]
    out += [f"- {line}" for line in targets(rows)]
    out += ["", "<!-- build-benchmark:end -->"]
    return "\n".join(out) + "\n"


def targets(rows: list[dict]) -> list[str]:
    by = {(r["sample"], r["mode"], r["scenario"]): r for r in rows}
    out = []

    def check(ok: bool, text: str) -> None:
        out.append(f"{'met' if ok else 'NOT met'}: {text}")

    for sample in ("hello", "django"):
        r = by.get((sample, "fresh", "one-line change"))
        if r and "docker+cache_s" in r:
            x = r["docker+cache_s"] / r["ferry_s"]
            check(x >= 5, f"{sample}, fresh one-line change: ferry at least 5× faster than docker+cache ({x:.1f}×)")
            check(r["ferry_bytes"] <= r["docker+cache_bytes"],
                  f"{sample}, fresh one-line change: ferry sends no more bytes than docker+cache "
                  f"({human(r['ferry_bytes'])} vs {human(r['docker+cache_bytes'])})")
        for scenario in ("one-line change", "no change"):
            r = by.get((sample, "warm", scenario))
            if r and "docker+cache_s" in r:
                best = min(r["docker_s"], r["docker+cache_s"])
                check(r["ferry_s"] <= 0.6 * best, f"{sample}, warm {scenario}: ferry at most 0.6× docker's time "
                                                  f"({r['ferry_s']:.2f} s vs {best:.2f} s: {r['ferry_s'] / best:.2f}×)")
    for r in rows:
        if r["scenario"] == "no change" and "ferry_bytes" in r:
            check(r["ferry_bytes"] == 0, f"{r['sample']}, {r['mode']} no change: ferry uploads 0 B ({r['ferry_bytes']} B)")
    check(all(r["ferry_same"].split("/")[0] == r["ferry_same"].split("/")[1] for r in rows if "ferry_same" in r),
          "ferry gives the same digest warm and fresh (reproducible on a new machine)")
    return out


def write_csv(path: Path, rows: list[dict], app_bytes: dict[str, int]) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["sample", "app_bytes", "mode", "scenario", "reps"] + [f"{t}_{k}" for t in TOOLS for k in ("s", "bytes")]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "app_bytes": app_bytes.get(r["sample"], "")})


def plot(path: Path, rows: list[dict], app_bytes: dict[str, int], caption: str) -> bool:
    """Build time and bytes against the app's size (its layers above the base), fresh runner."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (make bench installs it): no plot", file=sys.stderr)
        return False
    samples = sorted((s for s in app_bytes if any(r["sample"] == s for r in rows)), key=app_bytes.get)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    panels = [("cold", "s", "fresh cold build + push (s)"), ("one-line change", "s", "fresh one-line change (s)"),
              ("one-line change", "bytes", "fresh one-line change: bytes uploaded")]
    for ax, (scenario, unit, title) in zip(axes, panels):
        for tool, style in zip(TOOLS, ("s--", "o-", "^-")):
            xs, ys = [], []
            for s in samples:
                r = next((r for r in rows if (r["sample"], r["mode"], r["scenario"]) == (s, "fresh", scenario)), None)
                if r and f"{tool}_{unit}" in r:
                    xs.append(app_bytes[s] / 1e6)
                    ys.append(r[f"{tool}_{unit}"])
            if xs:
                ax.plot(xs, ys, style, label=tool)
        for s in samples:
            ax.annotate(s, (app_bytes[s] / 1e6, ax.get_ylim()[0]), fontsize=8, rotation=90, va="bottom")
        ax.set_xscale("log")
        if unit == "bytes":
            ax.set_yscale("log")
        ax.set_xlabel("app layers above the base (MB, log)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(caption, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


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
    ap.add_argument("--samples", default="hello,django,wheels", help="comma-separated: hello, django, wheels")
    ap.add_argument("--registry", default="127.0.0.1:5000")
    ap.add_argument("--base", default="ferry/python:3.11", help="base repository:tag in that registry")
    ap.add_argument("--docker-host", default="unix:///var/lib/ferry-local/docker.sock")
    ap.add_argument("--docker", default="/usr/bin/docker", help="Debian's 20.10 client (BuildKit built in)")
    ap.add_argument("--write", metavar="BENCHMARKS.md", help="replace the build section of this file")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"), help="CSV and PNG go here")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    args = ap.parse_args()

    samples = dict(SAMPLES)
    django = django_sample()
    if django:
        samples["django"] = django
    chosen = [s.strip() for s in args.samples.split(",") if s.strip()]
    missing = [s for s in chosen if s not in samples]
    if missing:
        raise SystemExit(f"unknown or absent samples: {', '.join(missing)} (have {', '.join(samples)})")

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
        pin_hashes(work)
        run_id = uuid.uuid4().hex[:6]
        print(f"registry proxy {proxy} -> {args.registry}; work {work}", file=sys.stderr)
        app_bytes: dict[str, int] = {}
        for name in chosen:
            sample = samples[name]
            app_bytes[name] = app_size(bench, sample, run_id)
            for rep in range(min(args.reps, sample.max_reps or args.reps)):
                for mode in sample.modes:
                    for tool in TOOLS:
                        series(bench, sample, tool, mode, rep, run_id)
        rows = summarise(bench.runs)
        command = "make bench (python benchmarks/build.py" + (f" --reps {args.reps}" if args.reps != 3 else "") + \
                  (f" --write {args.write}" if args.write else "") + ")"
        machine = f"{os.cpu_count()} cores, docker {docker_version(bench.docker)}, {time.strftime('%Y-%m-%d')}"
        section = markdown(rows, args.reps, command, machine, samples, app_bytes)
        results = Path(args.results)
        write_csv(results / "build.csv", rows, app_bytes)
        if plot(results / "build-size.png", rows, app_bytes, f"{command}; {machine}"):
            section = section.replace("\n<!-- build-benchmark:end -->", "\n![build time and bytes against app size]"
                                      "(benchmarks/results/build-size.png)\n\nData: benchmarks/results/build.csv."
                                      "\n\n<!-- build-benchmark:end -->")
        print(section, file=sys.stderr)
        if args.write:
            write_section(Path(args.write), section)
        if args.json:
            print(json.dumps({"rows": rows, "runs": [r.__dict__ for r in bench.runs], "app_bytes": app_bytes}, indent=2))
        bench.docker_fresh()
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def app_size(bench: Bench, sample: Sample, run_id: str) -> int:
    """The size of the sample's own layers (compressed, above the base), from a ferry build."""
    app = bench.app(sample, f"{sample.name}-size")
    (app / "ferry.toml").write_text(sample.ferry_toml(f"{bench.registry}/bench/{sample.name}-size-{run_id}",
                                                      f"{bench.registry}/{bench.base_repo}"))
    env = {**os.environ, "FERRY_CACHE_DIR": str(bench.work / "ferry-cache")}
    r = subprocess.run([*bench.ferry, "-c", str(app / "ferry.toml"), "build", "--json"],
                       capture_output=True, text=True, env=env, cwd=app)
    if r.returncode != 0:
        raise SystemExit(f"ferry build of {sample.name} failed:\n{r.stderr[-3000:]}")
    layers = json.loads(r.stdout).get("layers", [])
    return sum(layer["size"] for layer in layers if layer.get("role") != "base")


def docker_version(docker: list[str]) -> str:
    r = subprocess.run([*docker, "version", "-f", "{{.Server.Version}}"], capture_output=True, text=True)
    return r.stdout.strip() or "?"


if __name__ == "__main__":
    main()

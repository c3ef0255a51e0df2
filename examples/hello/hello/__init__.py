"""hello: the sample service ferry deploys out of the box.

/            a greeting
/healthz     200 when ready to take traffic
/version     release id, version, colour, digest (ferry sets them in the environment)
/metrics     Prometheus metrics labelled by colour and version
/slow?s=N    answers after N seconds (for drain tests)
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

COLOUR = os.environ.get("FERRY_COLOUR", "none")
VERSION = os.environ.get("FERRY_VERSION", "dev")
RELEASE = os.environ.get("FERRY_RELEASE", "")
DIGEST = os.environ.get("FERRY_DIGEST", "")
GREETING = "hello from ferry"

REQUESTS = Counter("hello_requests_total", "Requests handled", ["colour", "version", "method", "path", "status"])
ERRORS = Counter("hello_errors_total", "Requests that ended in a 5xx", ["colour", "version", "path"])
LATENCY = Histogram("hello_request_duration_seconds", "Request latency", ["colour", "version", "method", "path"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
KNOWN_PATHS = {"/", "/healthz", "/version", "/metrics", "/slow"}

app = Flask(__name__)


@app.before_request
def _start_timer() -> None:
    g.start = time.perf_counter()


@app.after_request
def _observe(response: Response) -> Response:
    path = request.path if request.path in KNOWN_PATHS else "other"
    elapsed = time.perf_counter() - g.get("start", time.perf_counter())
    REQUESTS.labels(COLOUR, VERSION, request.method, path, str(response.status_code)).inc()
    LATENCY.labels(COLOUR, VERSION, request.method, path).observe(elapsed)
    if response.status_code >= 500:
        ERRORS.labels(COLOUR, VERSION, path).inc()
    return response


@app.get("/")
def index():
    return f"{GREETING} ({VERSION}, {COLOUR})\n"


@app.get("/healthz")
def healthz():
    return jsonify(status="ok")


@app.get("/version")
def version():
    return jsonify(release=RELEASE, version=VERSION, colour=COLOUR, digest=DIGEST)


@app.get("/slow")
def slow():
    seconds = min(float(request.args.get("s", "1")), 60.0)
    time.sleep(seconds)
    return jsonify(slept=seconds, colour=COLOUR, version=VERSION)


@app.get("/metrics")
def metrics():
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

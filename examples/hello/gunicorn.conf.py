# gunicorn settings for the sample: the port comes from ferry (each colour has its own).
import os
import shutil
import tempfile

bind = f"127.0.0.1:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = 8  # /slow requests must not starve health checks
worker_class = "gthread"
graceful_timeout = 30  # in-flight requests finish when ferry stops the old colour
keepalive = 5
accesslog = None

# prometheus-client's multiprocess mode, so /metrics adds up every worker
_dir = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="hello-metrics-"))


def on_starting(server):
    shutil.rmtree(_dir, ignore_errors=True)
    os.makedirs(_dir, exist_ok=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)

"""``python3 manage.py worker``: drain the task table until stopped.

SIGTERM (what ``docker stop`` and ferry send to a worker of the old release) and SIGINT finish
the task in hand, then exit 0, so a release never cuts a task in half. ``--once`` drains what is
ready and exits (for cron, or to run the queue by hand)."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from guestbook import tasks


class Command(BaseCommand):
    help = "Run queued background tasks until SIGTERM (or, with --once, until the queue is empty)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="exit when no task is ready")
        parser.add_argument("--poll", type=float, default=1.0, help="seconds between polls of an empty queue")

    def handle(self, *args, once: bool = False, poll: float = 1.0, **options) -> None:
        stopping = threading.Event()

        def stop(signum, frame) -> None:
            self.stdout.write(f"worker: {signal.Signals(signum).name}, stopping after the current task")
            stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if n := tasks.requeue_stale():
            self.stdout.write(f"worker: requeued {n} task(s) left running by a killed worker")
        self.stdout.write(f"worker: started (tasks: {', '.join(sorted(tasks.REGISTRY))})")
        done = 0
        while not stopping.is_set():
            close_old_connections()
            t = tasks.claim_next()
            if t is None:
                if once:
                    break
                stopping.wait(poll)
                continue
            tasks.run(t)
            done += 1
        self.stdout.write(f"worker: stopped after {done} task(s)")

"""Background tasks: registered functions the worker runs with a task's payload.

``enqueue`` writes a row; ``python3 manage.py worker`` claims rows and runs them. Claiming is a
conditional UPDATE (pending -> running), which is atomic on SQLite and PostgreSQL alike, so two
workers never run the same task."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from typing import Callable

from django.db import transaction
from django.utils import timezone

from .models import Entry, Task

log = logging.getLogger(__name__)
REGISTRY: dict[str, Callable[..., None]] = {}


def task(fn: Callable[..., None]) -> Callable[..., None]:
    REGISTRY[fn.__name__] = fn
    return fn


def enqueue(name: str, **payload) -> Task:
    if name not in REGISTRY:
        raise KeyError(f"no task named {name!r} (known: {', '.join(sorted(REGISTRY))})")
    return Task.objects.create(name=name, payload=payload)


def claim_next() -> Task | None:
    """The oldest ready task, now marked running by this worker; None when the queue is empty."""
    now = timezone.now()
    for candidate in Task.objects.filter(status=Task.Status.PENDING, run_after__lte=now).only("pk")[:5]:
        claimed = Task.objects.filter(pk=candidate.pk, status=Task.Status.PENDING).update(
            status=Task.Status.RUNNING, started_at=now)
        if claimed:
            return Task.objects.get(pk=candidate.pk)
    return None


def run(t: Task) -> None:
    """Run one claimed task; a failure is retried later with backoff, then marked failed."""
    t.attempts += 1
    try:
        REGISTRY[t.name](**t.payload)
    except Exception as e:  # noqa: BLE001 - any task error is recorded, the worker goes on
        log.exception("task %s failed (attempt %d/%d)", t, t.attempts, t.max_attempts)
        t.last_error = f"{type(e).__name__}: {e}"
        if t.attempts >= t.max_attempts:
            t.status, t.finished_at = Task.Status.FAILED, timezone.now()
        else:
            t.status, t.run_after = Task.Status.PENDING, timezone.now() + timedelta(seconds=2 ** t.attempts)
    else:
        t.status, t.finished_at, t.last_error = Task.Status.DONE, timezone.now(), ""
        log.info("task %s done", t)
    t.save(update_fields=["attempts", "status", "run_after", "last_error", "finished_at"])


def requeue_stale(older_than: timedelta = timedelta(minutes=10)) -> int:
    """Tasks left running by a worker that was killed (not stopped): back to pending."""
    cutoff = timezone.now() - older_than
    return Task.objects.filter(status=Task.Status.RUNNING, started_at__lt=cutoff).update(status=Task.Status.PENDING)


@task
def inspect_attachment(entry_id: int) -> None:
    """Record an upload's size and SHA-256 (slow for big files, so not in the request)."""
    with transaction.atomic():
        entry = Entry.objects.select_for_update().get(pk=entry_id)
        if not entry.attachment:
            return
        digest = hashlib.sha256()
        size = 0
        with entry.attachment.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
        entry.attachment_size, entry.attachment_sha256 = size, digest.hexdigest()
        entry.save(update_fields=["attachment_size", "attachment_sha256"])

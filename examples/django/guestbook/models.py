"""A guestbook: entries with an optional attachment, and the task queue the worker drains.

The queue is a table rather than Redis: one less service to run, and a task is enqueued in the
same transaction as the entry it is about, so it is never lost or run for a row that was rolled
back."""

from __future__ import annotations

from django.db import models
from django.urls import reverse
from django.utils import timezone


class Entry(models.Model):
    name = models.CharField(max_length=80)
    message = models.TextField(max_length=2000)
    attachment = models.FileField(upload_to="attachments/%Y/%m/", blank=True)
    # filled in by the worker (tasks.inspect_attachment), not by the request
    attachment_size = models.PositiveBigIntegerField(null=True, blank=True)
    attachment_sha256 = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "entries"

    def __str__(self) -> str:
        return f"{self.name}: {self.message[:40]}"

    def get_absolute_url(self) -> str:
        return reverse("guestbook:detail", args=[self.pk])


class Task(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    name = models.CharField(max_length=100)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    run_after = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run_after", "id"]
        indexes = [models.Index(fields=["status", "run_after"], name="task_ready_idx")]

    def __str__(self) -> str:
        return f"{self.name}#{self.pk} ({self.status})"

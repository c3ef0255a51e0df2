"""``python3 manage.py test`` (DEBUG=1 or SECRET_KEY set): the views, the queue and the worker."""

import hashlib
import shutil
import tempfile

from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import TestCase, override_settings
from django.urls import reverse

from . import tasks
from .models import Entry, Task

MEDIA = tempfile.mkdtemp(prefix="guestbook-test-media-")


@override_settings(MEDIA_ROOT=MEDIA, STORAGES={
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
})
class GuestbookTests(TestCase):
    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(MEDIA, ignore_errors=True)

    def test_signing_with_an_attachment_queues_its_inspection(self):
        body = b"hello guestbook\n" * 100
        r = self.client.post(reverse("guestbook:index"), {
            "name": "Ada", "message": "Lovely site", "attachment": SimpleUploadedFile("note.txt", body)})
        self.assertRedirects(r, reverse("guestbook:index"))
        entry = Entry.objects.get()
        self.assertEqual(Task.objects.get().payload, {"entry_id": entry.pk})

        call_command("worker", "--once")
        entry.refresh_from_db()
        self.assertEqual((entry.attachment_size, entry.attachment_sha256), (len(body), hashlib.sha256(body).hexdigest()))
        self.assertEqual(Task.objects.get().status, Task.Status.DONE)

    def test_an_invalid_entry_shows_the_form_again(self):
        r = self.client.post(reverse("guestbook:index"), {"name": "", "message": "x"})
        self.assertEqual(r.status_code, 200)
        self.assertContains(r, "This field is required.")
        self.assertFalse(Entry.objects.exists())

    def test_a_failing_task_is_retried_then_marked_failed(self):
        t = tasks.enqueue("inspect_attachment", entry_id=999_999)
        for _ in range(t.max_attempts):
            Task.objects.filter(pk=t.pk).update(run_after=t.created_at)
            tasks.run(tasks.claim_next())
        t.refresh_from_db()
        self.assertEqual((t.status, t.attempts), (Task.Status.FAILED, 3))
        self.assertIn("DoesNotExist", t.last_error)

    def test_healthz(self):
        r = self.client.get(reverse("healthz"))
        self.assertEqual(r.json(), {"status": "ok", "database": "sqlite", "pending_tasks": 0})

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from . import tasks
from .forms import EntryForm
from .models import Entry, Task


@require_http_methods(["GET", "POST"])
def index(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = EntryForm(request.POST, request.FILES)
        if form.is_valid():
            with transaction.atomic():
                entry = form.save()
                if entry.attachment:
                    tasks.enqueue("inspect_attachment", entry_id=entry.pk)
            messages.success(request, "Thanks for signing the guestbook!")
            return redirect("guestbook:index")
    else:
        form = EntryForm()
    page = Paginator(Entry.objects.all(), 20).get_page(request.GET.get("page"))
    return render(request, "guestbook/index.html", {"form": form, "page": page})


def detail(request: HttpRequest, pk: int) -> HttpResponse:
    return render(request, "guestbook/detail.html", {"entry": get_object_or_404(Entry, pk=pk)})


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """For the deployer's health gate: the database answers, and the queue's backlog."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    pending = Task.objects.filter(status=Task.Status.PENDING).count()
    return JsonResponse({"status": "ok", "database": connection.vendor, "pending_tasks": pending})

from django.contrib import admin

from .models import Entry, Task


@admin.register(Entry)
class EntryAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at", "attachment", "attachment_size"]
    search_fields = ["name", "message"]
    readonly_fields = ["attachment_size", "attachment_sha256"]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "attempts", "run_after", "finished_at"]
    list_filter = ["status", "name"]

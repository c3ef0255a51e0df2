"""URL configuration: the guestbook at /, the admin, and a health check for the deployer."""
from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path

from guestbook.views import healthz

urlpatterns = [
    path("", include("guestbook.urls")),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
]

if settings.DEBUG:
    # in production nginx serves MEDIA_URL from the media volume (ferry.toml proxy.serve)
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)

"""`ferry init` on a project as `django-admin startproject` lays it out (STATIC_ROOT set, the
secret key from the environment): the image it configures runs collectstatic at build time in
the sandbox, and serves the admin's login page with its static files' manifest in place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from ferry import config
from ferry.deploy import docker as D

pytestmark = pytest.mark.integration

FERRY = [sys.executable, "-m", "ferry"]
REPOSITORY = "127.0.0.1:5000/ferry-test/apps-mysite"
PORT = 31095
CONTAINER = "apps-mysite-init"

FILES = {
    "manage.py": '''#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""
import os
import sys


def main():
    """Run administrative tasks."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
''',
    "mysite/__init__.py": "",
    "mysite/settings.py": '''import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "mysite.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
WSGI_APPLICATION = "mysite.wsgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/db.sqlite3"}}
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}
USE_TZ = True
''',
    "mysite/urls.py": '''from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
''',
    "mysite/wsgi.py": '''import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()
''',
    "requirements.txt": "Django==5.2.8\nasgiref==3.10.0\nsqlparse==0.5.3\ngunicorn==23.0.0\npackaging==25.0\n",
}


@pytest.fixture
def mysite(tmp_path):
    app = tmp_path / "mysite"
    for rel, text in FILES.items():
        p = app / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return app


@pytest.fixture
def container(docker_cli):
    yield CONTAINER
    subprocess.run([*docker_cli, "rm", "-f", CONTAINER], capture_output=True)


def test_init_configures_a_django_project_whose_image_collects_static_at_build(mysite, local_target, docker_cli,
                                                                               container):
    r = subprocess.run([*FERRY, "init", "--json"], capture_output=True, text=True, cwd=mysite, timeout=120)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)["plan"]
    assert plan["entrypoint"] == ["gunicorn", "--bind", "127.0.0.1:{port}", "mysite.wsgi:application"]
    assert plan["build"] == [["python3", "manage.py", "collectstatic", "--noinput"]]
    assert plan["release_command"] == ["python3", "manage.py", "migrate", "--noinput"]
    assert plan["secrets"] == ["DJANGO_SECRET_KEY"] and plan["health_path"] == "/admin/login/"

    toml = mysite / "ferry.toml"
    toml.write_text(toml.read_text().replace('repository = "127.0.0.1:5000/mysite"', f'repository = "{REPOSITORY}"'))
    built = subprocess.run([*FERRY, "build", "--push", "--json"], capture_output=True, text=True, cwd=mysite,
                           timeout=900, env=os.environ)
    assert built.returncode == 0, built.stderr[-3000:]
    out = json.loads(built.stdout)
    assert [layer["role"] for layer in out["layers"]][-1] == "build", out["layers"]
    image = out["image"]

    cfg = config.load(toml)
    before, after = D.entrypoint_override(cfg, PORT)
    started = subprocess.run([*docker_cli, "run", "--detach", "--name", container, "--network", "host",
                              "--env", "DJANGO_SECRET_KEY=integration-test-only", *before, image, *after],
                             capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 30
    page = None
    while time.monotonic() < deadline:
        try:
            page = httpx.get(f"http://127.0.0.1:{PORT}/admin/login/", timeout=2, trust_env=False)
            break
        except httpx.TransportError:
            time.sleep(0.2)
    logs = subprocess.run([*docker_cli, "logs", container], capture_output=True, text=True)
    assert page is not None, logs.stdout + logs.stderr
    assert page.status_code == 200, page.text[:500] + logs.stderr[-2000:]
    # {% static %} resolved through the manifest collectstatic wrote at build time: hashed names
    assert "/static/admin/css/base." in page.text and ".css" in page.text
    assert "/static/admin/css/base.css" not in page.text

"""`ferry init`: small fixture trees (the layouts the frameworks' own starters make) → the
plan, the ferry.toml text, and the rules (never overwrite, clear errors)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ferry import init as I
from ferry.config import parse
from ferry.errors import ConfigError


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def plan(root: Path, files: dict[str, str]) -> I.Plan:
    return I.detect(I.scan(tree(root, files)))


MANAGE = '''#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "%s")
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
'''

DJANGO = {
    "manage.py": MANAGE % "mysite.settings",
    "mysite/__init__.py": "",
    "mysite/settings.py": '''import os
from pathlib import Path
BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DEBUG = os.environ.get("DEBUG") == "1"
INSTALLED_APPS = ["django.contrib.admin", "django.contrib.auth", "django.contrib.staticfiles", "polls"]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
''',
    "mysite/urls.py": '''from django.contrib import admin
from django.urls import include, path
from polls import views
urlpatterns = [path("healthz/", views.healthz), path("polls/", include("polls.urls")), path("admin/", admin.site.urls)]
''',
    "mysite/wsgi.py": "import os\nfrom django.core.wsgi import get_wsgi_application\napplication = get_wsgi_application()\n",
    "mysite/asgi.py": "from django.core.asgi import get_asgi_application\napplication = get_asgi_application()\n",
    "polls/__init__.py": "",
    "polls/views.py": "from django.http import HttpResponse\ndef healthz(request):\n    return HttpResponse('ok')\n",
    "polls/migrations/0001_initial.py": "from django.db import migrations\n",
    "requirements.txt": "Django==5.2.8\ngunicorn==23.0.0\nwhitenoise==6.11.0\n",
}


def test_a_django_project_gets_gunicorn_on_its_wsgi_module_collectstatic_and_migrate(tmp_path):
    p = plan(tmp_path, DJANGO)
    assert p == I.Plan(
        framework="django", name=tmp_path.name.lower().replace("_", "-")[:40].strip("-"), python="3.11",
        python_why="nothing asks for a version: ferry's default base", source=".",
        requirements="requirements.txt",
        requirements_why="requirements.txt: its lines (pin every version for a reproducible layer)",
        entrypoint=("gunicorn", "--bind", "127.0.0.1:{port}", "mysite.wsgi:application"),
        health_path="/healthz/",
        build=(("python3", "manage.py", "collectstatic", "--noinput"),),
        build_env={"DJANGO_SETTINGS_MODULE": "mysite.settings", "DJANGO_SECRET_KEY": "ferry-build-only"},
        release_command=("python3", "manage.py", "migrate", "--noinput"),
        secrets=("DJANGO_SECRET_KEY",),
        notes=("ALLOWED_HOSTS must accept 127.0.0.1 (ferry's health check) and app.domain",),
    )


def test_django_with_a_settings_package_in_a_subfolder_and_no_static_root(tmp_path):
    files = {
        "backend/manage.py": MANAGE % "config.settings.production",
        "backend/config/__init__.py": "",
        "backend/config/settings/__init__.py": "",
        "backend/config/settings/base.py": 'INSTALLED_APPS = ["django.contrib.auth"]\nWSGI_APPLICATION = "config.wsgi.application"\n',
        "backend/config/settings/production.py": "from .base import *  # noqa\nDEBUG = False\n",
        "backend/config/wsgi.py": "application = None\n",
        "requirements/base.txt": "django>=5.2\n",
        "requirements/production.txt": "-r base.txt\ngunicorn==23.0.0\n",
    }
    p = plan(tmp_path, files)
    assert p.source == "backend"
    assert p.requirements == "requirements/production.txt"
    assert p.entrypoint == ("gunicorn", "--bind", "127.0.0.1:{port}", "config.wsgi:application")
    assert p.build == () and p.health_path == "/"
    assert p.build_env == {"DJANGO_SETTINGS_MODULE": "config.settings.production"}
    assert any("no STATIC_ROOT" in n for n in p.notes)
    assert not any("gunicorn" in n for n in p.notes), "gunicorn comes from the -r'd file's sibling"


def test_a_manage_py_without_its_settings_default_is_a_clear_error(tmp_path):
    files = {**DJANGO, "manage.py": "import django\nfrom django.core.management import execute_from_command_line\n"}
    with pytest.raises(ConfigError, match=r"manage.py: no DJANGO_SETTINGS_MODULE default in it \(set it as django-admin"):
        plan(tmp_path, files)


FASTAPI_MAIN = '''from fastapi import FastAPI

app = FastAPI(title="items")


@app.get("/api/health")
def health():
    return {"ok": True}
'''


def test_fastapi_with_uv_lock_and_fastapi_cli_runs_fastapi_run_on_the_lock_python(tmp_path):
    files = {
        "pyproject.toml": '[project]\nname = "Items_API"\nversion = "0.1.0"\nrequires-python = ">=3.12"\n'
                          'dependencies = ["fastapi[standard]>=0.115"]\n',
        "uv.lock": 'version = 1\nrequires-python = ">=3.12"\n\n[[package]]\nname = "fastapi"\nversion = "0.121.0"\n\n'
                   '[[package]]\nname = "fastapi-cli"\nversion = "0.0.14"\n\n[[package]]\nname = "uvicorn"\nversion = "0.38.0"\n',
        "app/__init__.py": "",
        "app/main.py": FASTAPI_MAIN,
    }
    p = plan(tmp_path, files)
    assert p.framework == "fastapi" and p.name == "items-api"
    assert p.python == "3.13"
    assert p.python_why == "pyproject.toml requires-python >=3.12, pyproject.toml's requires-python >=3.12"
    assert p.requirements == "pyproject.toml" and "uv.lock" in p.requirements_why
    assert p.entrypoint == ("fastapi", "run", "app/main.py", "--host", "127.0.0.1", "--port", "{port}")
    assert p.health_path == "/api/health" and p.notes == ()


def test_fastapi_from_requirements_runs_uvicorn_and_its_factory_with_factory_flag(tmp_path):
    files = {"requirements.txt": "fastapi==0.121.0\nuvicorn==0.38.0\n",
             "service/__init__.py": "",
             "service/api.py": "from fastapi import FastAPI\n\n\ndef create_app() -> FastAPI:\n    return FastAPI(docs_url=None)\n"}
    p = plan(tmp_path, files)
    assert p.entrypoint == ("uvicorn", "--factory", "service.api:create_app", "--host", "127.0.0.1", "--port", "{port}")
    assert p.health_path == "/openapi.json"


def test_fastapi_without_a_server_says_to_add_uvicorn(tmp_path):
    p = plan(tmp_path, {"requirements.txt": "fastapi\n", "main.py": FASTAPI_MAIN.replace("/api/health", "/items")})
    assert p.entrypoint == ("uvicorn", "main:app", "--host", "127.0.0.1", "--port", "{port}")
    assert p.health_path == "/docs"
    assert p.notes == ("add uvicorn to requirements.txt: it serves the ASGI application; without it the build "
                       "stops at the entrypoint check",)


def test_starlette_runs_uvicorn_on_its_application(tmp_path):
    files = {"pylock.toml": 'lock-version = "1.0"\nrequires-python = ">=3.11"\n[[packages]]\nname = "starlette"\n'
                            '[[packages]]\nname = "uvicorn"\n',
             "src/chat/__init__.py": "",
             "src/chat/app.py": "from starlette.applications import Starlette\nfrom starlette.routing import Route\n"
                                "application = Starlette(routes=[Route('/ping', None)])\n"}
    p = plan(tmp_path, files)
    assert p.requirements == "pylock.toml"
    assert p.entrypoint == ("uvicorn", "chat.app:application", "--app-dir", "src", "--host", "127.0.0.1", "--port", "{port}")


def test_flask_module_app_runs_gunicorn_and_a_missing_gunicorn_is_a_note(tmp_path):
    files = {"requirements.txt": "Flask==3.1.2  # the web framework\n",
             "app.py": "from flask import Flask\napp = Flask(__name__)\n\n@app.route('/')\ndef index():\n    return 'hi'\n"}
    p = plan(tmp_path, files)
    assert p.entrypoint == ("gunicorn", "--bind", "127.0.0.1:{port}", "app:app")
    assert p.notes == ("add gunicorn to requirements.txt: it serves the WSGI application; without it the build "
                       "stops at the entrypoint check",)


def test_flask_app_factory_in_a_package_is_gunicorns_factory_call(tmp_path):
    files = {"pyproject.toml": '[project]\nname = "flaskr"\nversion = "1.0.0"\ndependencies = ["flask", "gunicorn"]\n',
             "flaskr/__init__.py": "import os\nfrom flask import Flask\n\n\ndef create_app(test_config=None):\n"
                                   "    app = Flask(__name__)\n    return app\n",
             "tests/test_factory.py": "from flaskr import create_app\napp = create_app()\n"}
    p = plan(tmp_path, files)
    assert p.name == "flaskr"
    assert p.entrypoint == ("gunicorn", "--bind", "127.0.0.1:{port}", "flaskr:create_app()")
    assert p.requirements == "pyproject.toml" and "not reproducible" in p.requirements_why


@pytest.mark.parametrize("pinned, requires, want", [
    ("3.14\n", None, "3.14"),
    ("3.13.5\n", ">=3.10", "3.13"),
    (None, ">=3.10,<3.14", "3.11"),
    (None, ">=3.14", "3.14"),
])
def test_python_choice_is_the_oldest_stable_base_every_constraint_accepts(tmp_path, pinned, requires, want):
    files = {"requirements.txt": "flask\ngunicorn\n", "app.py": "from flask import Flask\napp = Flask(__name__)\n"}
    if pinned:
        files[".python-version"] = pinned
    if requires:
        files["pyproject.toml"] = f'[project]\nname = "x"\nversion = "1"\nrequires-python = "{requires}"\n'
    assert plan(tmp_path, files).python == want


def test_a_python_no_base_has_names_who_asks_and_the_bases(tmp_path):
    files = {"requirements.txt": "flask\n", "app.py": "from flask import Flask\napp = Flask(__name__)\n",
             ".python-version": "3.12\n"}
    with pytest.raises(ConfigError, match=r"no ferry base has a Python that \.python-version '3\.12' accepts "
                                          r"\(bases: 3\.11, 3\.13, 3\.14\) \(set \.python-version to 3\.11 "):
        plan(tmp_path, files)
    del files[".python-version"]
    files["pyproject.toml"] = '[project]\nname = "x"\nversion = "1"\nrequires-python = ">=3.15"\n'
    with pytest.raises(ConfigError, match=r"pyproject.toml requires-python '>=3.15' accepts .* \(widen the constraint"):
        plan(tmp_path / "newer", files)


@pytest.mark.parametrize("files, message", [
    ({"app.py": "from flask import Flask\napp = Flask(__name__)\n"}, r"no requirements.txt, uv.lock, pylock.toml"),
    ({"pyproject.toml": '[tool.poetry]\nname = "x"\n', "poetry.lock": "",
      "app.py": "from flask import Flask\napp = Flask(__name__)\n"}, r"ferry does not read poetry.lock .*poetry export"),
    ({"pyproject.toml": '[project]\nname = "x"\n[tool.uv.workspace]\nmembers = ["apps/*"]\n', "uv.lock": "version = 1\n",
      "apps/a/pyproject.toml": '[project]\nname = "a"\n', "apps/a/main.py": "from fastapi import FastAPI\napp = FastAPI()\n",
      "apps/b/pyproject.toml": '[project]\nname = "b"\n', "apps/b/main.py": "from flask import Flask\napp = Flask(__name__)\n"},
     r"the uv workspace has web apps in several members \(apps/a, apps/b\)"),
    ({"requirements.txt": "requests\n", "cli.py": "import requests\n"}, r"no Django, FastAPI, Starlette or Flask application"),
])
def test_what_init_cannot_decide_is_a_clear_error(tmp_path, files, message):
    with pytest.raises(ConfigError, match=message):
        plan(tmp_path, files)


def test_scan_prunes_virtualenvs_and_vcs_and_reads_only_what_detect_needs(tmp_path):
    tree(tmp_path, {".venv/lib/python3.11/site-packages/flask/app.py": "app = Flask(__name__)\n",
                    ".git/config": "", "node_modules/x/index.js": "", "app.py": "x = 1\n", "static/logo.svg": "<svg/>"})
    f = I.scan(tmp_path)
    assert f.files == ("app.py", "static/logo.svg")
    assert set(f.texts) == {"app.py"}


def test_the_rendered_ferry_toml_passes_ferrys_own_checks_and_says_why(tmp_path):
    p = plan(tmp_path, DJANGO)
    text = I.render(p)
    cfg = parse(tomllib.loads(text), tmp_path / "ferry.toml")
    assert cfg.image.entrypoint == p.entrypoint and cfg.image.build == p.build
    assert cfg.image.base == "127.0.0.1:5000/ferry/python:3.11" and cfg.image.python == "3.11"
    assert cfg.deploy.release_command == ("python3", "manage.py", "migrate", "--noinput")
    assert cfg.deploy.secrets == ("DJANGO_SECRET_KEY",) and cfg.deploy.health.path == "/healthz/"
    assert "# {port} is each colour's own port" in text
    assert "# - ALLOWED_HOSTS must accept 127.0.0.1" in text


def test_init_writes_once_and_never_overwrites(tmp_path):
    tree(tmp_path, DJANGO)
    r = I.init(tmp_path)
    assert r["path"] == str(tmp_path / "ferry.toml") and r["plan"]["framework"] == "django"
    first = (tmp_path / "ferry.toml").read_text()
    (tmp_path / "ferry.toml").write_text(first + "# mine\n")
    with pytest.raises(ConfigError, match=r"ferry.toml already exists: ferry init never overwrites a file"):
        I.init(tmp_path)
    assert (tmp_path / "ferry.toml").read_text() == first + "# mine\n"


def test_a_failed_detection_writes_nothing(tmp_path):
    tree(tmp_path, {"app.py": "print('hi')\n", "requirements.txt": "requests\n"})
    with pytest.raises(ConfigError):
        I.init(tmp_path)
    assert not (tmp_path / "ferry.toml").exists()


def test_a_uv_workspace_like_the_fastapi_full_stack_template_names_its_member(tmp_path):
    files = {
        "pyproject.toml": '[project]\nname = "full-stack-fastapi-template"\nversion = "0.1.0"\nrequires-python = ">=3.10"\n'
                          '[tool.uv.workspace]\nmembers = ["backend"]\n',
        "uv.lock": 'version = 1\nrequires-python = ">=3.10"\n\n[[package]]\nname = "app"\nversion = "0.1.0"\n'
                   'source = { editable = "backend" }\ndependencies = [\n  { name = "fastapi", extra = ["standard"] },\n]\n\n'
                   '[[package]]\nname = "fastapi"\nversion = "0.121.0"\n\n[[package]]\nname = "fastapi-cli"\nversion = "0.0.14"\n',
        "backend/pyproject.toml": '[project]\nname = "app"\nversion = "0.1.0"\ndependencies = ["fastapi[standard]<1.0.0,>=0.114.2"]\n',
        "backend/app/__init__.py": "",
        "backend/app/main.py": "from fastapi import FastAPI\nfrom app.api.main import api_router\n\n"
                               "app = FastAPI(title='x', openapi_url='/api/v1/openapi.json')\napp.include_router(api_router, prefix='/api/v1')\n",
        "backend/app/api/__init__.py": "",
        "backend/app/api/routes/utils.py": "from fastapi import APIRouter\nrouter = APIRouter(prefix='/utils')\n\n"
                                           "@router.get('/health-check/')\nasync def health_check() -> bool:\n    return True\n",
        "frontend/package.json": "{}",
    }
    p = plan(tmp_path, files)
    assert (p.name, p.source, p.package, p.requirements) == ("full-stack-fastapi-template", "backend", "app", "pyproject.toml")
    assert p.entrypoint == ("fastapi", "run", "app/main.py", "--host", "127.0.0.1", "--port", "{port}")
    # a router's route has a prefix elsewhere: only the app's own routes are trusted
    assert p.health_path == "/docs"
    cfg = parse(tomllib.loads(I.render(p)), tmp_path / "ferry.toml")
    assert cfg.image.package == "app" and cfg.image.source == "backend"


def test_cookiecutter_django_deploys_production_settings_with_build_placeholders(tmp_path):
    files = {
        "manage.py": MANAGE % "config.settings.local",
        "config/__init__.py": "",
        "config/settings/__init__.py": "",
        "config/settings/base.py": 'import environ\nenv = environ.Env()\nDATABASES = {"default": env.db("DATABASE_URL")}\n'
                                   'STATIC_ROOT = "/app/staticfiles"\nROOT_URLCONF = "config.urls"\n'
                                   'WSGI_APPLICATION = "config.wsgi.application"\n',
        "config/settings/local.py": 'from .base import *\nSECRET_KEY = env("DJANGO_SECRET_KEY", default="x")\n',
        "config/settings/production.py": 'from .base import *\nSECRET_KEY = env("DJANGO_SECRET_KEY")\n'
                                         'CACHES = {"default": {"LOCATION": env("REDIS_URL")}}\n'
                                         'ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["example.com"])\n',
        "config/urls.py": 'from django.urls import path\nurlpatterns = [path("health/", lambda r: None)]\n',
        "config/wsgi.py": "application = None\n",
        "requirements/base.txt": "django==5.2.8\ndjango-environ==0.12.0\n",
        "requirements/production.txt": "-r base.txt\ngunicorn==23.0.0\n",
        "requirements/local.txt": "-r base.txt\n",
    }
    p = plan(tmp_path, files)
    assert p.build_env == {"DJANGO_SETTINGS_MODULE": "config.settings.production",
                           "DATABASE_URL": "sqlite:////tmp/ferry-build.sqlite3",
                           "DJANGO_SECRET_KEY": "ferry-build-only", "REDIS_URL": "redis://127.0.0.1:6379/0"}
    assert p.secrets == ("DATABASE_URL", "DJANGO_SECRET_KEY", "REDIS_URL")
    assert p.entrypoint == ("gunicorn", "--bind", "127.0.0.1:{port}", "config.wsgi:application")
    assert p.health_path == "/health/"
    assert p.notes[0] == "manage.py defaults to config.settings.local; the image uses config.settings.production"


@pytest.mark.parametrize("requirements, packages", [
    ("psycopg2-binary==2.9.11\npdf2image==1.17.0\npydub\n", (("ffmpeg", "pydub"), ("poppler-utils", "pdf2image"))),
    ("moviepy==2.2.1\nimageio-ffmpeg==0.6.0\n", ()),
])
def test_dependencies_that_run_a_system_program_add_its_debian_package(tmp_path, requirements, packages):
    files = {**DJANGO, "requirements.txt": "Django==5.2.8\ngunicorn==23.0.0\n" + requirements}
    p = plan(tmp_path, files)
    assert p.packages == packages
    cfg = parse(tomllib.loads(I.render(p)), tmp_path / "ferry.toml")
    assert cfg.image.packages == tuple(d for d, _ in packages)


@pytest.mark.parametrize("requirements, packages", [
    ("psycopg==3.2.12\n", (("libpq5", "psycopg"),)),
    ("psycopg[binary]==3.2.12\n", ()),
    ("psycopg==3.2.12\npsycopg-binary==3.2.12\n", ()),
])
def test_plain_psycopg_gets_libpq5_from_debian(tmp_path, requirements, packages):
    # the pure-Python psycopg finds libpq through ctypes.util.find_library, which reads the
    # /etc/ld.so.cache the packages layer carries
    p = plan(tmp_path, {**DJANGO, "requirements.txt": "Django==5.2.8\ngunicorn==23.0.0\n" + requirements})
    assert p.packages == packages
    assert not any("psycopg" in n for n in p.notes)

"""The app as a package: dist-info, console scripts and import roots from pyproject.toml alone."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from ferry.errors import BuildError
from ferry.images import deps as deps_mod
from ferry.images import project
from ferry.images.builder import BuildSpec, build
from ferry.images.cache import Cache
from ferry.images.layers import Entry, gzip_bytes, tar_bytes
from ferry.images.oci import DOCKER_LAYER_GZIP, OCI_CONFIG, Blob, Image, Platform, canonical_json, sha256

PY = "/usr/bin/python3"


def write(p: Path, text: str = "") -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def files(pi) -> dict[str, bytes]:
    return {e.path: e.data for e in pi.entries}


TEMPLATE = '''[project]
name = "app"
version = "0.1.0"
description = ""
requires-python = ">=3.10,<4.0"
dependencies = ["fastapi[standard]<1.0.0,>=0.114.2", "psycopg[binary]<4.0.0,>=3.1.13"]

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"
'''


def test_the_fastapi_template_member_gets_its_dist_info_and_needs_no_extra_path(tmp_path):
    backend = tmp_path / "backend"
    py = write(backend / "pyproject.toml", TEMPLATE)
    write(backend / "app" / "__init__.py")
    write(backend / "app" / "main.py", "app = None\n")
    pi = project.entries_for(py, backend, "/app", "app/deps", PY)
    assert (pi.name, pi.version, pi.pythonpath, pi.scripts, pi.modules) == ("app", "0.1.0", (), (), ("app",))
    f = files(pi)
    assert sorted(f) == [f"app/deps/app-0.1.0.dist-info/{n}" for n in
                         ("INSTALLER", "METADATA", "RECORD", "REQUESTED", "direct_url.json", "top_level.txt")]
    assert f["app/deps/app-0.1.0.dist-info/METADATA"].decode() == (
        "Metadata-Version: 2.1\nName: app\nVersion: 0.1.0\nRequires-Python: >=3.10,<4.0\n"
        "Requires-Dist: fastapi[standard]<1.0.0,>=0.114.2\nRequires-Dist: psycopg[binary]<4.0.0,>=3.1.13\n")
    assert json.loads(f["app/deps/app-0.1.0.dist-info/direct_url.json"]) == {"dir_info": {"editable": True},
                                                                             "url": "file:///app"}
    # with the workspace root as the source, the member's folder is the import root
    at_root = project.entries_for(py, tmp_path, "/app", "app/deps", PY)
    assert at_root.pythonpath == ("/app/backend",)


def test_console_scripts_and_entry_points_are_installed_as_uv_sync_would(tmp_path):
    py = write(tmp_path / "pyproject.toml", '''[project]
name = "My.Service"
dynamic = ["version"]
description = "Serves things"
license = "MIT"
authors = [{ name = "Jörg", email = "j@example.test" }, { name = "Team" }]
keywords = ["web", "api"]
dependencies = ["gunicorn==22.0.0"]
[project.optional-dependencies]
pg = ["psycopg[binary]==3.2.6; python_version >= '3.11'"]
[project.urls]
Homepage = "https://example.test"
[project.scripts]
my-service = "my_service.cli:main"
migrate = "my_service.db:commands.migrate"
[project.gui-scripts]
viewer = "my_service.gui:run"
[project.entry-points."flask.commands"]
seed = "my_service.db:seed"
[build-system]
requires = ["uv_build>=0.8"]
build-backend = "uv_build"
''')
    write(tmp_path / "src" / "my_service" / "__init__.py", '__version__ = "2.3.4"\n')
    pi = project.entries_for(py, tmp_path, "/app", "app/deps", PY)
    assert (pi.version, pi.pythonpath, pi.scripts, pi.modules) == ("2.3.4", ("/app/src",),
                                                                  ("my-service", "migrate", "viewer"), ("my_service",))
    f = files(pi)
    info = "app/deps/my_service-2.3.4.dist-info"
    assert f["app/deps/bin/migrate"].decode() == (
        "#!/usr/bin/python3\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom my_service.db import commands\n"
        "if __name__ == \"__main__\":\n    sys.argv[0] = re.sub(r\"(-script\\.pyw|\\.exe)?$\", \"\", sys.argv[0])\n"
        "    sys.exit(commands.migrate())\n")
    assert next(e for e in pi.entries if e.path == "app/deps/bin/migrate").mode == 0o755
    assert f[f"{info}/entry_points.txt"].decode() == (
        "[console_scripts]\nmy-service = my_service.cli:main\nmigrate = my_service.db:commands.migrate\n\n"
        "[gui_scripts]\nviewer = my_service.gui:run\n\n[flask.commands]\nseed = my_service.db:seed\n")
    assert f[f"{info}/METADATA"].decode() == (
        "Metadata-Version: 2.4\nName: My.Service\nVersion: 2.3.4\nSummary: Serves things\nLicense-Expression: MIT\n"
        "Author: Team\nAuthor-email: Jörg <j@example.test>\nKeywords: web,api\nProject-URL: Homepage, https://example.test\n"
        "Requires-Dist: gunicorn==22.0.0\nProvides-Extra: pg\n"
        "Requires-Dist: psycopg[binary]==3.2.6 ; (python_version >= '3.11') and extra == \"pg\"\n")
    # RECORD lists every file with its hash and size, itself without
    record = f[f"{info}/RECORD"].decode().splitlines()
    assert record[-1] == "my_service-2.3.4.dist-info/RECORD,,"
    for line in record[:-1]:
        rel, digest, size = line.rsplit(",", 2)
        data = f[f"app/deps/{rel}"]
        assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert int(size) == len(data)
    assert len(record) == len(f)


@pytest.mark.parametrize("config, layout, root, modules", [
    ('[tool.hatch.build.targets.wheel]\npackages = ["src/svc"]\n', "src/svc/__init__.py", "/app/src", ("svc",)),
    ('[tool.setuptools]\npackage-dir = {"" = "lib"}\n', "lib/svc/__init__.py", "/app/lib", ("svc",)),
    ('[tool.setuptools.packages.find]\nwhere = ["src"]\n', "src/svc/__init__.py", "/app/src", ("svc",)),
    ('[tool.flit.module]\nname = "svc_core"\n', "src/svc_core/__init__.py", "/app/src", ("svc_core",)),
    ('[tool.pdm.build]\npackage-dir = "source"\n', "source/svc/__init__.py", "/app/source", ("svc",)),
    ('[tool.poetry]\npackages = [{ include = "svc", from = "code" }]\n', "code/svc/__init__.py", "/app/code", ("svc",)),
    ('[tool.uv.build-backend]\nmodule-root = ""\nmodule-name = "svc"\n', "svc/__init__.py", None, ("svc",)),
    ("", "svc.py", None, ("svc",)),
])
def test_the_import_root_follows_the_build_backends_settings(tmp_path, config, layout, root, modules):
    py = write(tmp_path / "pyproject.toml", f'[project]\nname = "svc"\nversion = "1"\n'
                                            f'[build-system]\nrequires = ["x"]\nbuild-backend = "x"\n{config}')
    write(tmp_path / layout)
    pi = project.entries_for(py, tmp_path, "/app", "app/deps", PY)
    assert pi.pythonpath == ((root,) if root else ())
    if modules:
        assert pi.modules == modules


def test_setuptools_package_dir_finds_the_packages_there(tmp_path):
    py = write(tmp_path / "pyproject.toml", '[project]\nname = "svc"\ndynamic = ["version"]\n'
                                            '[build-system]\nbuild-backend = "setuptools.build_meta"\n'
                                            '[tool.setuptools]\npackage-dir = {"" = "lib"}\n'
                                            '[tool.setuptools.dynamic]\nversion = {attr = "svc.about.VERSION"}\n')
    write(tmp_path / "lib" / "svc" / "__init__.py")
    write(tmp_path / "lib" / "svc" / "about.py", 'VERSION = "4.5"\n')
    write(tmp_path / "tests" / "test_x.py")
    pi = project.entries_for(py, tmp_path, "/app", "app/deps", PY)
    # package-dir alone: setuptools' discovery in that folder; the version read, not run
    assert (pi.version, pi.pythonpath, pi.modules) == ("4.5", ("/app/lib",), ("svc",))


def test_a_project_that_is_not_a_package_installs_nothing(tmp_path):
    py = write(tmp_path / "pyproject.toml", '[project]\nname = "svc"\nversion = "1"\n[project.scripts]\nx = "svc:main"\n')
    assert project.entries_for(py, tmp_path, "/app", "app/deps", PY) is None  # no build system: uv sync skips it
    write(py, TEMPLATE + "[tool.uv]\npackage = false\n")
    assert project.entries_for(py, tmp_path, "/app", "app/deps", PY) is None
    write(py, '[tool.ruff]\nline-length = 100\n')
    assert project.entries_for(py, tmp_path, "/app", "app/deps", PY) is None


def test_a_package_whose_code_is_missing_or_outside_the_source_is_refused(tmp_path):
    py = write(tmp_path / "svc" / "pyproject.toml", TEMPLATE)
    with pytest.raises(BuildError, match=r"pyproject.toml: cannot find the code of the package 'app' "
                                         r"\(looked for app/ and src/app/") as e:
        project.entries_for(py, tmp_path / "svc", "/app", "app/deps", PY)
    assert "package = false" in e.value.hint
    write(tmp_path / "svc" / "app" / "__init__.py")
    with pytest.raises(BuildError, match=r"the app's package \(app\) is in .*svc, outside image.source") as e:
        project.entries_for(py, tmp_path / "other", "/app", "app/deps", PY)
    assert "image.source" in e.value.hint
    write(py, TEMPLATE + '[project.scripts]\nbad = "app.cli"\n')
    with pytest.raises(BuildError, match=r"pyproject.toml: \[project.scripts\] bad = 'app.cli' is not 'module:function'"):
        project.entries_for(py, tmp_path / "svc", "/app", "app/deps", PY)


# --- wired into the builder ---------------------------------------------------------------------

def base_image(platform: Platform) -> Image:
    tar = tar_bytes([Entry("usr/bin/python3", data=b"#!fake\n", mode=0o755)])
    cfg = {"architecture": platform.architecture, "os": "linux",
           "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": {"dev.ferry.python": "/usr/local/bin/python3.11"}},
           "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]}, "history": [{"created_by": "base"}]}
    layer = gzip_bytes(tar)
    return Image(Blob.from_bytes(canonical_json(cfg), OCI_CONFIG), (Blob(sha256(layer), len(layer), DOCKER_LAYER_GZIP),),
                 platform)


def test_the_builder_puts_the_package_in_the_source_layer_and_its_root_on_pythonpath(tmp_path, monkeypatch):
    def fake_install(spec, target, work, uv_cache, environ=None, runner=None):
        (target / "gunicorn").mkdir(parents=True)
        (target / "gunicorn" / "__init__.py").write_text("")
        (target / "gunicorn-22.0.0.dist-info").mkdir()
        (target / "gunicorn-22.0.0.dist-info" / "METADATA").write_text("Name: gunicorn\nVersion: 22.0.0\n")
        return "fake"

    monkeypatch.setattr(deps_mod, "install", fake_install)
    src = tmp_path / "svc"
    write(src / "pyproject.toml", '[project]\nname = "svc"\nversion = "1.0"\ndependencies = ["gunicorn==22.0.0"]\n'
                                  '[project.scripts]\nsvc-serve = "svc.main:serve"\n'
                                  '[build-system]\nbuild-backend = "hatchling.build"\n')
    write(src / "requirements.txt", "gunicorn==22.0.0\n")
    write(src / "src" / "svc" / "__init__.py")
    write(src / "src" / "svc" / "main.py", "def serve(): return 0\n")
    spec = BuildSpec(app="svc", repository="127.0.0.1:5000/svc", base="b", source=src, entrypoint=("svc-serve",),
                     requirements=src / "requirements.txt")
    r = build(spec, fetch_base=base_image, cache=Cache(tmp_path / "cache"))
    cfg = r.image.config_json()
    env = dict(e.split("=", 1) for e in cfg["config"]["Env"])
    assert env["PYTHONPATH"] == "/app:/app/src:/app/deps" and env["PATH"].startswith("/app/deps/bin:")
    layer = gzip.decompress(Path(Cache(tmp_path / "cache").blob_path(r.image.layers[-1].digest)).read_bytes())
    with tarfile.open(fileobj=io.BytesIO(layer)) as t:
        names = t.getnames()
        wrapper = t.extractfile("app/deps/bin/svc-serve").read().decode()
    assert "app/src/svc/main.py" in names and "app/deps/svc-1.0.dist-info/entry_points.txt" in names
    assert wrapper.startswith("#!/usr/local/bin/python3.11\n") and "from svc.main import serve" in wrapper
    # the version is the source layer's business: a new version changes only that layer
    first = r.image.layers
    write(src / "pyproject.toml", (src / "pyproject.toml").read_text().replace('version = "1.0"', 'version = "1.1"'))
    again = build(spec, fetch_base=base_image, cache=Cache(tmp_path / "cache")).image.layers
    assert again[:-1] == first[:-1] and again[-1] != first[-1]

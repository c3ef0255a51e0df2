"""The example apps' ferry.toml files: valid, saying what their READMEs say, and deployable on
the local target beside the sample (their own ports)."""

from __future__ import annotations

from pathlib import Path

from ferry.config import load

ROOT = Path(__file__).resolve().parents[3]


def ports(cfg) -> set[int]:
    return {*cfg.deploy.colours.values(), cfg.proxy.http_port, cfg.proxy.https_port}


def test_the_django_example_collects_static_migrates_and_runs_a_worker():
    cfg = load(ROOT / "examples/django/ferry.toml")
    src = cfg.resolve(cfg.image.source)
    assert (src / "manage.py").is_file() and (src / "mysite" / "settings.py").is_file()
    assert cfg.image.build == (("python3", "manage.py", "collectstatic", "--noinput"),)
    assert "SECRET_KEY" in cfg.image.build_env and cfg.deploy.secrets == ("SECRET_KEY",)
    assert cfg.deploy.release_command == ("python3", "manage.py", "migrate", "--noinput")
    assert cfg.deploy.volumes == {"data": "/data", "media": "/app/media"}
    assert cfg.image.env["DATA_DIR"] == "/data" and cfg.image.env["MEDIA_ROOT"] == "/app/media"
    assert cfg.processes["worker"].command == ("python3", "manage.py", "worker")
    assert cfg.proxy.serve == {"/media/": "media"}
    assert cfg.resolve(cfg.image.requirements).read_text().count("--hash=sha256:") > 10


def test_the_fastapi_example_is_a_locked_package_migrated_by_alembic():
    cfg = load(ROOT / "examples/fastapi/ferry.toml")
    src = cfg.resolve(cfg.image.source)
    assert cfg.image.requirements == "pyproject.toml" and (src / "uv.lock").is_file()
    assert cfg.image.entrypoint[:3] == ("fastapi", "run", "app/main.py") and "--port" not in cfg.image.entrypoint
    assert cfg.deploy.release_command == ("alembic", "upgrade", "head") and (src / "alembic.ini").is_file()
    assert cfg.deploy.volumes == {"data": "/data"} and cfg.image.env["DATA_DIR"] == "/data"


def test_the_examples_can_be_deployed_beside_the_sample_on_the_local_target():
    sample = load(ROOT / "ferry.toml")
    django, fastapi = (load(ROOT / f"examples/{name}/ferry.toml") for name in ("django", "fastapi"))
    assert len({sample.app.name, django.app.name, fastapi.app.name}) == 3
    assert not ports(sample) & ports(django) and not ports(sample) & ports(fastapi) and not ports(django) & ports(fastapi)
    for cfg in (django, fastapi):
        assert cfg.deploy.hosts == sample.deploy.hosts and cfg.deploy.docker_host == sample.deploy.docker_host

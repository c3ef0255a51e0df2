"""ferry.toml parsing: typed values, and errors that name the file, the key and the fix."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ferry.config import parse, parse_duration, read_secrets
from ferry.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def base(**overrides) -> dict:
    doc = tomllib.loads((ROOT / "ferry.toml").read_text())
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        if value is None:
            doc[section].pop(key, None)
        else:
            doc.setdefault(section, {})[key] = value
    return doc


def load(doc: dict):
    return parse(doc, ROOT / "ferry.toml")


def test_the_sample_config_loads_with_typed_values():
    cfg = load(base())
    assert cfg.app.name == "hello"
    assert cfg.image.entrypoint[0] == "python3"
    assert cfg.deploy.health.interval == 0.5
    assert cfg.deploy.keep_previous == 900.0
    assert cfg.deploy.colours == {"blue": 8081, "green": 8082}
    assert cfg.url == "http://127.0.0.1:8080"


def test_the_production_example_is_a_valid_stack_config_with_tls():
    from ferry.config import load as load_file

    cfg = load_file(ROOT / "examples/ferry-production.toml")
    assert cfg.deploy.stack == "dev" and not cfg.deploy.hosts
    assert cfg.tls.enabled and cfg.app.domain == "hello.example.com"
    assert cfg.image.auth == "ecr" and ".dkr.ecr." in cfg.image.repository
    assert (cfg.proxy.http_port, cfg.proxy.https_port) == (80, 443)
    # paths are relative to the file: the sample's source exists
    assert (cfg.root / cfg.image.source / "hello" / "__init__.py").is_file()
    assert (cfg.root / cfg.image.requirements).is_file()


@pytest.mark.parametrize("text,seconds", [("500ms", 0.5), ("1s", 1), ("15m", 900), ("2h", 7200), (3, 3.0)])
def test_durations(text, seconds):
    assert parse_duration(text, "x") == seconds


def test_unknown_key_is_an_error_naming_file_key_and_known_keys():
    with pytest.raises(ConfigError) as e:
        load(base(deploy__hostz=["x"]))
    assert "ferry.toml: deploy: unknown key 'hostz'" in str(e.value)
    assert "hosts" in str(e.value)


def test_unknown_section_is_an_error():
    doc = base()
    doc["deploi"] = {}
    with pytest.raises(ConfigError, match=r"\[deploi\]: unknown section"):
        load(doc)


def test_same_port_for_both_colours_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as e:
        load(base(deploy__colours={"blue": 8081, "green": 8081}))
    assert "deploy.colours: ports must differ (blue=8081, green=8081)" in str(e.value)
    assert "give each colour its own port" in str(e.value)


def test_a_string_where_a_list_belongs_suggests_the_list():
    with pytest.raises(ConfigError) as e:
        load(base(deploy__hosts="root@1.2.3.4"))
    assert 'write ["root@1.2.3.4"]' in str(e.value)


def test_bad_duration_names_the_key():
    with pytest.raises(ConfigError, match=r"deploy.drain_timeout: expected a duration"):
        load(base(deploy__drain_timeout="soon"))


def test_missing_required_key():
    with pytest.raises(ConfigError, match=r"image.entrypoint: missing"):
        load(base(image__entrypoint=None))


def test_bad_app_name():
    with pytest.raises(ConfigError, match="app.name: 'Hello World' is not a valid name"):
        load(base(app__name="Hello World"))


def test_unsupported_platform():
    with pytest.raises(ConfigError, match="linux/riscv64"):
        load(base(image__platforms=["linux/riscv64"]))


def test_missing_source_directory():
    with pytest.raises(ConfigError, match="image.source: 'nowhere' is not a directory"):
        load(base(image__source="nowhere"))


def test_secrets_come_from_environment_then_env_file(tmp_path):
    env_file = tmp_path / "prod.env"
    env_file.write_text("# comment\nDB_URL=postgres://x\nAPI_KEY=from-file\n")
    cfg = load(base(deploy__secrets=["DB_URL", "API_KEY"], deploy__env_file=str(env_file)))
    assert read_secrets(cfg, {"API_KEY": "from-env"}) == {"DB_URL": "postgres://x", "API_KEY": "from-env"}


def test_a_missing_secret_says_how_to_set_it():
    cfg = load(base(deploy__secrets=["DB_URL"]))
    with pytest.raises(ConfigError, match=r"deploy.secrets: DB_URL is not set \(export DB_URL=\.\.\."):
        read_secrets(cfg, {})


def test_health_start_interval_is_a_duration_and_must_be_positive():
    doc = base()
    doc["deploy"]["health"] = {**doc["deploy"].get("health", {}), "start_interval": "50ms"}
    assert load(doc).deploy.health.start_interval == 0.05
    doc["deploy"]["health"]["start_interval"] = "0s"
    with pytest.raises(ConfigError, match="start_interval"):
        load(doc)


def test_build_inputs_are_patterns_of_source_files_read_by_build_steps():
    steps = [["python3", "manage.py", "collectstatic", "--noinput"]]
    cfg = load(base(image__build=steps, image__build_inputs=["static", "mysite/settings.py"]))
    assert cfg.image.build_inputs == ("static", "mysite/settings.py")
    assert load(base()).image.build_inputs == ()
    with pytest.raises(ConfigError, match="no image.build steps to read them"):
        load(base(image__build_inputs=["static"]))
    for bad in ("", "../outside/settings.py", "# static"):
        with pytest.raises(ConfigError, match="is not a pattern of source files"):
            load(base(image__build=steps, image__build_inputs=[bad]))

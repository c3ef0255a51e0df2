"""ferry's templates are package data (ferry/assets), and a repository's own override them
only where ferry.toml says so: proxy.templates template by template, monitoring.dir as a whole."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ferry import assets, nginx
from ferry.config import parse
from ferry.errors import ConfigError, FerryError
from ferry.monitoring import render
from ferry.monitoring.settings import generated_dir, settings

ROOT = Path(__file__).resolve().parents[3]


def cfg(tmp_path: Path, **sections) -> object:
    doc = tomllib.loads((ROOT / "ferry.toml").read_text())
    doc["image"]["source"] = str(ROOT / "examples" / "hello")
    doc["image"]["requirements"] = str(ROOT / "examples" / "hello" / "requirements.txt")
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    return parse(doc, tmp_path / "ferry.toml")


def test_assets_are_inside_the_package_not_beside_the_repository():
    pkg = Path(assets.__file__).parent
    assert assets.path("nginx") == pkg / "nginx"
    assert sorted(p.name for p in assets.path("nginx").glob("*.j2")) == [
        "limits.conf.j2", "proxy.conf.j2", "serve.conf.j2", "site.conf.j2", "tls.conf.j2", "upstream.conf.j2"]
    assert (assets.path("monitoring") / "prometheus.yml.j2").is_file()
    assert assets.path("nginx", "ffdhe2048.pem").read_text().startswith("-----BEGIN DH PARAMETERS-----")


def test_a_missing_asset_says_to_reinstall():
    with pytest.raises(FerryError, match=r"no nginx/nope\.j2 .*reinstall ferry"):
        assets.path("nginx", "nope.j2")


def test_without_proxy_templates_the_site_comes_from_the_package(tmp_path, monkeypatch):
    monkeypatch.delenv("FERRY_NGINX_TEMPLATES", raising=False)
    c = cfg(tmp_path)
    assert nginx.templates_dirs(c) == [assets.path("nginx")]
    assert f"include {nginx.app_dir(c)}/nginx/upstream.conf;" in nginx.render_site(c)


def test_proxy_templates_override_only_the_templates_the_repository_has(tmp_path, monkeypatch):
    monkeypatch.delenv("FERRY_NGINX_TEMPLATES", raising=False)
    own = tmp_path / "nginx"
    own.mkdir()
    (own / "proxy.conf.j2").write_text("# our own proxy for {{ app }}\nproxy_pass http://{{ upstream }};\n")
    c = cfg(tmp_path, proxy={"templates": "nginx"})
    assert nginx.templates_dirs(c) == [own, assets.path("nginx")]
    assert nginx.render_proxy(c) == "# our own proxy for hello\nproxy_pass http://ferry_hello;\n"
    # site.conf.j2 is not in the repository's folder: ferry's own is used
    assert "server_name" in nginx.render_site(c)


def test_proxy_templates_that_is_not_a_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"proxy.templates: 'nginx' is not a directory"):
        cfg(tmp_path, proxy={"templates": "nginx"})


def test_monitoring_templates_default_to_the_package_and_generated_files_to_the_repository(tmp_path):
    c = cfg(tmp_path)
    s = settings(c)
    assert s.templates == assets.path("monitoring")
    assert render.rule_templates(s) == ["app-accessories.yml.j2", "app-deploy.yml.j2", "app-slo.yml.j2", "host.yml.j2", "stack.yml.j2"]
    # `ferry monitoring render` never writes into ferry's package
    assert generated_dir(c) == tmp_path / "monitoring"


def test_monitoring_dir_replaces_the_packaged_templates_as_a_whole(tmp_path):
    own = tmp_path / "mon"
    (own / "rules").mkdir(parents=True)
    (own / "rules" / "mine.yml.j2").write_text("groups: []\n")
    c = cfg(tmp_path, monitoring={"dir": "mon"})
    s = settings(c)
    assert s.templates == own and generated_dir(c) == own
    assert render.rule_templates(s) == ["mine.yml.j2"]
    with pytest.raises(ConfigError, match=r"prometheus.yml.j2 is missing .*copy it from ferry's own"):
        render.prometheus_yml(s)

"""ferry as its users install it: a wheel built from this tree, installed into a fresh venv
outside the repository, run from an app's own directory. Nothing of the checkout is on the
path, so a template or asset still read from beside the source would be missing here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.integration

APP = "apps-wheel"
REPOSITORY = f"127.0.0.1:5000/ferry-test/{APP}"
MANIFESTS = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH or virtualenv pointing at the checkout;
    pip's and uv's own settings (index, CA) kept so dependencies install as on the machine."""
    keep = {k: v for k, v in os.environ.items()
            if k.startswith(("PIP_", "UV_", "SSL_CERT", "HTTP", "NO_PROXY", "no_proxy", "http")) or k in ("HOME", "LANG")}
    return {**keep, "PATH": "/usr/local/bin:/usr/bin:/bin", **extra}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv outside the repository with ferry installed from its wheel (and the core
    dependencies from the machine's index); returns the venv's directory."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    # only what the wheel is made of, so nothing else of the checkout can leak in
    shutil.copytree(ROOT / "ferry", src / "ferry", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
                       capture_output=True, text=True, timeout=600, env=clean_env(), cwd=tmp)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    (wheel,) = dist.glob("ferry-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=900, env=clean_env(), cwd=tmp)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return venv


@pytest.fixture
def app_dir(tmp_path, local_target) -> Path:
    """examples/hello copied out of the repository, with its own ferry.toml."""
    app = tmp_path / "app"
    shutil.copytree(ROOT / "examples" / "hello", app, ignore=shutil.ignore_patterns("__pycache__", ".ferry"))
    (app / "ferry.toml").write_text(f"""[app]
name = "{APP}"

[image]
repository = "{REPOSITORY}"
base = "{local_target['base_image']}"
source = "."
requirements = "requirements.txt"
entrypoint = ["python3", "-m", "gunicorn", "-c", "gunicorn.conf.py", "hello:app"]
platforms = ["linux/amd64"]

[deploy]
hosts = ["root@127.0.0.1:2222"]
colours = {{ blue = 31001, green = 31002 }}
""")
    return app


def test_the_installed_package_is_the_wheel_not_the_checkout(installed, app_dir):
    py = installed / "bin" / "python"
    r = subprocess.run([str(py), "-c", "import ferry, ferry.assets as a; print(ferry.__file__); print(a.path())"],
                       capture_output=True, text=True, env=clean_env(), cwd=app_dir, timeout=60)
    assert r.returncode == 0, r.stderr
    package, assets = r.stdout.split()
    site = str(installed / "lib")
    assert package.startswith(site) and assets.startswith(site), r.stdout
    assert str(ROOT) not in r.stdout


def test_ferry_from_the_wheel_builds_and_pushes_an_app_from_its_own_directory(installed, app_dir):
    r = subprocess.run([str(installed / "bin" / "ferry"), "build", "--push", "--json"],
                       capture_output=True, text=True, env=clean_env(), cwd=app_dir, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    digest = out["digest"]
    assert out["reference"] == f"{REPOSITORY}@{digest}"
    got = httpx.get(f"http://127.0.0.1:5000/v2/ferry-test/{APP}/manifests/{digest}",
                    headers={"Accept": MANIFESTS}, timeout=10, trust_env=False)
    assert got.status_code == 200 and got.headers["docker-content-digest"] == digest


def test_nginx_and_monitoring_templates_load_from_the_wheel(installed, app_dir):
    """The nginx site and the Prometheus config, rendered by the installed package for the
    app's ferry.toml, and the DH parameters it ships."""
    script = """
import json
from ferry import config, nginx
from ferry.certs import manage
from ferry.monitoring import render, settings
cfg = config.load("ferry.toml")
s = settings.settings(cfg)
print(json.dumps({
    "dirs": [str(d) for d in nginx.templates_dirs(cfg)],
    "site": nginx.render_site(cfg),
    "upstream": nginx.render_upstream(cfg, "blue", "r1"),
    "monitoring": str(s.templates),
    "prometheus": render.prometheus_yml(s),
    "rules": sorted(render.rules(s)),
    "dhparam": manage.dhparam().read_text(),
}))
"""
    r = subprocess.run([str(installed / "bin" / "python"), "-c", script],
                       capture_output=True, text=True, env=clean_env(), cwd=app_dir, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    site_packages = str(installed / "lib")
    assert len(out["dirs"]) == 1 and out["dirs"][0].startswith(site_packages), out["dirs"]
    assert out["dirs"][0].endswith("/ferry/assets/nginx")
    assert f"include /opt/ferry/{APP}/nginx/upstream.conf;" in out["site"]
    assert "server 127.0.0.1:31001" in out["upstream"]
    assert out["monitoring"].startswith(site_packages) and out["monitoring"].endswith("/ferry/assets/monitoring")
    assert "job_name: blackbox" in out["prometheus"]
    assert out["rules"] == [f"{APP}-accessories.yml", f"{APP}-deploy.yml", f"{APP}-slo.yml", "host.yml", "stack.yml"]
    assert out["dhparam"].startswith("-----BEGIN DH PARAMETERS-----")


def test_the_apps_own_nginx_template_overrides_the_wheels(installed, app_dir):
    """proxy.templates: the app's site.conf.j2 wins; the templates it lacks stay ferry's."""
    (app_dir / "nginx").mkdir()
    (app_dir / "nginx" / "site.conf.j2").write_text("# ours: {{ app }} on {{ http_port }}\n")
    text = (app_dir / "ferry.toml").read_text()
    (app_dir / "ferry.toml").write_text(text + '\n[proxy]\ntemplates = "nginx"\nhttp_port = 31080\n')
    script = """
from ferry import config, nginx
cfg = config.load("ferry.toml")
print(nginx.render_site(cfg), end="")
print(nginx.render_upstream(cfg, "green", "r2"), end="")
"""
    r = subprocess.run([str(installed / "bin" / "python"), "-c", script],
                       capture_output=True, text=True, env=clean_env(), cwd=app_dir, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith(f"# ours: {APP} on 31080\n")
    assert "server 127.0.0.1:31002" in r.stdout


def test_ferry_init_from_the_wheel_writes_a_config_its_ferry_accepts(installed, tmp_path):
    from ..init.flaskr import FILES

    app = tmp_path / "flaskr"
    for rel, text in FILES.items():
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        (app / rel).write_text(text)
    ferry = str(installed / "bin" / "ferry")
    r = subprocess.run([ferry, "init", "--json"], capture_output=True, text=True, env=clean_env(), cwd=app, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["plan"]["entrypoint"] == ["gunicorn", "--bind", "127.0.0.1:{port}", "flaskr:create_app()"]
    check = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "from ferry import config; print(config.load('ferry.toml').image.entrypoint)"],
                           capture_output=True, text=True, env=clean_env(), cwd=app, timeout=60)
    assert check.returncode == 0 and "flaskr:create_app()" in check.stdout, check.stderr

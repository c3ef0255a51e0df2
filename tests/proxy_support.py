"""Shared by the proxy tests (unit and integration): an app's config from a fixture table, its
nginx files rendered onto disk, and the local target's own main config (components.nginx_main_conf)
around them, so `nginx -t`, gixy and a real nginx all read what a deploy would write."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

from ferry import assets, nginx
from ferry.config import Config, parse
from ferry.local.components import Paths, nginx_main_conf

# the fixture app: a real app's shape (volumes, media served by nginx), every key of [proxy]
BASE = {
    "app": {"name": "proxy-fixture"},
    "image": {"repository": "127.0.0.1:5000/proxy-fixture", "base": "127.0.0.1:5000/ferry/python:3.11",
              "source": "src", "entrypoint": ["python3", "-m", "app"]},
    "deploy": {"hosts": ["root@127.0.0.1:2222"], "colours": {"blue": 33081, "green": 33082},
               "drain_timeout": "3s", "volumes": {"media": "/app/media", "data": "/data"}},
    "proxy": {"listen": "127.0.0.1", "http_port": 33080, "https_port": 33443},
}


def app_config(tmp_path: Path, *, root: Path | None = None, **sections: dict) -> Config:
    """BASE with ``sections`` merged in (e.g. proxy={"gzip": False}); deploy.root under tmp_path."""
    doc = copy.deepcopy(BASE)
    for name, table in sections.items():
        doc.setdefault(name, {}).update(table)
    doc["deploy"].setdefault("root", str(root or tmp_path / "opt"))
    (tmp_path / "src").mkdir(exist_ok=True)
    return parse(doc, tmp_path / "ferry.toml")


def site_files(cfg: Config, colour: str = "blue", release: str = "r1", *, tls: bool = False,
               balancer_networks: tuple[str, ...] = (), behind_balancer: bool = False) -> dict[str, str]:
    """What a deploy's swap writes (runner.swap), path -> text."""
    return {nginx.upstream_path(cfg): nginx.render_upstream(cfg, colour, release),
            nginx.proxy_path(cfg): nginx.render_proxy(cfg, behind_balancer=behind_balancer,
                                                      balancer_networks=balancer_networks),
            nginx.site_path(cfg): nginx.render_site(cfg, tls=tls, extra_names=("127.0.0.1",))}


def write(files: dict[str, str]) -> None:
    for path, text in files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)


def tls_material(cfg: Config) -> None:
    """A throwaway self-signed certificate where the TLS server expects one (nginx -t loads it)."""
    d = Path(nginx.app_dir(cfg)) / "tls"
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", "/CN=proxy-fixture.test", "-days", "1", "-keyout", str(d / "privkey.pem"),
                    "-out", str(d / "fullchain.pem")], check=True, capture_output=True, timeout=30)
    (d / "chain.pem").write_text((d / "fullchain.pem").read_text())
    ffdhe = assets.path("nginx") / "ffdhe2048.pem"
    (d / "dhparam.pem").write_text(ffdhe.read_text())


def main_conf(state: Path, cfg: Config, *, status_port: int, worker_shutdown_timeout: float = 30.0) -> Path:
    """The local target's nginx.conf (as `ferry local up` writes it) under ``state``, including
    only this app's site."""
    p = Paths(state)
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (state / "nginx" / "tmp" / d).mkdir(parents=True, exist_ok=True)
    p.logs.mkdir(parents=True, exist_ok=True)
    p.nginx_conf.write_text(nginx_main_conf(p, nginx.site_path(cfg), status_port, worker_shutdown_timeout))
    return p.nginx_conf


def nginx_t(conf: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["nginx", "-t", "-c", str(conf), "-e", str(conf.parent / "error.log")],
                          capture_output=True, text=True, timeout=30)

"""nginx: pure rendering of an app's site/upstream from ferry's packaged templates
(``ferry/assets/nginx``, overridden template by template by ``proxy.templates``), and the one
safe way to change a host's nginx (``apply``): write atomically, ``nginx -t``, restore the old
files on failure, reload. Traffic moves only through a reload, which hands new connections to
new workers while the old workers finish the requests they hold.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from . import assets
from .config import Config
from .deploy import docker as D
from .errors import DeployError

if TYPE_CHECKING:
    import jinja2


def templates_dirs(cfg: Config | None = None) -> list[Path]:
    """Where templates are looked up, first match wins: FERRY_NGINX_TEMPLATES (tests, one-off
    experiments), then the repository's ``proxy.templates``, then ferry's packaged ones. A team
    overrides only the templates it has (say site.conf.j2) and keeps ferry's others."""
    dirs = [Path(os.environ["FERRY_NGINX_TEMPLATES"])] if os.environ.get("FERRY_NGINX_TEMPLATES") else []
    if cfg is not None and cfg.proxy.templates:
        dirs.append(cfg.resolve(cfg.proxy.templates))
    return [*dirs, assets.path("nginx")]


def _env(cfg: Config | None = None) -> "jinja2.Environment":
    return _env_for(tuple(str(d) for d in templates_dirs(cfg)))


@lru_cache(maxsize=8)
def _env_for(dirs: tuple[str, ...]) -> "jinja2.Environment":
    """One environment per template path, so a template is compiled once per process (it
    still reloads when its file changes: jinja2 checks the mtime)."""
    import jinja2  # ~25 ms: only commands that render pay it (not status, logs, lock)

    return jinja2.Environment(loader=jinja2.FileSystemLoader(list(dirs)), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                              bytecode_cache=_bytecode_cache())


def _bytecode_cache():
    """jinja2's own cache of compiled templates, in its private per-user temp directory (made
    0700, its owner checked): compiling site, proxy and upstream took ~20 ms of every deploy
    and rollback; loading them ~2 ms. Keyed by the template's source, so an edited template is
    compiled again. None (compile each time) when that directory cannot be used safely."""
    import jinja2

    try:
        return jinja2.FileSystemBytecodeCache()
    except (OSError, RuntimeError):
        return None


# proxy.gzip: what compresses well (text/html is always on in nginx); never text/event-stream,
# whose events must not wait in a compression buffer
GZIP_TYPES = ("text/css", "text/plain", "text/xml", "text/javascript", "application/javascript",
              "application/json", "application/xml", "application/rss+xml", "application/atom+xml",
              "application/manifest+json", "application/ld+json", "image/svg+xml", "image/x-icon")
# how long a browser keeps a file from proxy.serve without asking again (then it revalidates
# with the ETag): user uploads can be replaced under the same name, so not "forever"
SERVE_EXPIRES = "1h"


def app_dir(cfg: Config) -> str:
    return f"{cfg.deploy.root}/{cfg.app.name}"


def upstream_name(cfg: Config) -> str:
    """The app's upstream and the prefix of the variables its site maps ($<name>_connection,
    _release, _via). Bounded in length: every app's variables share one nginx hash, and long
    names overflow its buckets (64 bytes by default on hosts prepared by older versions), which
    fails `nginx -t` for every app on the host. Short names stay readable; longer ones keep
    their start and add a hash of the whole name, so two apps never share one."""
    name = cfg.app.name.replace("-", "_")
    if len(name) > 20:
        name = f"{name[:11]}_{hashlib.sha256(cfg.app.name.encode()).hexdigest()[:8]}"
    return f"ferry_{name}"


def site_path(cfg: Config) -> str:
    return f"{app_dir(cfg)}/nginx/site.conf"


def upstream_path(cfg: Config) -> str:
    return f"{app_dir(cfg)}/nginx/upstream.conf"


def proxy_path(cfg: Config) -> str:
    return f"{app_dir(cfg)}/nginx/proxy.conf"


def volume_path(cfg: Config, name: str) -> str:
    """Where deploy.volumes' NAME lives on the host (the deploy creates it, owned by the image's user)."""
    return D.volume_path(cfg, name)


def nginx_duration(seconds: float) -> str:
    """30.0 -> "30s", 0.5 -> "500ms": nginx's own time format."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


def serve_locations(cfg: Config) -> list[dict]:
    """proxy.serve as the locations site.conf renders, longest prefix first (nginx picks the
    longest match anyway; the order only keeps the text stable)."""
    return [{"prefix": prefix, "volume": name, "path": volume_path(cfg, name)}
            for prefix, name in sorted(cfg.proxy.serve.items(), key=lambda kv: (-len(kv[0]), kv[0]))]


def context(cfg: Config, tls: bool, extra_names: tuple[str, ...] = ()) -> dict:
    d = app_dir(cfg)
    p = cfg.proxy
    return {
        "max_body": p.max_body,
        "gzip": p.gzip,
        "gzip_types": " ".join(GZIP_TYPES),
        "serve": serve_locations(cfg),
        "serve_expires": SERVE_EXPIRES,
        "app": cfg.app.name,
        "domain": cfg.app.domain,
        "app_dir": d,
        "root": cfg.deploy.root,
        "listen": p.listen,
        "http_port": p.http_port,
        "https_port": p.https_port,
        "https_port_suffix": "" if p.https_port == 443 else f":{p.https_port}",
        # the domain and the host's own addresses (a load balancer's health check sends its
        # private IP); never default_server: the host's default server drops unknown names
        "server_names": " ".join(dict.fromkeys(n for n in (cfg.app.domain, *extra_names) if n)) or "_",
        "upstream": upstream_name(cfg),
        "proxy_include": proxy_path(cfg),
        "tls": tls,
        "hsts_max_age": cfg.tls.hsts_max_age,
        "cert_path": f"{d}/tls/fullchain.pem",
        "key_path": f"{d}/tls/privkey.pem",
        "chain_path": f"{d}/tls/chain.pem",
    }


def render_site(cfg: Config, *, tls: bool = False, extra_names: tuple[str, ...] = ()) -> str:
    return _env(cfg).get_template("site.conf.j2").render(**context(cfg, tls, extra_names))


def trusted_proxies(cfg: Config, balancer_networks: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Whose X-Forwarded-For names the client (set_real_ip_from): proxy.real_ip_from, then the
    load balancer's networks (the stack's VPC CIDR), as networks, each once."""
    nets = (str(ipaddress.ip_network(n, strict=False)) for n in (*cfg.proxy.real_ip_from, *balancer_networks))
    return tuple(dict.fromkeys(nets))


def render_proxy(cfg: Config, *, behind_balancer: bool = False, balancer_networks: tuple[str, ...] = ()) -> str:
    """``behind_balancer``: a load balancer terminates TLS in front of this host (the stack's
    target group, fleet.hosts.HostTarget.behind_balancer), so the app's X-Forwarded-Proto is
    the balancer's; otherwise nginx's own $scheme (a client's header is never trusted).
    ``balancer_networks``: where that balancer's requests come from (HostTarget.balancer_networks),
    trusted for the client's address beside proxy.real_ip_from."""
    return _env(cfg).get_template("proxy.conf.j2").render(
        app=cfg.app.name, upstream=upstream_name(cfg), read_timeout=nginx_duration(cfg.proxy.read_timeout),
        behind_balancer=behind_balancer, real_ip_from=trusted_proxies(cfg, balancer_networks))


def render_upstream(cfg: Config, colour: str, release: str) -> str:
    port = cfg.deploy.colours[colour]
    return _env(cfg).get_template("upstream.conf.j2").render(
        app=cfg.app.name, upstream=upstream_name(cfg), colour=colour, release=release, port=port)


def live_port(upstream_text: str | None) -> int | None:
    """Which port the upstream file sends traffic to (None: no upstream yet)."""
    if not upstream_text:
        return None
    for line in upstream_text.splitlines():
        line = line.strip()
        if line.startswith("server 127.0.0.1:"):
            return int(line.split(":", 1)[1].split()[0].rstrip(";"))
    return None


def nginx_argv(cfg: Config, *args: str) -> list[str]:
    return D.nginx_argv(cfg, *args)


def _test_failed(host, r) -> DeployError:
    out = (r.stderr or r.stdout).replace(D.NGINX_TEST_FAILED, "").strip()
    return DeployError(f"{host.name}: nginx -t rejected the new configuration: {out[-400:]}",
                       "fix the nginx template (proxy.templates, or ferry's own); the old configuration was "
                       "restored and keeps serving")


def _reload_failed(host, r) -> DeployError:
    return DeployError(f"{host.name}: nginx reload failed: {(r.stderr or r.stdout).strip()[-300:]}",
                       "is nginx running on the host? (`ferry local up` here, systemctl status nginx there)")


def test_and_reload(host, cfg: Config) -> None:
    """``nginx -t`` then the reload, one SSH command (docker.test_reload_argv)."""
    r = host.run(D.test_reload_argv(cfg))
    if r.ok:
        return
    if D.NGINX_TEST_FAILED in r.stdout:
        raise DeployError(f"{host.name}: nginx -t failed: {(r.stderr or r.stdout).replace(D.NGINX_TEST_FAILED, '').strip()[-400:]}",
                          "fix the nginx template (proxy.templates, or ferry's own); the old configuration is still serving")
    raise _reload_failed(host, r)


def apply(host, cfg: Config, files: dict[str, str], reload: bool = True) -> bool:
    """Write ``files`` (path -> content) on ``host``; ``nginx -t``; on failure put every old file
    back and raise DeployError; then reload (the test and the reload are one SSH command).
    Returns False when nothing changed."""
    old: dict[str, str | None] = {path: host.read(path) for path in files}
    changed = {p: c for p, c in files.items() if old[p] != c}
    if not changed:
        return False
    written: list[str] = []
    try:
        for path, content in changed.items():
            host.write(path, content)
            written.append(path)
        r = host.run(D.test_reload_argv(cfg) if reload else nginx_argv(cfg, "-t", "-q"))
        if not r.ok and (not reload or D.NGINX_TEST_FAILED in r.stdout):
            raise _test_failed(host, r)
    except Exception:
        for path in written:
            if old[path] is None:
                host.run(["rm", "-f", path])
            else:
                host.write(path, old[path])
        raise
    if not r.ok:
        raise _reload_failed(host, r)
    return True


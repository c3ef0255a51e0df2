"""What an accessory is on a host, from ferry.toml alone (pure): names, paths, ports, the
image to run, the connection URL the app gets, and the ``{db.password}`` substitution in
``deploy.env``.

On the host (``<root>`` is ``deploy.root``):

    <root>/<app>/volumes/<name>/          the data (the layout deploy.volumes uses), owned by
                                          the server's uid, mode 0700
    <root>/<app>/accessories/<name>.password   generated once, 0600, owned by the server's uid
                                          (it reads the file; nothing else does)
    <root>/<app>/backups/<name>/          pg_dump -Fc files, the newest backup.keep kept

The container is ``<app>-<name>``, on the host network, bound to 127.0.0.1:<port>. It never
carries the ``dev.ferry.app`` label: the deploy's ``docker ps`` filter lists only colours, so
a release or rollback cannot see (let alone restart) an accessory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from ..config import AccessoryConfig, Config
from ..errors import ConfigError

DEFAULT_PORTS = {"postgres": 5432, "redis": 6379}
# the PostgreSQL major each Debian suite ships (config.py refuses any other); images.py builds them
POSTGRES_SUITES = {"15": "bookworm", "17": "trixie", "18": "forky"}
DEFAULT_POSTGRES = "15"
POSTGRES_UID = 65530  # the servers' own uids: neither the app's 65532 nor nobody
REDIS_UID = 65531
DEFAULT_PREFIX = "ferry"
DATA = "/data"  # the volume's path in the built images' containers
PASSWORD_IN_CONTAINER = "/run/secrets/password"
LOOPBACK = "127.0.0.1"
RUNS_HERE = ("postgres", "redis", "image")  # "rds" lives in the stack, not on a host


@dataclass(frozen=True)
class Accessory:
    app: str
    name: str
    kind: str  # postgres | redis | image
    container: str
    image: str  # what to pull: the config's repo@sha256 or the built image's tag
    port: int | None
    version: str | None  # PostgreSQL major
    uid: int | None  # who the server runs as (None: the image's own user)
    user: str | None  # PostgreSQL role
    database: str | None
    volume_dir: str  # on the host
    mount: str | None  # the volume's path in the container
    password_file: str | None  # on the host
    backups_dir: str
    url_env: str | None
    host: str | None
    env: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()

    @property
    def has_password(self) -> bool:
        return self.password_file is not None

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "container": self.container, "image": self.image,
                "port": self.port, "version": self.version, "user": self.user, "database": self.database,
                "volume": self.volume_dir, "backups": self.backups_dir, "url_env": self.url_env,
                "host": self.host}


def repository_name(name: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


def repository_names(prefix: str = DEFAULT_PREFIX) -> tuple[str, ...]:
    """Every repository the accessories' images live in: what `ferry accessory images --push`
    writes to; infra/ creates them in ECR beside the monitoring ones."""
    return tuple(repository_name(n, prefix) for n in ("postgres", "redis", "postgres-exporter"))


def app_dir(cfg: Config) -> str:
    return f"{cfg.deploy.root.rstrip('/')}/{cfg.app.name}"


def registry_of(repository: str) -> str | None:
    """The registry host of an image repository ("127.0.0.1:5000/x/y" -> "127.0.0.1:5000")."""
    first, sep, _ = repository.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def default_image(cfg: Config, kind: str, version: str | None, registry: str | None = None,
                  prefix: str = DEFAULT_PREFIX) -> str:
    """The built image's tag in the app's registry (``ferry accessory images --push`` puts it
    there): <registry>/ferry/postgres:15, <registry>/ferry/redis:7. The host pins it by digest
    when it pulls."""
    reg = registry or registry_of(cfg.image.repository)
    if reg is None:
        raise ConfigError(f"image.repository {cfg.image.repository!r} names no registry, so ferry cannot tell where "
                          f"the {kind} image is", 'set image = "REGISTRY/ferry/postgres@sha256:..." in the accessory')
    if ".dkr.ecr." in reg:
        raise ConfigError(f"the {kind} accessory needs image = \"...@sha256:...\" with an ECR registry "
                          "(its tags are immutable, so there is no moving tag to follow)",
                          "run `ferry accessory images --push --json` and copy the reference it prints")
    tag = (version or DEFAULT_POSTGRES) if kind == "postgres" else "7"
    return f"{reg}/{repository_name(kind, prefix)}:{tag}"


def accessory(cfg: Config, name: str, registry: str | None = None, prefix: str = DEFAULT_PREFIX) -> Accessory:
    a = cfg.accessories.get(name)
    if a is None:
        known = ", ".join(sorted(cfg.accessories)) or "none"
        raise ConfigError(f"accessories.{name}: no such accessory (configured: {known})",
                          f"add [accessories.{name}] to ferry.toml, e.g. kind = \"postgres\"")
    if a.kind not in RUNS_HERE:
        raise ConfigError(f"accessories.{name}: kind {a.kind!r} does not run on a host",
                          "RDS is created by `pulumi up`; ferry accessory commands are for postgres, redis and image")
    if name in cfg.deploy.volumes:
        raise ConfigError(f"accessories.{name}: deploy.volumes.{name} uses the same directory "
                          f"({app_dir(cfg)}/volumes/{name})", "rename the volume or the accessory")
    return _build(cfg, name, a, a.image or default_image(cfg, a.kind, a.version, registry, prefix))


def _build(cfg: Config, name: str, a: AccessoryConfig, image: str) -> Accessory:
    base = app_dir(cfg)
    is_db = a.kind == "postgres"
    return Accessory(
        app=cfg.app.name, name=name, kind=a.kind, container=f"{cfg.app.name}-{name}", image=image,
        port=a.port or DEFAULT_PORTS.get(a.kind),
        version=(a.version or DEFAULT_POSTGRES) if is_db else a.version,
        uid={"postgres": POSTGRES_UID, "redis": REDIS_UID}.get(a.kind),
        user=(a.user or _ident(cfg.app.name)) if is_db else None,
        database=(a.database or _ident(cfg.app.name)) if is_db else None,
        volume_dir=f"{base}/volumes/{name}",
        mount=DATA if a.kind in ("postgres", "redis") else a.volume,
        password_file=f"{base}/accessories/{name}.password" if a.kind in ("postgres", "redis") else None,
        backups_dir=f"{base}/backups/{name}",
        url_env=a.url_env, host=a.host, env=tuple(sorted(a.env.items())), command=tuple(a.command))


def _ident(app: str) -> str:
    """A PostgreSQL identifier from the app's name: "my-shop" -> "my_shop"."""
    s = re.sub(r"[^a-z0-9_]", "_", app.lower())
    return s if re.match(r"^[a-z_]", s) else f"_{s}"


@dataclass(frozen=True)
class Exporter:
    """postgres_exporter beside a PostgreSQL accessory when [monitoring] is enabled: it runs as
    the server's uid (it reads the same 0600 password file) and listens on 127.0.0.1:<port+1>."""

    container: str
    image: str
    port: int
    job: str = "postgres"


def exporter(cfg: Config, acc: Accessory, registry: str | None = None, prefix: str = DEFAULT_PREFIX) -> Exporter | None:
    if acc.kind != "postgres" or not cfg.monitoring.enabled:
        return None
    image = cfg.monitoring.images.postgres_exporter
    if not image:
        reg = registry or registry_of(cfg.image.repository)
        if reg is None or ".dkr.ecr." in reg:
            raise ConfigError("monitoring.images.postgres_exporter is not set, and ferry cannot name a default "
                              f"for the registry of {cfg.image.repository!r}",
                              "run `ferry accessory images --push --json` and set it to the postgres-exporter "
                              "reference it prints")
        image = f"{reg}/{repository_name('postgres-exporter', prefix)}:bookworm"
    port = (acc.port or 5432) + 1
    taken = {**{f"deploy.colours.{c}": p for c, p in cfg.deploy.colours.items()},
             **{f"accessories.{n}.port": a.port or DEFAULT_PORTS.get(a.kind) for n, a in cfg.accessories.items()}}
    for what, p in taken.items():
        if p == port:
            raise ConfigError(f"accessories.{acc.name}: its postgres_exporter listens on port + 1 = {port}, "
                              f"which is {what}", f"move accessories.{acc.name}.port or that port")
    return Exporter(f"{acc.container}-exporter", image, port)


def all_accessories(cfg: Config, registry: str | None = None, prefix: str = DEFAULT_PREFIX) -> list[Accessory]:
    return [accessory(cfg, n, registry, prefix) for n in sorted(cfg.accessories)
            if cfg.accessories[n].kind in RUNS_HERE]


# --- the app's view: URL, placeholders --------------------------------------------------------

def fields(acc: Accessory, password: str) -> dict[str, str]:
    """What ``{NAME.FIELD}`` means in deploy.env, for one accessory."""
    return {"host": LOOPBACK, "port": str(acc.port or ""), "user": acc.user or "",
            "password": password, "name": acc.database or ("0" if acc.kind == "redis" else "")}


def url(acc: Accessory, password: str) -> str:
    """The connection URL the app's env gets under url_env."""
    pw = quote(password, safe="")
    if acc.kind == "postgres":
        return f"postgresql://{quote(acc.user or '', safe='')}:{pw}@{LOOPBACK}:{acc.port}/{acc.database}"
    if acc.kind == "redis":
        return f"redis://:{pw}@{LOOPBACK}:{acc.port}/0"
    raise ConfigError(f"accessories.{acc.name}: url_env needs kind postgres or redis",
                      "remove url_env, or put the URL in deploy.env with {NAME.host}/{NAME.port}")


PLACEHOLDER = re.compile(r"\{([a-z0-9][a-z0-9-]*)\.(host|port|user|password|name)\}")
_ANY_BRACE = re.compile(r"\{([a-z0-9][a-z0-9-]*)\.([a-z_]+)\}")


def names_in(value: str, known: set[str]) -> set[str]:
    """Accessories a deploy.env value refers to (``{db.password}``); only known names count,
    so a value that merely contains braces is left alone."""
    return {m.group(1) for m in _ANY_BRACE.finditer(value) if m.group(1) in known}


def templated_keys(cfg: Config) -> set[str]:
    """deploy.env keys whose values use an accessory's placeholders: they go to the 0600 env
    file after substitution, never onto the docker command line (a password would show in
    `docker inspect` and `ps`)."""
    known = _on_hosts(cfg)
    return {k for k, v in cfg.deploy.env.items() if names_in(v, known)}


def _on_hosts(cfg: Config) -> set[str]:
    """Accessories whose fields deploy.env may name: the servers ferry runs (not RDS's)."""
    return {n for n, a in cfg.accessories.items() if a.kind in ("postgres", "redis")}


def substitute(value: str, values: dict[str, dict[str, str]]) -> str:
    """``{db.host}``... replaced by ``values[db][host]``; an unknown field of a known
    accessory is an error that names the fields."""
    def repl(m: re.Match) -> str:
        name, field = m.group(1), m.group(2)
        if name not in values:
            return m.group(0)
        if field not in values[name]:
            raise ConfigError(f"deploy.env: {{{name}.{field}}} is not a field of accessory {name}",
                              "use {NAME.host}, {NAME.port}, {NAME.user}, {NAME.password} or {NAME.name}")
        return values[name][field]

    return _ANY_BRACE.sub(repl, value)


def env_for(cfg: Config, passwords: dict[str, str]) -> dict[str, str]:
    """The app's env from its accessories (pure): each url_env, and the deploy.env values with
    placeholders, substituted. ``passwords``: accessory name -> its password."""
    out: dict[str, str] = {}
    values: dict[str, dict[str, str]] = {}
    for name in sorted(cfg.accessories):
        a = cfg.accessories[name]
        if a.kind not in ("postgres", "redis"):
            continue
        acc = _build(cfg, name, a, image="")  # the URL does not depend on the image
        if name not in passwords:
            continue
        values[name] = fields(acc, passwords[name])
        if acc.url_env:
            out[acc.url_env] = url(acc, passwords[name])
    for k in sorted(templated_keys(cfg)):
        out[k] = substitute(cfg.deploy.env[k], values)
    return out


def needed(cfg: Config) -> list[str]:
    """Accessories whose password the app's env needs (url_env or a placeholder)."""
    known = _on_hosts(cfg)
    used = set()
    for v in cfg.deploy.env.values():
        used |= names_in(v, known)
    return sorted(n for n, a in cfg.accessories.items()
                  if a.kind in ("postgres", "redis") and (a.url_env or n in used))


def runs_on(acc_host: str | None, deploy_hosts: tuple[str, ...], host_name: str) -> bool:
    """Is ``host_name`` (user@host[:port]) the host that runs the accessory? accessories.NAME.host
    if set, else the first of deploy.hosts; with hosts from a stack and no host set, every
    host is taken as the one (a single-host stack)."""
    from ..deploy.host import HostSpec

    want = acc_host or (deploy_hosts[0] if deploy_hosts else None)
    if want is None:
        return True
    w, h = HostSpec.parse(want), HostSpec.parse(host_name)
    return (w.hostname, w.port) == (h.hostname, h.port) or want == h.hostname

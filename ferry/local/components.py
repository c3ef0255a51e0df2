"""What the local target is made of: pure descriptions of each daemon.

``components(settings)`` returns, for each part of the local target, the files it needs, the
argv that starts it and how to tell it is healthy. Nothing here starts anything: the runner in
``target.py`` does, so these descriptions are unit-tested as plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import LocalConfig
from ..nginx import nginx_duration
from .token_server import registry_config

TOKEN_ISSUER_PORT_OFFSET = 1  # the token issuer listens on token_registry_port + 1
REGISTRY_USER = "ferry"


@dataclass(frozen=True)
class Check:
    kind: str  # "tcp" | "http" | "unix" | "docker"
    target: str  # "127.0.0.1:5000" | "http://127.0.0.1:5000/v2/" | socket path


@dataclass(frozen=True)
class Component:
    name: str
    argv: tuple[str, ...]
    address: str
    check: Check
    files: dict[str, str] = field(default_factory=dict)  # path -> content, written before start
    # processes the daemon's own pid is recorded in (daemons that fork write a pidfile)
    pidfile: str | None = None
    start_timeout: float = 30.0
    env: dict[str, str] = field(default_factory=dict)
    # cleanup of sockets/pidfiles the daemon leaves behind after an unclean stop
    stale_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def docker_sock(self) -> Path:
        return self.root / "docker.sock"

    @property
    def ssh_key(self) -> Path:
        return self.root / "ssh" / "id_ed25519"

    @property
    def nginx_conf(self) -> Path:
        return self.root / "nginx" / "nginx.conf"

    @property
    def registry_password(self) -> Path:
        return self.root / "registry-basic.password"

    @property
    def htpasswd(self) -> Path:
        return self.root / "registry" / "htpasswd"

    @property
    def token_key(self) -> Path:
        return self.root / "registry" / "token.key"

    @property
    def token_cert(self) -> Path:
        return self.root / "registry" / "token.crt"


def dockerd(p: Paths) -> Component:
    d = p.root / "docker"
    return Component(
        name="dockerd",
        argv=("dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false",
              f"--data-root={d / 'data'}", f"--exec-root={d / 'exec'}",
              f"--host=unix://{p.docker_sock}", f"--pidfile={d / 'dockerd.pid'}",
              "--userland-proxy=false", "--log-level=warn"),
        address=f"unix://{p.docker_sock}",
        check=Check("docker", str(p.docker_sock)),
        start_timeout=60.0,
        stale_files=(str(p.docker_sock), str(d / "dockerd.pid")),
    )


def registries(p: Paths, s: LocalConfig) -> list[Component]:
    reg = p.root / "registry"
    storage = reg / "storage"  # one store: the auth registries see the same blobs
    issuer_port = s.token_registry_port + TOKEN_ISSUER_PORT_OFFSET
    variants = [
        ("registry", s.registry_port, {}),
        ("registry-basic", s.basic_registry_port, {"auth": "htpasswd", "htpasswd": p.htpasswd}),
        ("registry-token", s.token_registry_port,
         {"auth": "token", "realm": f"http://127.0.0.1:{issuer_port}/token", "service": "ferry-local-registry",
          "issuer": "ferry-local", "rootcertbundle": p.token_cert}),
    ]
    out = []
    for name, port, auth in variants:
        cfg = reg / f"{name}.yml"
        out.append(Component(
            name=name,
            argv=("docker-registry", "serve", str(cfg)),
            address=f"127.0.0.1:{port}",
            check=Check("tcp", f"127.0.0.1:{port}"),
            files={str(cfg): registry_config(port, storage, **auth)},
        ))
    out.append(Component(
        name="token-issuer",
        argv=("{python}", "-m", "ferry.local.token_server", "--listen", f"127.0.0.1:{issuer_port}",
              "--key", str(p.token_key), "--cert", str(p.token_cert), "--htpasswd", str(p.htpasswd),
              "--issuer", "ferry-local", "--service", "ferry-local-registry"),
        address=f"127.0.0.1:{issuer_port}",
        check=Check("tcp", f"127.0.0.1:{issuer_port}"),
    ))
    return out


def sshd(p: Paths, s: LocalConfig) -> Component:
    ssh = p.root / "ssh"
    return Component(
        name="sshd",
        argv=("/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null",
              "-p", str(s.ssh_port), "-o", "ListenAddress=127.0.0.1",
              "-h", str(ssh / "host_ed25519"),
              "-o", f"PidFile={ssh / 'sshd.pid'}",
              "-o", f"AuthorizedKeysFile={ssh / 'authorized_keys'}",
              "-o", "PermitRootLogin=prohibit-password", "-o", "PasswordAuthentication=no",
              "-o", "KbdInteractiveAuthentication=no", "-o", "UsePAM=no", "-o", "StrictModes=no",
              "-o", "MaxStartups=100:30:200", "-o", "MaxSessions=50",
              "-o", "Subsystem=sftp internal-sftp", "-o", "AcceptEnv=LANG LC_*",
              # bash run by sshd sources ~/.bashrc unless SHLVL says it is nested; this machine's
              # root .bashrc (pyenv init) costs ~140 ms per command, a deploy host's does not
              "-o", "SetEnv=SHLVL=1"),
        address=f"127.0.0.1:{s.ssh_port}",
        check=Check("tcp", f"127.0.0.1:{s.ssh_port}"),
    )


def nginx_main_conf(p: Paths, include_glob: str, status_port: int, worker_shutdown_timeout: float = 30.0) -> str:
    """``worker_shutdown_timeout`` (local.worker_shutdown_timeout): how long a reload's old
    workers keep the long-lived connections (WebSocket, SSE) they hold, so a drain ends."""
    n = p.root / "nginx"
    return f"""# ferry local target: nginx main config (written by `ferry local up`)
worker_processes 2;
worker_shutdown_timeout {nginx_duration(worker_shutdown_timeout)};
pid {n / 'nginx.pid'};
error_log {p.logs / 'nginx-error.log'} warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {p.logs / 'nginx-access.log'};
    client_body_temp_path {n / 'tmp' / 'body'};
    proxy_temp_path {n / 'tmp' / 'proxy'};
    fastcgi_temp_path {n / 'tmp' / 'fastcgi'};
    uwsgi_temp_path {n / 'tmp' / 'uwsgi'};
    scgi_temp_path {n / 'tmp' / 'scgi'};
    server_tokens off;
    sendfile on;
    keepalive_timeout 65;
    # every app's site maps variables named after it: many apps (or long names) outgrow 64 bytes
    variables_hash_bucket_size 128;
    variables_hash_max_size 4096;

    server {{
        listen 127.0.0.1:{status_port};
        location = /stub_status {{ stub_status; }}
    }}
    include {include_glob};
}}
"""


def nginx(p: Paths, s: LocalConfig, deploy_root: str) -> Component:
    n = p.root / "nginx"
    return Component(
        name="nginx",
        argv=("nginx", "-c", str(p.nginx_conf), "-g", "daemon off;"),
        # apps listen on their own ports (8080 for the sample) once deployed; the status
        # server is always there, so it tells whether nginx itself is up
        address=f"127.0.0.1:{s.nginx_status_port}",
        check=Check("tcp", f"127.0.0.1:{s.nginx_status_port}"),
        files={str(p.nginx_conf): nginx_main_conf(p, f"{deploy_root}/*/nginx/site.conf", s.nginx_status_port,
                                                         s.worker_shutdown_timeout)},
        stale_files=(str(n / "nginx.pid"),),
    )


def components(settings: LocalConfig, deploy_root: str = "/opt/ferry") -> list[Component]:
    p = Paths(Path(settings.state_dir))
    return [dockerd(p), *registries(p, settings), sshd(p, settings), nginx(p, settings, deploy_root)]

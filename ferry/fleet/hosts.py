"""Which hosts an app runs on: deploy.hosts as written, or the hosts of a Pulumi stack's
outputs, as frozen ``HostTarget``s that carry what the stack knows about each (names nginx must
answer to, public addresses, the load balancer's target group, an SSH gateway)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..deploy.host import HostSpec
from ..errors import ConfigError
from ..progress import NULL, Progress


@dataclass(frozen=True)
class HostTarget:
    """One host of the app, with what the stack knows about it."""

    spec: HostSpec
    # what nginx must answer to (server_name): public and private addresses, since a load
    # balancer's health check sends the host's private IP as Host
    names: tuple[str, ...] = ()
    instance_id: str | None = None
    target_group_arn: str | None = None  # behind the load balancer: out before the swap, in after
    region: str | None = None
    gateway: str | None = None  # SSH ProxyCommand (SSM Session Manager)
    # where the internet reaches the host (public IPv4, IPv6, public DNS name): what the domain's
    # records must point to and what ferry probes from outside; never a private address
    public: tuple[str, ...] = ()
    # where the load balancer's requests come from (the stack's VPC CIDR): nginx takes the
    # client's address from their X-Forwarded-For (nginx.render_proxy)
    balancer_networks: tuple[str, ...] = ()

    @property
    def behind_balancer(self) -> bool:
        """A load balancer terminates TLS in front of this host (nginx.render_proxy)."""
        return bool(self.target_group_arn)

    @property
    def server_names(self) -> tuple[str, ...]:
        """What nginx answers to on this host: the stack's names, else the SSH hostname."""
        return self.names or (self.spec.hostname,)

    def __str__(self) -> str:
        return str(self.spec)


def resolve_hosts(cfg: Config, progress: Progress = NULL) -> list[HostTarget]:
    """deploy.hosts, or the hosts of a Pulumi stack's outputs."""
    if cfg.deploy.hosts:
        # as written: the operator reaches them at that address, so it is the public one too
        return [HostTarget(s, (s.hostname,), public=(s.hostname,))
                for s in (HostSpec.parse(h) for h in cfg.deploy.hosts)]
    if cfg.deploy.stack or cfg.deploy.stack_outputs:
        from ..aws import stack

        out = stack.read_outputs(cfg, progress=progress)
        gateway = out.ssh_proxy_command()
        targets = []
        for h in out.hosts:
            address = h.instance_id if gateway else h.address
            names = tuple(n for n in (h.public_ip, h.public_dns, h.private_ip) if n)
            public = tuple(n for n in (h.public_ip, h.ipv6_address, h.public_dns) if n)
            balancer = (out.vpc_cidr,) if h.target_group_arn and out.vpc_cidr else ()
            targets.append(HostTarget(HostSpec(out.ssh_user, address, cfg.deploy.ssh_port), names, h.instance_id,
                                      h.target_group_arn, out.region, gateway, public, balancer))
        if not targets:
            raise ConfigError(f"deploy.stack: the stack outputs ({out.source}) list no hosts",
                              "run `pulumi up` first, or check the stack name")
        return targets
    raise ConfigError("deploy: no hosts", 'set deploy.hosts = ["root@HOST"] or deploy.stack = "dev" in ferry.toml')


def select(targets: list[HostTarget], host: str | None) -> list[HostTarget]:
    """``--host H``: the hosts whose spec (user@host:port) or hostname is H; all when None."""
    if not host:
        return list(targets)
    match = [t for t in targets if host in (str(t), t.spec.hostname)]
    if not match:
        raise ConfigError(f"--host {host}: not one of this app's hosts ({', '.join(map(str, targets))})",
                          "pass one of those, or leave --host out")
    return match

"""Across hosts: `ferry deploy`, `ferry release`, `ferry rollback`, `ferry status`, `ferry lock`.

Hosts go one at a time. Everything that can be checked without a host (ferry.toml, secrets,
the image reference) is checked before the first connection. A failure on one host stops the
release there; the error names which host has which release.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Callable

from ..config import Config, read_secrets
from ..errors import ConfigError, DeployError, FerryError, PostDeployHookFailed
from ..progress import NULL, Progress
from .host import Host, HostSpec
from .lock import Lock
from .runner import HostDeployer, Target

DIGEST_RE = re.compile(r"^(?P<repo>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})$")


def parse_image(ref: str) -> tuple[str, str]:
    m = DIGEST_RE.match(ref.strip())
    if not m:
        raise ConfigError(f"{ref!r} is not IMAGE@sha256:<64 hex>",
                          "deploy by digest, e.g. the `image` printed by `ferry build --push --json`")
    return ref.strip(), m.group("digest")


@dataclass(frozen=True)
class HostTarget:
    """One host to deploy to, with what the stack knows about it."""

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

    @property
    def behind_balancer(self) -> bool:
        """A load balancer terminates TLS in front of this host (nginx.render_proxy)."""
        return bool(self.target_group_arn)

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
            targets.append(HostTarget(HostSpec(out.ssh_user, address, cfg.deploy.ssh_port), names, h.instance_id,
                                      h.target_group_arn, out.region, gateway, public))
        if not targets:
            raise ConfigError(f"deploy.stack: the stack outputs ({out.source}) list no hosts",
                              "run `pulumi up` first, or check the stack name")
        return targets
    raise ConfigError("deploy: no hosts", 'set deploy.hosts = ["root@HOST"] or deploy.stack = "dev" in ferry.toml')


def registry_credentials(cfg: Config, image: str) -> tuple[str, str] | None:
    """Credentials the host needs to pull from ``image``'s registry (None: anonymous)."""
    from ..images.auth import credentials_for

    creds = credentials_for(image.split("/", 1)[0], cfg.image.auth)
    if creds is None:
        return None
    return creds.username, creds.password


def default_version(cfg: Config) -> str:
    if v := os.environ.get("FERRY_VERSION"):
        return v
    try:
        r = subprocess.run(["git", "-C", str(cfg.root), "describe", "--always", "--dirty", "--tags"],
                           capture_output=True, text=True, timeout=5)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "dev"


def connect(cfg: Config, target: HostTarget, progress: Progress) -> Host:
    key = cfg.deploy.ssh_key
    if key and not os.path.exists(os.path.expanduser(key)):
        raise ConfigError(f"deploy.ssh_key: {key} does not exist", "point it at the private key for the hosts")
    return Host(target.spec, key_filename=os.path.expanduser(key) if key else None, progress=progress,
                gateway=target.gateway).open()


class _OutOfBalancer:
    """Behind the load balancer a host leaves its target group (drained) before its swap and
    rejoins (healthy) after, so the balancer never sends it traffic mid-swap."""

    def __init__(self, target: HostTarget, progress: Progress):
        self.t = target
        self.progress = progress

    def __enter__(self):
        if self.t.target_group_arn and self.t.instance_id:
            from ..aws import alb

            self.progress.step(f"deregister {self.t.instance_id} from the load balancer", host=str(self.t))
            alb.deregister(self.t.target_group_arn, self.t.instance_id, region=self.t.region or "",
                           progress=self.progress)
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.t.target_group_arn and self.t.instance_id:
            from ..aws import alb

            # back in even after a failed deploy: the live colour still serves
            self.progress.step(f"register {self.t.instance_id} with the load balancer", host=str(self.t))
            alb.register(self.t.target_group_arn, self.t.instance_id, region=self.t.region or "",
                         progress=self.progress)
        return False


def for_each_host(cfg: Config, progress: Progress, action: Callable[[HostDeployer], dict], command: str,
                  force: bool = False, secrets: dict | None = None, creds=None) -> dict:
    targets = resolve_hosts(cfg, progress)
    done: list[dict] = []
    for i, target in enumerate(targets):
        progress.step(f"host {i + 1}/{len(targets)}: {target}")
        d: HostDeployer | None = None
        try:
            with connect(cfg, target, progress) as host:
                d = HostDeployer(host, cfg, progress, secrets=secrets, registry_credentials=creds, command=command,
                                 force=force, server_names=target.names, behind_balancer=target.behind_balancer)
                with _OutOfBalancer(target, progress):
                    done.append(_as_json(action(d)))
        except FerryError as e:
            untouched = [str(s) for s in targets[i + 1:]]
            summary = "; ".join(f"{r['host']}: {r.get('release')}" for r in done)
            e.message = (f"{e.message} [stopped at host {i + 1}/{len(targets)}"
                         + (f"; done: {summary}" if summary else "")
                         + (f"; untouched: {', '.join(untouched)}" if untouched else "") + "]")
            # the same facts for --json: done hosts' results, where it stopped, what was not touched
            details = {"hosts": done, "failed_host": str(target), "untouched": untouched}
            if d is not None and d.observed is not None:
                # what was live there when ferry looked, before the failed step (null: nothing)
                live = d.observed.live
                details["failed_host_live"] = live.to_json() if live else None
            e.details.update(details)
            raise
    return {"ok": True, "url": cfg.url, "hosts": done}


def _as_json(result) -> dict:
    """The runner's typed results (runner.DeployResult, RollbackResult, HostStatus) as JSON."""
    return result.to_json() if hasattr(result, "to_json") else result


def deploy(cfg: Config, image: str, version: str | None = None, progress: Progress = NULL, force: bool = False,
           kind: str = "deploy") -> dict:
    ref, digest = parse_image(image)
    secrets = read_secrets(cfg)
    creds = registry_credentials(cfg, ref)
    target = Target(ref, digest, version or default_version(cfg), kind=kind)
    t0 = time.monotonic()
    # deploy.release_command runs once per release: on the first host only
    first = iter([True])
    r = for_each_host(cfg, progress, lambda d: d.deploy(target, run_release_command=next(first, False)),
                      f"deploy {version or ''}".strip(), force, secrets, creds)
    r.update(image=ref, digest=digest, version=target.version, duration=round(time.monotonic() - t0, 2))
    r["hooks"] = run_hooks(cfg, r, progress)
    return r


def hook_env(cfg: Config, result: dict) -> dict[str, str]:
    """What a post-deploy hook knows (like Kamal's KAMAL_* variables)."""
    hosts = result.get("hosts", [])
    return {
        "FERRY_APP": cfg.app.name,
        "FERRY_VERSION": str(result.get("version", "")),
        "FERRY_IMAGE": str(result.get("image", "")),
        "FERRY_DIGEST": str(result.get("digest", "")),
        "FERRY_RELEASE": str(hosts[-1].get("release", "")) if hosts else "",
        "FERRY_HOSTS": ",".join(h["host"] for h in hosts),
        "FERRY_URL": cfg.url,
    }


HOOK_TIMEOUT = 600.0


def run_hooks(cfg: Config, result: dict, progress: Progress, timeout: float = HOOK_TIMEOUT) -> list[dict]:
    """deploy.post_deploy commands, run here (where ferry runs) after every host is live.

    The first that fails (or outlives ``timeout``) stops the rest and raises
    PostDeployHookFailed (exit 4): the release is live, only the hook failed."""
    out: list[dict] = []
    for cmd in cfg.deploy.post_deploy:
        progress.step(f"post-deploy hook: {cmd}")
        try:
            r = subprocess.run(cmd, shell=True, cwd=cfg.root, env={**os.environ, **hook_env(cfg, result)},
                               capture_output=True, text=True, timeout=timeout)
            code, output, why = r.returncode, (r.stdout or "") + (r.stderr or ""), f"exit {r.returncode}"
        except subprocess.TimeoutExpired as t:
            code, why = None, f"still running after {timeout:.0f}s, killed"
            output = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (t.stdout, t.stderr))
        out.append({"command": cmd, "exit_code": code})
        if code != 0:
            tail = " | ".join(line.strip() for line in output.strip().splitlines() if line.strip())[-400:]
            hosts = ", ".join(f"{h['host']}: {h.get('release')}" for h in result.get("hosts", []))
            raise PostDeployHookFailed(
                f"post-deploy hook `{cmd}` failed ({why}): {tail or '(no output)'} [released: {hosts}]",
                "the release itself is live; fix the hook and run it by hand (or `ferry rollback`)",
                details={**{k: v for k, v in result.items() if k != "ok"}, "hooks": out, "failed_hook": cmd})
    return out


def rollback(cfg: Config, to: str | None = None, progress: Progress = NULL, force: bool = False) -> dict:
    secrets = read_secrets(cfg)
    # asked for only if a host must pull (a rollback that is not warm): a warm rollback is one
    # reload and should not wait for a credential helper (ECR's is a network round trip)
    creds = functools.cache(lambda: registry_credentials(cfg, cfg.image.repository))
    return for_each_host(cfg, progress, lambda d: d.rollback(to), "rollback", force, secrets, creds)


def status(cfg: Config, progress: Progress = NULL) -> dict:
    hosts = []
    for target in resolve_hosts(cfg, progress):
        try:
            with connect(cfg, target, progress) as host:
                hosts.append(_as_json(HostDeployer(host, cfg, progress, server_names=target.names).status()))
        except FerryError as e:
            hosts.append({"host": str(target), "error": str(e), "live": None})
    return {"app": cfg.app.name, "url": cfg.url, "hosts": hosts,
            "ok": all("error" not in h and h.get("health", {}) and h["health"]["ok"] for h in hosts)}


def lock_status(cfg: Config, progress: Progress = NULL) -> dict:
    out = []
    for spec in resolve_hosts(cfg, progress):
        with connect(cfg, spec, progress) as host:
            st = Lock(host, cfg).read()
            out.append({"host": str(spec), "lock": st.to_json(), "text": st.describe()})
    return {"hosts": out}


def lock_release(cfg: Config, force: bool = False, progress: Progress = NULL) -> dict:
    out = []
    for spec in resolve_hosts(cfg, progress):
        with connect(cfg, spec, progress) as host:
            lock = Lock(host, cfg)
            st = lock.read()
            if st.info is None:
                out.append({"host": str(spec), "released": False, "text": "was not locked"})
                continue
            if not st.stale and not force:
                raise DeployError(f"{spec}: the lock is {st.describe()}; it looks alive",
                                  "wait for it, or pass --force if you are sure that deploy is dead")
            lock.force_release()
            out.append({"host": str(spec), "released": True, "text": f"released: was {st.describe()}",
                        "was": st.to_json()})
    return {"hosts": out}

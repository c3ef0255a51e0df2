"""Across hosts: `ferry deploy`, `ferry release`, `ferry rollback`, `ferry status`, `ferry lock`.

Hosts go deploy.parallel at a time (default one; fleet.connect runs the batches), each out of
the load balancer for its turn. Everything that can be checked without a host (ferry.toml,
secrets, the image reference) is checked before the first connection. A failure stops the
release after its batch; the error names which host has which release.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import time
from typing import Callable

from ..config import Config, read_secrets
from ..errors import ConfigError, DeployError, FerryError, PostDeployHookFailed
from ..fleet.connect import FleetRun, for_each_host, run_on_hosts
from ..fleet.credentials import registry_credentials
from ..fleet.events import EventSink, no_events
from ..fleet import hosts as fleet_hosts
from ..fleet.hosts import HostTarget
from ..progress import NULL, Progress
from .lock import Lock
from .runner import HostDeployer, Target

DIGEST_RE = re.compile(r"^(?P<repo>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})$")


def parse_image(ref: str) -> tuple[str, str]:
    m = DIGEST_RE.match(ref.strip())
    if not m:
        raise ConfigError(f"{ref!r} is not IMAGE@sha256:<64 hex>",
                          "deploy by digest, e.g. the `image` printed by `ferry build --push --json`")
    return ref.strip(), m.group("digest")


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


def across_hosts(cfg: Config, progress: Progress, action: Callable[..., dict], command: str,
                 force: bool = False, secrets: dict | None = None, creds=None, events: EventSink = no_events,
                 parallel: int = 1, first_alone: bool = False) -> dict:
    """``action(deployer, first)`` on every host, ``parallel`` at a time (fleet.connect), each
    out of the load balancer for its turn; ``first`` is True for the first host only (the one
    that runs the release command). The first failure stops further batches; its error names
    which host has which release."""
    targets = fleet_hosts.resolve_hosts(cfg, progress)
    deployers: dict[HostTarget, HostDeployer] = {}

    def one(target: HostTarget, host) -> dict:
        d = deployers[target] = HostDeployer(
            host, cfg, progress, secrets=secrets, registry_credentials=creds, command=command, force=force,
            server_names=target.names, behind_balancer=target.behind_balancer,
            balancer_networks=target.balancer_networks, events=events)
        with _OutOfBalancer(target, progress):
            return _as_json(action(d, target is targets[0]))

    run = run_on_hosts(cfg, one, progress, parallel, targets, first_alone=first_alone)
    if run.ok:
        return {"ok": True, "url": cfg.url, "hosts": run.results}
    raise _stopped(run, deployers)


def _as_json(result) -> dict:
    """The runner's results as JSON (typed results have ``to_json``; dicts are already)."""
    return result.to_json() if hasattr(result, "to_json") else result


def _stopped(run: FleetRun, deployers: dict) -> FerryError:
    """The first failure, told which hosts are done (with their release), where it stopped
    and which hosts were never touched: in its message and, for --json, in its details."""
    target, e = run.failed[0]
    done = run.results
    untouched = [str(t) for t in run.untouched]
    summary = "; ".join(f"{r['host']}: {r.get('release')}" for r in done)
    e.message = (f"{e.message} [stopped at host {run.index(target) + 1}/{len(run.targets)}"
                 + (f"; done: {summary}" if summary else "")
                 + (f"; untouched: {', '.join(untouched)}" if untouched else "") + "]")
    # the same facts for --json: done hosts' results, where it stopped, what was not touched
    details: dict = {"hosts": done, "failed_host": str(target), "untouched": untouched}
    if len(run.failed) > 1:  # hosts of the same batch (deploy.parallel) that failed too
        details["failed_hosts"] = [str(t) for t, _ in run.failed]
    d = deployers.get(target)
    if d is not None and d.observed is not None:
        # what was live there when ferry looked, before the failed step (null: nothing)
        live = d.observed.live
        details["failed_host_live"] = live.to_json() if live else None
    e.details.update(details)
    return e


def deploy(cfg: Config, image: str, version: str | None = None, progress: Progress = NULL, force: bool = False,
           kind: str = "deploy", events: EventSink = no_events) -> dict:
    """``image`` on every host, deploy.parallel at a time. With a release command the first
    host goes alone and runs it: no other host moves before the migration is done."""
    ref, digest = parse_image(image)
    secrets = read_secrets(cfg)
    creds = registry_credentials(cfg, ref)
    target = Target(ref, digest, version or default_version(cfg), kind=kind)
    t0 = time.monotonic()
    r = across_hosts(cfg, progress, lambda d, first: d.deploy(target, run_release_command=first),
                     f"deploy {version or ''}".strip(), force, secrets, creds, events, cfg.deploy.parallel,
                     first_alone=bool(cfg.deploy.release_command))
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


def rollback(cfg: Config, to: str | None = None, progress: Progress = NULL, force: bool = False,
             events: EventSink = no_events) -> dict:
    secrets = read_secrets(cfg)
    # asked for only if a host must pull (a rollback that is not warm): a warm rollback is one
    # reload and should not wait for a credential helper (ECR's is a network round trip)
    creds = functools.cache(lambda: registry_credentials(cfg, cfg.image.repository))
    # never the release command: a rollback goes back to code whose migrations already ran
    return across_hosts(cfg, progress, lambda d, first: d.rollback(to), "rollback", force, secrets, creds, events,
                        cfg.deploy.parallel)


def status(cfg: Config, progress: Progress = NULL) -> dict:
    run = run_on_hosts(cfg, lambda t, host: _as_json(HostDeployer(host, cfg, progress, server_names=t.names).status()),
                       progress, keep_going=True)
    done, failed = dict(run.done), dict(run.failed)
    # an unreachable host is a line of the report, not the end of it
    hosts = [done[t] if t in done else {"host": str(t), "error": str(failed[t]), "live": None} for t in run.targets]
    return {"app": cfg.app.name, "url": cfg.url, "hosts": hosts,
            "ok": all("error" not in h and h.get("health", {}) and h["health"]["ok"] for h in hosts)}


def lock_status(cfg: Config, progress: Progress = NULL) -> dict:
    def one(target: HostTarget, host) -> dict:
        st = Lock(host, cfg).read()
        return {"host": str(target), "lock": st.to_json(), "text": st.describe()}

    return {"hosts": for_each_host(cfg, one, progress)}


def lock_release(cfg: Config, force: bool = False, progress: Progress = NULL) -> dict:
    def one(target: HostTarget, host) -> dict:
        lock = Lock(host, cfg)
        st = lock.read()
        if st.info is None:
            return {"host": str(target), "released": False, "text": "was not locked"}
        if not st.stale and not force:
            raise DeployError(f"{target}: the lock is {st.describe()}; it looks alive",
                              "wait for it, or pass --force if you are sure that deploy is dead")
        lock.force_release()
        return {"host": str(target), "released": True, "text": f"released: was {st.describe()}", "was": st.to_json()}

    return {"hosts": for_each_host(cfg, one, progress)}

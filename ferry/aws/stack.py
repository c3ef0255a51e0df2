"""Where the hosts are: the Pulumi stack's outputs, read into `StackOutputs`.

Two sources, in this order, and ferry always says which one it used:
1. `pulumi stack output --json --stack NAME` (run in ferry.toml's folder) when `[deploy] stack`
   is set and the Pulumi CLI is on PATH: always current;
2. the JSON file `[deploy] stack_outputs` names, made by that same command
   (`pulumi stack output --json --stack dev > stack-outputs.json`): for machines without the
   CLI, e.g. a CI job that only deploys.
If the CLI is there but fails (not logged in, no such stack) and a file is configured, the file
is used with a warning naming the failure.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, InfraError
from ..progress import NULL, Progress

PULUMI_TIMEOUT = 120.0


@dataclass(frozen=True)
class StackHost:
    name: str
    instance_id: str
    public_ip: str | None = None
    public_dns: str | None = None
    private_ip: str | None = None
    availability_zone: str | None = None
    ipv6_address: str | None = None
    target_group_arn: str | None = None  # set when the host sits behind the load balancer

    @property
    def address(self) -> str:
        """What SSH connects to: the public IP, else the public DNS name, else the instance id
        (which SSM's ProxyCommand resolves)."""
        return self.public_ip or self.public_dns or self.instance_id


@dataclass(frozen=True)
class StackOutputs:
    source: str  # e.g. "pulumi stack output --stack dev" or "file /repo/stack-outputs.json"
    hosts: tuple[StackHost, ...]
    region: str
    ssh_user: str = "root"
    registry_url: str | None = None
    domain: str | None = None
    load_balancer_dns_name: str | None = None
    target_group_arns: tuple[str, ...] = ()
    ssm: bool = False
    app: str | None = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def behind_load_balancer(self) -> bool:
        return bool(self.target_group_arns)

    def ssh_targets(self) -> tuple[str, ...]:
        """`user@address` for each host, in the stack's order (the release order)."""
        return tuple(f"{self.ssh_user}@{h.address}" for h in self.hosts)

    def ssh_proxy_command(self) -> str | None:
        """With ssm = true there is no SSH port: tunnel SSH through Session Manager (needs the
        AWS CLI and its session-manager-plugin where ferry runs). %h is the instance id."""
        if not self.ssm:
            return None
        return (f"aws ssm start-session --target %h --document-name AWS-StartSSHSession "
                f"--parameters portNumber=%p --region {self.region}")

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("raw")
        out["hosts"] = [asdict(h) for h in self.hosts]
        out["target_group_arns"] = list(self.target_group_arns)
        return out


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def parse_outputs(data: Any, source: str) -> StackOutputs:
    """The JSON of `pulumi stack output --json` -> StackOutputs (pure)."""
    if not isinstance(data, dict):
        raise InfraError(f"{source}: expected a JSON object of stack outputs, got {type(data).__name__}",
                         "export it with `pulumi stack output --json --stack NAME`")
    hosts_raw = data.get("hosts")
    if not isinstance(hosts_raw, list) or not hosts_raw:
        raise InfraError(f"{source}: the stack has no `hosts` output",
                         "is this ferry's stack (Pulumi.yaml in this repository), and has `pulumi up` run?")
    hosts = []
    for i, h in enumerate(hosts_raw):
        if not isinstance(h, dict) or not _str(h.get("instanceId")):
            raise InfraError(f"{source}: hosts[{i}] has no instanceId",
                             "the outputs are not from ferry's program, or are incomplete: run `pulumi up` again")
        if not (_str(h.get("publicIp")) or _str(h.get("publicDns"))) and not data.get("ssm"):
            raise InfraError(f"{source}: hosts[{i}] ({h['instanceId']}) has no public address",
                             "the instance may still be starting: run `pulumi refresh` then export again")
        hosts.append(StackHost(
            name=_str(h.get("name")) or h["instanceId"], instance_id=h["instanceId"],
            public_ip=_str(h.get("publicIp")), public_dns=_str(h.get("publicDns")),
            private_ip=_str(h.get("privateIp")), availability_zone=_str(h.get("availabilityZone")),
            ipv6_address=_str(h.get("ipv6Address")), target_group_arn=_str(h.get("targetGroupArn"))))
    region = _str(data.get("region"))
    if not region:
        raise InfraError(f"{source}: the stack has no `region` output", "run `pulumi up` with this repository's program")
    tgs = data.get("targetGroupArns") or []
    if not isinstance(tgs, list) or not all(isinstance(t, str) for t in tgs):
        raise InfraError(f"{source}: targetGroupArns is not a list of ARNs", "run `pulumi up` again")
    return StackOutputs(
        source=source, hosts=tuple(hosts), region=region, ssh_user=_str(data.get("sshUser")) or "root",
        registry_url=_str(data.get("registryUrl")), domain=_str(data.get("domain")),
        load_balancer_dns_name=_str(data.get("loadBalancerDnsName")), target_group_arns=tuple(tgs),
        ssm=bool(data.get("ssm")), app=_str(data.get("app")), raw=data)


def _from_cli(pulumi: str, stack: str, cwd: Path, run: Callable[..., subprocess.CompletedProcess]) -> StackOutputs:
    argv = [pulumi, "stack", "output", "--json", "--non-interactive", "--stack", stack]
    source = f"pulumi stack output --stack {stack}"
    try:
        r = run(argv, cwd=cwd, capture_output=True, text=True, timeout=PULUMI_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise InfraError(f"`{source}` did not answer in {PULUMI_TIMEOUT:.0f}s",
                         "check `pulumi whoami` and the network to the state backend") from None
    if r.returncode != 0:
        last = (r.stderr or r.stdout or "").strip().splitlines()
        raise InfraError(f"`{source}` failed: {last[-1] if last else f'exit {r.returncode}'}",
                         f"check `pulumi login` and `pulumi stack ls` in {cwd}")
    try:
        data = json.loads(r.stdout)
    except json.JSONDecodeError:
        raise InfraError(f"`{source}` printed something that is not JSON", "run it by hand to see why") from None
    return parse_outputs(data, source)


def _from_file(path: Path, stack: str | None) -> StackOutputs:
    export = f"pulumi stack output --json --stack {stack or 'NAME'} > {path.name}"
    if not path.is_file():
        raise InfraError(f"deploy.stack_outputs: {path} does not exist", f"export it with `{export}`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InfraError(f"deploy.stack_outputs: {path} is not JSON ({e})", f"export it again with `{export}`") from None
    return parse_outputs(data, f"file {path}")


def read_outputs(cfg, *, progress: Progress = NULL, which: Callable[[str], str | None] = shutil.which,
                 run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> StackOutputs:
    """Read the stack's outputs for `cfg` (a ferry Config) and say which source was used."""
    d = cfg.deploy
    if not d.stack and not d.stack_outputs:
        raise ConfigError("deploy: neither stack nor stack_outputs is set, so there are no AWS hosts to read",
                          'set stack = "dev" (or stack_outputs = "stack-outputs.json") under [deploy]')
    file = cfg.resolve(d.stack_outputs) if d.stack_outputs else None
    pulumi = which("pulumi") if d.stack else None
    if d.stack and pulumi:
        try:
            out = _from_cli(pulumi, d.stack, cfg.root, run)
        except InfraError as e:
            if file is None:
                raise
            progress.warn(f"{e.message}; using {file} instead")
        else:
            progress.info(f"hosts from the Pulumi stack {d.stack!r} (`{out.source}`)")
            return out
    if file is not None:
        out = _from_file(file, d.stack)
        why = "" if not d.stack else (" (the pulumi CLI is not on PATH)" if not pulumi else "")
        progress.info(f"hosts from the exported stack outputs {file}{why}")
        return out
    raise InfraError(f"deploy.stack = {d.stack!r}, but the pulumi CLI is not on PATH and deploy.stack_outputs is not set",
                     f"install the Pulumi CLI, or where it is installed run `pulumi stack output --json --stack {d.stack}"
                     " > stack-outputs.json` and set stack_outputs = \"stack-outputs.json\" under [deploy]")

"""Run the real Pulumi program (infra/__main__.py) under Pulumi's own mocks.

`run_program(config)` starts a fresh mock runtime, gives it a stack config (as the Pulumi CLI
would: every value a string, lists JSON-encoded), runs the program top to bottom and returns
every resource it declared (type, name, inputs, mocked state), every data-source call, and the
resolved stack outputs. The mocks only invent what AWS would compute (ids, ARNs, addresses);
every input checked by the tests is what the program itself declared.
"""

from __future__ import annotations

import json
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MAIN = REPO / "infra" / "__main__.py"
ACCOUNT = "123456789012"
REGION = "eu-west-1"


@dataclass
class Declared:
    type: str
    name: str
    inputs: dict
    state: dict
    id: str


@dataclass
class ProgramRun:
    resources: list[Declared] = field(default_factory=list)
    calls: list[tuple[str, dict]] = field(default_factory=list)
    outputs: dict = field(default_factory=dict)

    def of(self, type_: str) -> list[Declared]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> Declared:
        found = self.of(type_)
        assert len(found) == 1, f"expected one {type_}, got {[r.name for r in found]}"
        return found[0]

    def by_id(self, id_: str) -> Declared:
        return next(r for r in self.resources if r.id == id_)

    def call(self, token: str) -> dict:
        return next(args for t, args in self.calls if t == token)


def _arn(service: str, what: str, region: str = REGION) -> str:
    return f"arn:aws:{service}:{region}:{ACCOUNT}:{what}"


class AwsMocks(pulumi.runtime.Mocks):
    """What AWS would answer: ids, ARNs and addresses derived from the resource's name."""

    def __init__(self, run: ProgramRun):
        self.run = run
        self.instances = 0

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        name, inputs = args.name, dict(args.inputs)
        t = args.typ
        rid = f"{name}-id"
        computed: dict[str, Any] = {}
        if t == "aws:ec2/instance:Instance":
            self.instances += 1
            n = self.instances
            rid = f"i-{n:017x}"
            computed = {"publicIp": f"198.51.100.{n}", "privateIp": f"10.42.{n}.10",
                        "publicDns": f"ec2-198-51-100-{n}.{REGION}.compute.amazonaws.com",
                        "availabilityZone": f"{REGION}{'ab'[(n - 1) % 2]}",
                        "ipv6Addresses": [f"2001:db8:1200:{n}::10"] if inputs.get("ipv6AddressCount") else [],
                        "arn": _arn("ec2", f"instance/{rid}")}
        elif t == "aws:ec2/eip:Eip":
            rid = f"eipalloc-{name}"
            computed = {"publicIp": "203.0.113.10", "publicDns": f"ec2-203-0-113-10.{REGION}.compute.amazonaws.com"}
        elif t == "aws:ec2/vpc:Vpc":
            rid = "vpc-0ferry"
            computed = {"ipv6CidrBlock": "2001:db8:1200::/56" if inputs.get("assignGeneratedIpv6CidrBlock") else ""}
        elif t == "aws:ec2/subnet:Subnet":
            rid = f"subnet-{name}"
        elif t == "aws:ec2/securityGroup:SecurityGroup":
            rid = f"sg-{name}"
        elif t == "aws:ecr/repository:Repository":
            computed = {"arn": _arn("ecr", f"repository/{inputs['name']}"),
                        "repositoryUrl": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{inputs['name']}"}
        elif t == "aws:lb/loadBalancer:LoadBalancer":
            computed = {"arn": _arn("elasticloadbalancing", f"loadbalancer/app/{inputs['name']}/50dc6c495c0c9188"),
                        "dnsName": f"{inputs['name']}-1234567890.{REGION}.elb.amazonaws.com",
                        "zoneId": "Z32O12XQLNTSW2"}
        elif t == "aws:lb/targetGroup:TargetGroup":
            rid = _arn("elasticloadbalancing", f"targetgroup/{inputs['name']}/73e2d6bc24d8a067")
            computed = {"arn": rid}
        elif t == "aws:acm/certificate:Certificate":
            computed = {"arn": _arn("acm", f"certificate/{name}"), "domainValidationOptions": [{
                "domainName": inputs["domainName"], "resourceRecordName": f"_abc.{inputs['domainName']}.",
                "resourceRecordType": "CNAME", "resourceRecordValue": "_def.acm-validations.aws."}]}
        elif t == "aws:route53/record:Record":
            computed = {"fqdn": str(inputs.get("name", "")).rstrip(".")}
        elif t == "aws:route53/zone:Zone":
            computed = {"zoneId": "ZNEWZONE123", "nameServers": ["ns-1.awsdns-01.org", "ns-2.awsdns-02.net"]}
        elif t == "aws:cloudwatch/logGroup:LogGroup":
            computed = {"arn": _arn("logs", f"log-group:{inputs['name']}")}
        elif t == "aws:iam/role:Role":
            computed = {"arn": f"arn:aws:iam::{ACCOUNT}:role/{inputs.get('name', name)}",
                        "name": inputs.get("name", name)}
        elif t == "aws:iam/policy:Policy":
            computed = {"arn": f"arn:aws:iam::{ACCOUNT}:policy/{inputs.get('name', name)}"}
        elif t == "aws:rds/instance:Instance":
            # RDS makes the master secret only when asked to manage the password
            secrets = [{"secretArn": _arn("secretsmanager", f"secret:rds!db-{name}-AbCdEf"), "secretStatus": "active",
                        "kmsKeyId": _arn("kms", "key/aws-secretsmanager")}] if inputs.get("manageMasterUserPassword") else []
            computed = {"address": f"{inputs['identifier']}.c9akciq32.{REGION}.rds.amazonaws.com",
                        "arn": _arn("rds", f"db:{inputs['identifier']}"), "masterUserSecrets": secrets}
        elif t == "aws:iam/instanceProfile:InstanceProfile":
            computed = {"arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/{inputs.get('name', name)}"}
        state = {**inputs, **computed}
        self.run.resources.append(Declared(t, name, inputs, state, rid))
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.run.calls.append((args.token, dict(args.args)))
        t = args.token
        if t == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/ci", "userId": "AIDEXAMPLE", "id": ACCOUNT}
        if t == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws", "reverseDnsPrefix": "com.amazonaws"}
        if t == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"names": [f"{REGION}c", f"{REGION}a", f"{REGION}b"], "zoneIds": ["euw1-az3", "euw1-az1", "euw1-az2"],
                    "id": REGION}
        if t == "aws:ec2/getAmi:getAmi":
            return {"id": "ami-0f00dfeedface0001", "architecture": "x86_64", "name": "debian-12-amd64-20250101-1"}
        if t == "aws:route53/getZone:getZone":
            return {"zoneId": "ZEXISTING123", "name": args.args["name"], "id": "ZEXISTING123"}
        if t == "aws:ec2/getVpc:getVpc":
            return {"id": "vpc-default", "cidrBlock": "172.31.0.0/16"}
        if t == "aws:ec2/getSubnets:getSubnets":
            return {"ids": ["subnet-def-b", "subnet-def-a"], "id": REGION}
        raise NotImplementedError(f"no mock for data source {t}")


def example_config(path: Path = REPO / "Pulumi.dev.yaml") -> dict[str, Any]:
    """The example stack config, as YAML values (`ferry:key` -> value)."""
    return dict(yaml.safe_load(path.read_text())["config"])


def as_pulumi_strings(config: dict[str, Any]) -> dict[str, str]:
    """What the CLI hands a program: strings, structured values as JSON."""
    out = {}
    for k, v in config.items():
        if v is None:
            continue
        out[k] = v if isinstance(v, str) else json.dumps(v)
    return out


def run_program(config: dict[str, Any], stack: str = "dev") -> ProgramRun:
    run = ProgramRun()
    pulumi.runtime.settings.reset_options()
    pulumi.runtime.set_mocks(AwsMocks(run), project="ferry", stack=stack, preview=False)
    pulumi.runtime.set_all_config(as_pulumi_strings(config))

    def program():
        runpy.run_path(str(MAIN), run_name="__main__")
        stack_resource = pulumi.runtime.settings.get_root_resource()
        return pulumi.Output.from_input(dict(stack_resource.outputs)).apply(run.outputs.update)

    pulumi.runtime.test(program)()
    return run


def with_config(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """`hosts=3` sets ferry:hosts; `adminCidrs=None` removes the key."""
    out = dict(base)
    for k, v in changes.items():
        key = k if ":" in k else f"ferry:{k}"
        if v is None:
            out.pop(key, None)
        else:
            out[key] = v
    return out

"""Facts about the stack's instances, read from EC2 by the tags the Pulumi program puts on
everything (app, stack, managed-by): to check that the hosts in the stack outputs still exist
and run, or to find them when the outputs are out of date."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from . import session


@dataclass(frozen=True)
class InstanceFacts:
    instance_id: str
    state: str  # pending | running | stopping | stopped | shutting-down | terminated
    instance_type: str
    image_id: str
    availability_zone: str | None = None
    public_ip: str | None = None
    public_dns: str | None = None
    private_ip: str | None = None
    imdsv2_required: bool = False
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str | None:
        return self.tags.get("Name")


def _facts(i: dict) -> InstanceFacts:
    return InstanceFacts(
        instance_id=i["InstanceId"], state=i.get("State", {}).get("Name", "unknown"),
        instance_type=i.get("InstanceType", ""), image_id=i.get("ImageId", ""),
        availability_zone=i.get("Placement", {}).get("AvailabilityZone"),
        public_ip=i.get("PublicIpAddress") or None, public_dns=i.get("PublicDnsName") or None,
        private_ip=i.get("PrivateIpAddress") or None,
        imdsv2_required=i.get("MetadataOptions", {}).get("HttpTokens") == "required",
        tags={t["Key"]: t["Value"] for t in i.get("Tags", [])})


def _describe(client: Any, what: str, **kwargs: Any) -> tuple[InstanceFacts, ...]:
    out: list[InstanceFacts] = []
    token = None
    while True:
        resp = session.call(what, client.describe_instances, **kwargs, **({"NextToken": token} if token else {}))
        for reservation in resp.get("Reservations", []):
            out.extend(_facts(i) for i in reservation.get("Instances", []))
        token = resp.get("NextToken")
        if not token:
            return tuple(sorted(out, key=lambda f: (f.name or "", f.instance_id)))


def find_instances(app: str, stack: str, *, region: str, include_stopped: bool = False,
                   client: Any = None) -> tuple[InstanceFacts, ...]:
    """The stack's instances by tag, ordered by name (hello-dev-1, hello-dev-2, ...)."""
    client = client or session.client("ec2", region)
    states = ["pending", "running"] + (["stopping", "stopped"] if include_stopped else [])
    return _describe(client, f"find the instances of {app}/{stack}", Filters=[
        {"Name": "tag:app", "Values": [app]},
        {"Name": "tag:stack", "Values": [stack]},
        {"Name": "tag:managed-by", "Values": ["pulumi"]},
        {"Name": "instance-state-name", "Values": states},
    ])


def instance_facts(instance_ids: Iterable[str], *, region: str, client: Any = None) -> tuple[InstanceFacts, ...]:
    ids = list(instance_ids)
    if not ids:
        return ()
    client = client or session.client("ec2", region)
    return _describe(client, f"describe {', '.join(ids)}", InstanceIds=ids)

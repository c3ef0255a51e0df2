"""Host: one EC2 instance prepared by cloud-init, hardened, with an Elastic IP when it serves alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True)
class HostArgs:
    name: str
    tags: dict[str, str]
    ami_id: str
    instance_type: str
    subnet_id: pulumi.Input[str]
    security_group_ids: Sequence[pulumi.Input[str]]
    instance_profile: pulumi.Input[str]
    user_data: str
    root_volume_gb: int = 20
    key_name: pulumi.Input[str] | None = None
    detailed_monitoring: bool = False
    termination_protection: bool = False
    elastic_ip: bool = True  # one host: a stable address for DNS; behind a load balancer: none
    ipv6: bool = True


def metadata_options() -> dict:
    """IMDSv2 only (FSBP EC2.8), IPv4 endpoint only, hop limit 1.

    The hop limit of 1 keeps the role's credentials from containers on a *bridge* network (their
    packets cross one more hop). ferry runs its containers with `--network host`, where that
    limit does nothing: they reach 169.254.169.254 exactly as the host does. What does keep them
    out is `scripts/prepare-host`'s owner rule (ferry-imds-guard.service): IMDS is refused to
    uids 65532 (the default image.user of ferry's app images), 65534 (ferry's monitoring images)
    and 472 (Grafana). NOT protected: a container running as root (uid 0 is the host's own
    services, which need IMDS), or as any other uid (an image.user changed from 65532). The IPv6
    endpoint (fd00:ec2::254) stays off so the IPv4 rule is the only way in to guard."""
    return {"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1,
            "http_protocol_ipv6": "disabled", "instance_metadata_tags": "disabled"}


def root_volume(size_gb: int, tags: dict[str, str]) -> dict:
    return {"volume_type": "gp3", "volume_size": size_gb, "encrypted": True, "delete_on_termination": True,
            "tags": tags}


class Host(pulumi.ComponentResource):
    instance: aws.ec2.Instance
    elastic_ip: aws.ec2.Eip | None

    def __init__(self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ferry:infra:Host", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = args.tags | {"Name": args.name}
        self.instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=args.ami_id,
            instance_type=args.instance_type,
            subnet_id=args.subnet_id,
            vpc_security_group_ids=list(args.security_group_ids),
            iam_instance_profile=args.instance_profile,
            key_name=args.key_name,
            user_data=args.user_data,
            # A public address from launch, so cloud-init can fetch packages before the Elastic
            # IP (if any) takes its place.
            associate_public_ip_address=True,
            ipv6_address_count=1 if args.ipv6 else None,
            metadata_options=metadata_options(),
            root_block_device=root_volume(args.root_volume_gb, tags),
            monitoring=args.detailed_monitoring,
            disable_api_termination=args.termination_protection,
            tags=tags,
            # A newer AMI or an edited prepare-host must not replace (or stop) a running host:
            # the host patches itself (unattended-upgrades) and prepare-host can be re-run over SSH.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["ami", "user_data"]),
        )
        self.elastic_ip = None
        if args.elastic_ip:
            self.elastic_ip = aws.ec2.Eip(f"{name}-eip", domain="vpc", instance=self.instance.id, tags=tags,
                                          opts=child)
            self.public_ip = self.elastic_ip.public_ip
            self.public_dns = self.elastic_ip.public_dns
        else:
            self.public_ip = self.instance.public_ip
            self.public_dns = self.instance.public_dns
        self.instance_id = self.instance.id
        self.private_ip = self.instance.private_ip
        self.availability_zone = self.instance.availability_zone
        self.ipv6_address = (self.instance.ipv6_addresses.apply(lambda a: a[0] if a else None)
                             if args.ipv6 else pulumi.Output.from_input(None))
        self.register_outputs({"instance_id": self.instance_id, "public_ip": self.public_ip})

    def summary(self, name: str, target_group_arn: pulumi.Input[str] | None = None) -> pulumi.Output[dict]:
        """What ferry reads about this host from the stack outputs."""
        return pulumi.Output.all(
            instanceId=self.instance_id, publicIp=self.public_ip, publicDns=self.public_dns,
            privateIp=self.private_ip, availabilityZone=self.availability_zone, ipv6Address=self.ipv6_address,
            targetGroupArn=target_group_arn,
        ).apply(lambda v: {"name": name, **v})

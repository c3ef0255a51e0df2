"""LoadBalancer: several hosts behind an Application Load Balancer. HTTP redirects to HTTPS,
TLS ends here with an ACM certificate, and every host sits in one target group whose health
check is the app's health path. During a release ferry takes one host at a time out of the
target group (draining), swaps it, and puts it back once healthy (ferry/aws/alb.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pulumi
import pulumi_aws as aws

TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"  # TLS 1.3 and 1.2 only


@dataclass(frozen=True)
class LoadBalancerArgs:
    name: str  # ALB name, at most 32 characters
    target_group_name: str
    tags: dict[str, str]
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    certificate_arn: pulumi.Input[str]
    instance_ids: Sequence[pulumi.Input[str]]
    health_path: str = "/healthz"
    ipv6: bool = True
    deletion_protection: bool = False
    deregistration_delay: int = 30  # seconds a leaving host keeps its open requests


def health_check(path: str) -> dict:
    return {"enabled": True, "protocol": "HTTP", "port": "traffic-port", "path": path, "matcher": "200",
            "interval": 10, "timeout": 5, "healthy_threshold": 2, "unhealthy_threshold": 3}


class LoadBalancer(pulumi.ComponentResource):
    def __init__(self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ferry:infra:LoadBalancer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.alb = aws.lb.LoadBalancer(
            f"{name}-alb", name=args.name, load_balancer_type="application", internal=False,
            security_groups=[args.security_group_id], subnets=list(args.subnet_ids),
            ip_address_type="dualstack" if args.ipv6 else "ipv4",
            drop_invalid_header_fields=True,  # FSBP ELB.4
            desync_mitigation_mode="defensive",  # FSBP ELB.12
            enable_deletion_protection=args.deletion_protection,
            tags=args.tags | {"Name": args.name}, opts=child)
        self.target_group = aws.lb.TargetGroup(
            f"{name}-hosts", name=args.target_group_name, port=80, protocol="HTTP", target_type="instance",
            vpc_id=args.vpc_id, deregistration_delay=args.deregistration_delay,
            health_check=health_check(args.health_path), tags=args.tags, opts=child)
        for i, instance_id in enumerate(args.instance_ids):
            aws.lb.TargetGroupAttachment(f"{name}-host-{i + 1}", target_group_arn=self.target_group.arn,
                                         target_id=instance_id, port=80, opts=child)
        aws.lb.Listener(f"{name}-http", load_balancer_arn=self.alb.arn, port=80, protocol="HTTP",
                        default_actions=[{"type": "redirect", "redirect": {
                            "protocol": "HTTPS", "port": "443", "status_code": "HTTP_301"}}],
                        tags=args.tags, opts=child)  # FSBP ELB.1
        aws.lb.Listener(f"{name}-https", load_balancer_arn=self.alb.arn, port=443, protocol="HTTPS",
                        ssl_policy=TLS_POLICY, certificate_arn=args.certificate_arn,
                        default_actions=[{"type": "forward", "target_group_arn": self.target_group.arn}],
                        tags=args.tags, opts=child)
        self.dns_name = self.alb.dns_name
        self.zone_id = self.alb.zone_id
        self.target_group_arn = self.target_group.arn
        self.register_outputs({"dns_name": self.dns_name, "target_group_arn": self.target_group_arn})

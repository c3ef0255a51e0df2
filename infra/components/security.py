"""Security groups: the web open to everyone, SSH only from the admin ranges (or not at all with
SSM), monitoring never. The rules are computed by `plan()` (pure) and then declared."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

ANYWHERE_V4 = "0.0.0.0/0"
ANYWHERE_V6 = "::/0"
# Ports that stay on the host's loopback: Prometheus, Alertmanager, Grafana, the exporters,
# nginx's stub_status. No rule may ever cover them; the unit tests check every rule against this.
MONITORING_PORTS = (3000, 9090, 9093, 9100, 9113, 9115, 9180)


@dataclass(frozen=True)
class Rule:
    group: str  # "host" | "lb" | "db": whose rule it is
    direction: str  # "in" | "out"
    port: int
    cidr: str | None = None  # IPv4 or IPv6 range
    peer: str | None = None  # or the other group ("host" | "lb" | "db")
    description: str = ""

    @property
    def key(self) -> str:
        who = (self.cidr or self.peer or "").replace("/", "_").replace(":", "x").replace(".", "-")
        return f"{self.group}-{self.direction}-{self.port}-{who}"


@dataclass(frozen=True)
class SecurityGroupsArgs:
    name: str
    tags: dict[str, str]
    vpc_id: pulumi.Input[str]
    admin_cidrs: tuple[str, ...] = ()
    ssm: bool = False
    behind_load_balancer: bool = False
    ipv6: bool = True
    database: bool = False  # the RDS instance's group: 5432 from the hosts' group only

POSTGRES_PORT = 5432


def plan(args: SecurityGroupsArgs) -> list[Rule]:
    anywhere = [ANYWHERE_V4] + ([ANYWHERE_V6] if args.ipv6 else [])
    rules: list[Rule] = []
    web = "lb" if args.behind_load_balancer else "host"
    for port in (80, 443):
        for cidr in anywhere:
            rules.append(Rule(web, "in", port, cidr=cidr, description=f"web ({'HTTP' if port == 80 else 'HTTPS'})"))
    if args.behind_load_balancer:
        # TLS ends at the load balancer; it talks plain HTTP to each host's nginx.
        rules.append(Rule("lb", "out", 80, peer="host", description="to the hosts' nginx"))
        rules.append(Rule("host", "in", 80, peer="lb", description="from the load balancer"))
    if not args.ssm:
        for cidr in args.admin_cidrs:
            rules.append(Rule("host", "in", 22, cidr=cidr, description="SSH from an admin range"))
    # Out: packages, ECR, ACME, SSM all speak HTTP(S). DNS and NTP go to the VPC's own resolver
    # and time service, which security groups do not filter.
    for port in (80, 443):
        for cidr in anywhere:
            rules.append(Rule("host", "out", port, cidr=cidr, description="packages, registry, ACME, SSM"))
    if args.database:
        # the database's group has no other rule: no egress, no ingress from any range
        rules.append(Rule("db", "in", POSTGRES_PORT, peer="host", description="PostgreSQL from the hosts"))
        rules.append(Rule("host", "out", POSTGRES_PORT, peer="db", description="to the RDS database"))
    return rules


class SecurityGroups(pulumi.ComponentResource):
    host: aws.ec2.SecurityGroup
    load_balancer: aws.ec2.SecurityGroup | None
    database: aws.ec2.SecurityGroup | None

    def __init__(self, name: str, args: SecurityGroupsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ferry:infra:SecurityGroups", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        groups = {"host": aws.ec2.SecurityGroup(f"{name}-host", vpc_id=args.vpc_id,
                                                description=f"ferry hosts of {args.name}",
                                                tags=args.tags | {"Name": f"{args.name}-host"}, opts=child)}
        if args.behind_load_balancer:
            groups["lb"] = aws.ec2.SecurityGroup(f"{name}-lb", vpc_id=args.vpc_id,
                                                 description=f"load balancer of {args.name}",
                                                 tags=args.tags | {"Name": f"{args.name}-lb"}, opts=child)
        if args.database:
            groups["db"] = aws.ec2.SecurityGroup(f"{name}-db", vpc_id=args.vpc_id,
                                                 description=f"RDS database of {args.name}",
                                                 tags=args.tags | {"Name": f"{args.name}-db"}, opts=child)
        for rule in plan(args):
            kind = aws.vpc.SecurityGroupIngressRule if rule.direction == "in" else aws.vpc.SecurityGroupEgressRule
            is_v6 = rule.cidr is not None and ":" in rule.cidr
            kind(f"{name}-{rule.key}", security_group_id=groups[rule.group].id, ip_protocol="tcp",
                 from_port=rule.port, to_port=rule.port, description=rule.description,
                 cidr_ipv4=rule.cidr if rule.cidr and not is_v6 else None,
                 cidr_ipv6=rule.cidr if is_v6 else None,
                 referenced_security_group_id=groups[rule.peer].id if rule.peer else None,
                 tags=args.tags, opts=child)
        self.host = groups["host"]
        self.load_balancer = groups.get("lb")
        self.database = groups.get("db")
        self.register_outputs({"host": self.host.id})

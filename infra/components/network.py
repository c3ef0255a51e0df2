"""Network: a VPC with a public subnet in each of two availability zones (or the default VPC),
and, for the database, a private subnet in each of the same zones (no route to the internet)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .. import policies


@dataclass(frozen=True)
class NetworkArgs:
    name: str
    tags: dict[str, str]
    availability_zones: tuple[str, ...]
    use_default_vpc: bool = False
    cidr: str = "10.42.0.0/16"
    ipv6: bool = True
    flow_log_retention_days: int = 30  # 0: no flow logs
    private_subnets: bool = False  # two more subnets without an internet route (RDS)


def subnet_cidrs(cidr: str, count: int) -> list[str]:
    """The first `count` subnets, each 1/16 of the VPC (a /20 of a /16): room to add more."""
    net = ipaddress.IPv4Network(cidr)
    return [str(s) for s in list(net.subnets(new_prefix=min(net.prefixlen + 4, 28)))[:count]]


def private_subnet_cidrs(cidr: str, count: int) -> list[str]:
    """Private subnets come from the VPC's second half (a /20 at 10.42.128.0 of a /16), far from
    the public ones at its start, so more public subnets can be added without renumbering."""
    blocks = list(ipaddress.IPv4Network(cidr).subnets(new_prefix=min(ipaddress.IPv4Network(cidr).prefixlen + 4, 28)))
    half = len(blocks) // 2
    return [str(b) for b in blocks[half:half + count]]


def ipv6_subnet(vpc_block: str, index: int) -> str:
    """The index-th /64 of the VPC's Amazon-assigned /56."""
    return str(list(ipaddress.IPv6Network(vpc_block).subnets(new_prefix=64))[index])


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    subnet_ids: list[pulumi.Output[str]]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ferry:infra:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.availability_zones = list(args.availability_zones[:2])
        self.ipv6 = args.ipv6 and not args.use_default_vpc

        self.private_subnet_ids: list[pulumi.Output[str]] = []
        if args.use_default_vpc:
            if args.private_subnets:
                raise pulumi.RunError("private subnets are cut from the VPC ferry creates; set useDefaultVpc false")
            vpc = aws.ec2.get_vpc(default=True)
            subnets = aws.ec2.get_subnets(filters=[
                {"name": "vpc-id", "values": [vpc.id]},
                {"name": "default-for-az", "values": ["true"]},
                {"name": "availability-zone", "values": self.availability_zones},
            ])
            if len(subnets.ids) < 2:
                raise pulumi.RunError(
                    f"the default VPC {vpc.id} has no default subnet in {', '.join(self.availability_zones)}"
                    " (create them with `aws ec2 create-default-subnet`, or set useDefaultVpc false)")
            self.vpc_id = pulumi.Output.from_input(vpc.id)
            self.cidr = vpc.cidr_block
            self.subnet_ids = [pulumi.Output.from_input(s) for s in sorted(subnets.ids)[:2]]
        else:
            self.cidr = args.cidr
            vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=args.cidr, enable_dns_hostnames=True,
                              enable_dns_support=True, assign_generated_ipv6_cidr_block=self.ipv6,
                              tags=args.tags | {"Name": args.name}, opts=child)
            # The VPC's default security group allows all traffic between its members: take every
            # rule away so nothing can use it by accident (FSBP EC2.2).
            aws.ec2.DefaultSecurityGroup(f"{name}-default-sg", vpc_id=vpc.id, ingress=[], egress=[],
                                         tags=args.tags | {"Name": f"{args.name}-default-unused"}, opts=child)
            igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=args.tags | {"Name": args.name},
                                          opts=child)
            routes = [{"cidr_block": "0.0.0.0/0", "gateway_id": igw.id}]
            if self.ipv6:
                routes.append({"ipv6_cidr_block": "::/0", "gateway_id": igw.id})
            table = aws.ec2.RouteTable(f"{name}-public", vpc_id=vpc.id, routes=routes,
                                       tags=args.tags | {"Name": f"{args.name}-public"}, opts=child)
            self.subnet_ids = []
            for i, (az, block) in enumerate(zip(self.availability_zones, subnet_cidrs(args.cidr, 2))):
                subnet = aws.ec2.Subnet(
                    f"{name}-public-{i + 1}", vpc_id=vpc.id, cidr_block=block, availability_zone=az,
                    # Public addresses are given per instance (or an Elastic IP), never by default (FSBP EC2.15).
                    map_public_ip_on_launch=False,
                    ipv6_cidr_block=vpc.ipv6_cidr_block.apply(lambda b, i=i: ipv6_subnet(b, i)) if self.ipv6 else None,
                    assign_ipv6_address_on_creation=self.ipv6,
                    tags=args.tags | {"Name": f"{args.name}-public-{az}"}, opts=child)
                aws.ec2.RouteTableAssociation(f"{name}-public-{i + 1}", subnet_id=subnet.id,
                                              route_table_id=table.id, opts=child)
                self.subnet_ids.append(subnet.id)
            self.vpc_id = vpc.id
            if args.private_subnets:
                # no routes but the VPC's own: nothing in these subnets reaches or is reached
                # from the internet
                private = aws.ec2.RouteTable(f"{name}-private", vpc_id=vpc.id, routes=[],
                                             tags=args.tags | {"Name": f"{args.name}-private"}, opts=child)
                for i, (az, block) in enumerate(zip(self.availability_zones, private_subnet_cidrs(args.cidr, 2))):
                    subnet = aws.ec2.Subnet(
                        f"{name}-private-{i + 1}", vpc_id=vpc.id, cidr_block=block, availability_zone=az,
                        map_public_ip_on_launch=False, tags=args.tags | {"Name": f"{args.name}-private-{az}"},
                        opts=child)
                    aws.ec2.RouteTableAssociation(f"{name}-private-{i + 1}", subnet_id=subnet.id,
                                                  route_table_id=private.id, opts=child)
                    self.private_subnet_ids.append(subnet.id)

        if args.flow_log_retention_days:
            group = aws.cloudwatch.LogGroup(f"{name}-flow-logs", name=f"/ferry/{args.name}/vpc-flow-logs",
                                            retention_in_days=args.flow_log_retention_days, tags=args.tags,
                                            opts=child)
            role = aws.iam.Role(f"{name}-flow-logs", assume_role_policy=policies.to_json(
                policies.assume_role("vpc-flow-logs.amazonaws.com")), tags=args.tags, opts=child)
            aws.iam.RolePolicy(f"{name}-flow-logs", role=role.id,
                               policy=group.arn.apply(lambda arn: policies.to_json(policies.flow_logs_policy(arn))),
                               opts=child)
            aws.ec2.FlowLog(f"{name}-flow-logs", vpc_id=self.vpc_id, traffic_type="ALL",
                            log_destination_type="cloud-watch-logs", log_destination=group.arn,
                            iam_role_arn=role.arn, max_aggregation_interval=600, tags=args.tags, opts=child)

        self.register_outputs({"vpc_id": self.vpc_id, "subnet_ids": self.subnet_ids})

"""DNS: the hosted zone (looked up, or created), the app's records, and the load balancer's
certificate validated through the same zone."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True)
class DnsZoneArgs:
    zone: str
    tags: dict[str, str]
    create: bool = False


class DnsZone(pulumi.ComponentResource):
    zone_id: pulumi.Output[str]
    name_servers: pulumi.Output[list] | None

    def __init__(self, name: str, args: DnsZoneArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ferry:infra:DnsZone", name, None, opts)
        if args.create:
            zone = aws.route53.Zone(f"{name}-zone", name=args.zone, comment="managed by ferry's Pulumi program",
                                    tags=args.tags, opts=pulumi.ResourceOptions(parent=self))
            self.zone_id = zone.zone_id
            self.name_servers = zone.name_servers  # to delegate to at the domain's registrar
        else:
            found = aws.route53.get_zone(name=args.zone, private_zone=False)
            self.zone_id = pulumi.Output.from_input(found.zone_id)
            self.name_servers = None
        self.register_outputs({"zone_id": self.zone_id})


@dataclass(frozen=True)
class CertificateArgs:
    domain: str
    zone_id: pulumi.Input[str]
    tags: dict[str, str]


class Certificate(pulumi.ComponentResource):
    """An ACM certificate for the load balancer, renewed by AWS as long as the record stays."""

    arn: pulumi.Output[str]

    def __init__(self, name: str, args: CertificateArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ferry:infra:Certificate", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cert = aws.acm.Certificate(f"{name}-cert", domain_name=args.domain, validation_method="DNS",
                                   tags=args.tags, opts=child)
        option = cert.domain_validation_options.apply(lambda options: options[0])
        record = aws.route53.Record(f"{name}-validation", zone_id=args.zone_id,
                                    name=option.apply(lambda o: o.resource_record_name),
                                    type=option.apply(lambda o: o.resource_record_type),
                                    records=[option.apply(lambda o: o.resource_record_value)],
                                    ttl=300, allow_overwrite=True, opts=child)
        validation = aws.acm.CertificateValidation(f"{name}-validation", certificate_arn=cert.arn,
                                                   validation_record_fqdns=[record.fqdn], opts=child)
        self.arn = validation.certificate_arn  # usable only once validated
        self.register_outputs({"arn": self.arn})


@dataclass(frozen=True)
class DnsArgs:
    domain: str
    zone_id: pulumi.Input[str]
    # one host: its addresses ...
    ipv4: pulumi.Input[str] | None = None
    ipv6: pulumi.Input[str] | None = None
    # ... or several: an alias to the load balancer
    alias_name: pulumi.Input[str] | None = None
    alias_zone_id: pulumi.Input[str] | None = None
    alias_ipv6: bool = False
    ttl: int = 300


class Dns(pulumi.ComponentResource):
    def __init__(self, name: str, args: DnsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ferry:infra:Dns", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.records = []
        if args.alias_name is not None:
            alias = [{"name": args.alias_name, "zone_id": args.alias_zone_id, "evaluate_target_health": True}]
            for kind in ("A", "AAAA") if args.alias_ipv6 else ("A",):
                self.records.append(aws.route53.Record(f"{name}-{kind.lower()}", zone_id=args.zone_id,
                                                       name=args.domain, type=kind, aliases=alias, opts=child))
        else:
            self.records.append(aws.route53.Record(f"{name}-a", zone_id=args.zone_id, name=args.domain, type="A",
                                                   ttl=args.ttl, records=[args.ipv4], opts=child))
            if args.ipv6 is not None:
                self.records.append(aws.route53.Record(f"{name}-aaaa", zone_id=args.zone_id, name=args.domain,
                                                       type="AAAA", ttl=args.ttl, records=[args.ipv6], opts=child))
        self.register_outputs({})

"""Database: RDS PostgreSQL in the private subnets, reachable only from the hosts' security group.

Storage encrypted, SSL forced by its parameter group, automated backups, deletion protection and
a final snapshot unless the stack turns them off. The master password is generated and kept by
RDS in Secrets Manager (`manage_master_user_password`): it is never in this program, its inputs
or the stack's state; ferry reads it at deploy time (ferry/aws/secrets.py) with the deployer's
credentials and hands the app a URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pulumi
import pulumi_aws as aws

POSTGRES_PORT = 5432


@dataclass(frozen=True)
class DatabaseArgs:
    name: str  # <app>-<stack>: for descriptions
    identifier: str  # naming.db_identifier: the instance's, and its groups' and final snapshot's names
    tags: dict[str, str]
    subnet_ids: Sequence[pulumi.Input[str]]  # private, in two zones
    security_group_id: pulumi.Input[str]
    engine_version: str = "17"
    instance_class: str = "db.t4g.micro"
    storage_gb: int = 20
    db_name: str = "app"
    username: str = "ferry"
    backup_days: int = 7
    deletion_protection: bool = True
    final_snapshot: bool = True
    multi_az: bool = False


def parameter_family(engine_version: str) -> str:
    """`17` or `17.2` -> `postgres17`: the parameter group family of that major version."""
    return f"postgres{engine_version.split('.', 1)[0]}"


def parameters() -> list[dict]:
    """Every connection must use TLS (rds.force_ssl); the app's URL says sslmode=require."""
    return [{"name": "rds.force_ssl", "value": "1"}]


class Database(pulumi.ComponentResource):
    instance: aws.rds.Instance

    def __init__(self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ferry:infra:Database", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        subnets = aws.rds.SubnetGroup(f"{name}-subnets", name=args.identifier,
                                      description=f"private subnets of {args.name}'s database",
                                      subnet_ids=list(args.subnet_ids), tags=args.tags, opts=child)
        params = aws.rds.ParameterGroup(f"{name}-parameters", name=args.identifier,
                                        family=parameter_family(args.engine_version),
                                        description=f"{args.name}: TLS only", parameters=parameters(),
                                        tags=args.tags, opts=child)
        self.instance = aws.rds.Instance(
            f"{name}-instance", identifier=args.identifier, engine="postgres",
            engine_version=args.engine_version, instance_class=args.instance_class,
            allocated_storage=args.storage_gb, storage_type="gp3",
            storage_encrypted=True,  # FSBP RDS.3 (the account's aws/rds key)
            db_name=args.db_name, username=args.username, port=POSTGRES_PORT,
            manage_master_user_password=True,  # RDS makes and rotates it in Secrets Manager
            db_subnet_group_name=subnets.name, vpc_security_group_ids=[args.security_group_id],
            publicly_accessible=False,  # FSBP RDS.2
            parameter_group_name=params.name, multi_az=args.multi_az,
            backup_retention_period=args.backup_days,  # FSBP RDS.11
            deletion_protection=args.deletion_protection,  # FSBP RDS.8
            skip_final_snapshot=not args.final_snapshot,
            final_snapshot_identifier=f"{args.identifier}-final" if args.final_snapshot else None,
            copy_tags_to_snapshot=True,  # FSBP RDS.17
            auto_minor_version_upgrade=True,  # FSBP RDS.13
            tags=args.tags | {"Name": args.identifier}, opts=child)
        self.endpoint = self.instance.address  # the host name, without the port
        self.port = POSTGRES_PORT
        self.secret_arn = self.instance.master_user_secrets.apply(lambda s: s[0].secret_arn if s else None)
        self.register_outputs({"endpoint": self.endpoint, "secret_arn": self.secret_arn})

"""ferry on AWS: the stack config in, hosts that `ferry release` can deploy to out.

Read top to bottom: config -> facts about the account -> network -> registries -> security
groups -> the database (with database = true) -> IAM -> hosts -> DNS (and, with several hosts,
the load balancer) -> outputs.
ferry reads the outputs (`pulumi stack output --json`) to find the hosts and the registry.
"""

import sys
from pathlib import Path

# `main: infra/` runs this file as a script; make `infra` and `ferry` importable as packages.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi  # noqa: E402
import pulumi_aws as aws  # noqa: E402

from ferry.errors import ConfigError  # noqa: E402
from infra import config as stack_config  # noqa: E402
from infra import naming  # noqa: E402
from infra.components import (  # noqa: E402
    Certificate, CiPolicies, CiPoliciesArgs, Database, DatabaseArgs, Dns, DnsArgs, DnsZone, DnsZoneArgs, Host, HostArgs, HostRole,
    HostRoleArgs, LoadBalancer, LoadBalancerArgs, Network, NetworkArgs, Registry, RegistryArgs, SecurityGroups,
    SecurityGroupsArgs,
)
from infra.components.dns import CertificateArgs  # noqa: E402
from infra.components.registry import registry_host  # noqa: E402
from infra.userdata import UserDataArgs, render  # noqa: E402

# --- config: validated whole before anything is declared --------------------------------------
try:
    cfg = stack_config.load()
except ConfigError as e:
    raise pulumi.RunError(str(e)) from None
tags = cfg.tags()

# --- facts about the account and region -------------------------------------------------------
account = aws.get_caller_identity()
partition = aws.get_partition()
zones = aws.get_availability_zones(state="available",
                                   filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}])
if len(zones.names) < 2:
    raise pulumi.RunError(f"aws:region {cfg.region} has fewer than two availability zones; pick another region")
ami_owner, ami_name = stack_config.ami_filter(cfg.os, cfg.architecture)
ami = aws.ec2.get_ami(most_recent=True, owners=[ami_owner], filters=[
    {"name": "name", "values": [ami_name]},
    {"name": "architecture", "values": [cfg.architecture]},
    {"name": "virtualization-type", "values": ["hvm"]},
    {"name": "root-device-type", "values": ["ebs"]},
])

# --- network, registry, identity --------------------------------------------------------------
network = Network("network", NetworkArgs(
    name=cfg.name, tags=tags, availability_zones=tuple(sorted(zones.names)[:2]), use_default_vpc=cfg.use_default_vpc,
    cidr=cfg.vpc_cidr, ipv6=cfg.ipv6, flow_log_retention_days=cfg.flow_log_retention_days,
    private_subnets=cfg.database))

registry = Registry("registry", RegistryArgs(name=cfg.repository_name, tags=tags, keep_images=cfg.ecr_keep_images))
# The monitoring stack's images (`ferry monitoring images --push --prefix <monitoringPrefix>`, and
# Grafana's mirror): one repository each under the app's repository name, with the same settings,
# so two stacks in one account never claim the same names.
monitoring_prefix = cfg.repository_name
monitoring_registries = {
    name: Registry(f"monitoring-{name.rsplit('/', 1)[-1]}",
                   RegistryArgs(name=name, tags=tags, keep_images=cfg.ecr_keep_images))
    for name in naming.monitoring_repositories(monitoring_prefix)
}
monitoring_arns = [r.arn for r in monitoring_registries.values()]

host_logs = None
if cfg.cloudwatch_agent:
    host_logs = aws.cloudwatch.LogGroup("host-logs", name=f"/ferry/{cfg.name}/hosts", retention_in_days=30,
                                        tags=tags)

groups = SecurityGroups("security", SecurityGroupsArgs(
    name=cfg.name, tags=tags, vpc_id=network.vpc_id, admin_cidrs=cfg.admin_cidrs, ssm=cfg.ssm,
    behind_load_balancer=cfg.behind_load_balancer, ipv6=network.ipv6, database=cfg.database))

# --- the database: RDS PostgreSQL in the private subnets (pulumi config set database true) ---
database = None
if cfg.database:
    database = Database("database", DatabaseArgs(
        name=cfg.name, identifier=naming.db_identifier(cfg.app, cfg.stack), tags=tags, subnet_ids=network.private_subnet_ids, security_group_id=groups.database.id,
        engine_version=cfg.database_engine_version, instance_class=cfg.database_instance_class,
        storage_gb=cfg.database_storage_gb, db_name=cfg.database_name, username=cfg.database_user,
        backup_days=cfg.database_backup_days, deletion_protection=cfg.database_deletion_protection,
        final_snapshot=cfg.database_final_snapshot, multi_az=cfg.database_multi_az))
database_secret_arn = database.secret_arn if database else None

role = HostRole("iam", HostRoleArgs(
    name=cfg.name, tags=tags, repository_arn=registry.arn, partition=partition.partition, ssm=cfg.ssm,
    cloudwatch_log_group_arn=host_logs.arn if host_logs else None, monitoring_repository_arns=monitoring_arns,
    database_secret_arn=database_secret_arn))

key_name = cfg.key_name
if cfg.ssh_public_key:
    key_name = aws.ec2.KeyPair("ssh-key", key_name=f"{cfg.name}-ferry", public_key=cfg.ssh_public_key,
                               tags=tags).key_name

# --- hosts: prepared by scripts/prepare-host through cloud-init -----------------------------
ecr_registry = f"{account.account_id}.dkr.ecr.{cfg.region}.{partition.dns_suffix}"
user_data = render(UserDataArgs(
    region=cfg.region, architecture=cfg.architecture, os=cfg.os, ecr_registry=ecr_registry, ssm=cfg.ssm,
    cloudwatch_log_group=f"/ferry/{cfg.name}/hosts" if cfg.cloudwatch_agent else None))

hosts = []
for i in range(cfg.hosts):
    hosts.append(Host(f"host-{i + 1}", HostArgs(
        name=naming.host_name(cfg.app, cfg.stack, i), tags=tags, ami_id=ami.id, instance_type=cfg.instance_type,
        subnet_id=network.subnet_ids[i % 2],  # alternate the two zones
        security_group_ids=[groups.host.id], instance_profile=role.profile.name, user_data=user_data,
        root_volume_gb=cfg.root_volume_gb, key_name=key_name, detailed_monitoring=cfg.detailed_monitoring,
        termination_protection=cfg.termination_protection, elastic_ip=not cfg.behind_load_balancer,
        ipv6=network.ipv6)))

# --- DNS, and the load balancer when there are several hosts -------------------------------
zone = DnsZone("zone", DnsZoneArgs(zone=cfg.zone, tags=tags, create=cfg.create_zone)) if cfg.domain else None
balancer = None
if cfg.behind_load_balancer:
    certificate = Certificate("certificate", CertificateArgs(domain=cfg.domain, zone_id=zone.zone_id, tags=tags))
    balancer = LoadBalancer("balancer", LoadBalancerArgs(
        name=naming.alb_name(cfg.app, cfg.stack), target_group_name=naming.alb_name(cfg.app, cfg.stack, "-hosts"),
        tags=tags, vpc_id=network.vpc_id, subnet_ids=network.subnet_ids, security_group_id=groups.load_balancer.id,
        certificate_arn=certificate.arn, instance_ids=[h.instance_id for h in hosts], health_path=cfg.health_path,
        ipv6=network.ipv6, deletion_protection=cfg.termination_protection))
    Dns("dns", DnsArgs(domain=cfg.domain, zone_id=zone.zone_id, alias_name=balancer.dns_name,
                       alias_zone_id=balancer.zone_id, alias_ipv6=network.ipv6))
elif cfg.domain:
    Dns("dns", DnsArgs(domain=cfg.domain, zone_id=zone.zone_id, ipv4=hosts[0].public_ip,
                       ipv6=hosts[0].ipv6_address if network.ipv6 else None))

ci = CiPolicies("ci", CiPoliciesArgs(name=cfg.name, tags=tags, repository_arn=registry.arn,
                                     target_group_arns=[balancer.target_group_arn] if balancer else [],
                                     monitoring_repository_arns=monitoring_arns,
                                     database_secret_arn=database_secret_arn))

# --- outputs: what ferry reads (ferry/aws/stack.py) -------------------------------------------
target_group = balancer.target_group_arn if balancer else None
pulumi.export("app", cfg.app)
pulumi.export("region", cfg.region)
pulumi.export("domain", cfg.domain)
pulumi.export("url", f"https://{cfg.domain}" if cfg.domain else hosts[0].public_ip.apply(lambda ip: f"http://{ip}"))
pulumi.export("sshUser", cfg.ssh_user)
pulumi.export("ssm", cfg.ssm)
pulumi.export("hosts", [h.summary(naming.host_name(cfg.app, cfg.stack, i), target_group) for i, h in enumerate(hosts)])
pulumi.export("registryUrl", registry.url)
pulumi.export("registry", registry.url.apply(registry_host))
pulumi.export("repositoryArn", registry.arn)
pulumi.export("monitoringPrefix", monitoring_prefix)
pulumi.export("monitoringRepositories", {name: r.url for name, r in monitoring_registries.items()})
pulumi.export("loadBalancerDnsName", balancer.dns_name if balancer else None)
pulumi.export("targetGroupArns", [balancer.target_group_arn] if balancer else [])
pulumi.export("ciDeployPolicy", ci.deploy_document)
pulumi.export("ciDeployPolicyArn", ci.deploy_policy.arn)
pulumi.export("ciReleasePolicy", ci.release_document)
pulumi.export("ciReleasePolicyArn", ci.release_policy.arn if ci.release_policy else None)
pulumi.export("nameServers", zone.name_servers if zone else None)
pulumi.export("vpcId", network.vpc_id)
# the proxy's set_real_ip_from (a load balancer's addresses come from this range)
pulumi.export("vpcCidr", network.cidr)
# ferry builds the app's url_env from these at deploy time (accessories kind = "rds")
pulumi.export("databaseEndpoint", database.endpoint if database else None)
pulumi.export("databasePort", database.port if database else None)
pulumi.export("databaseName", cfg.database_name if database else None)
pulumi.export("databaseSecretArn", database_secret_arn)

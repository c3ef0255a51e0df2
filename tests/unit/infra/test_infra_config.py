"""Stack config validation (infra/config.py): pure, exact."""

from __future__ import annotations

import pytest
from pulumi_harness import as_pulumi_strings, example_config

from ferry.errors import ConfigError
from infra.config import StackConfig, ami_filter, architecture_of, decode, parse

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFAuQ0ztpiNHHkgn/6S4wJICK8d5OxtQQjaTtlgM+Cuj me"


def _parse(stack: str = "dev", region: str | None = "eu-west-1", **raw) -> StackConfig:
    return parse(raw, project="ferry", stack=stack, region=region)


def _minimal(**extra):
    return {"app": "hello", "adminCidrs": "203.0.113.7/32", "sshPublicKey": KEY, **extra}


def test_example_stack_config_parses_to_exactly_these_values():
    raw = {k.split(":", 1)[1]: decode(v) for k, v in as_pulumi_strings(example_config()).items() if k.startswith("ferry:")}
    cfg = parse(raw, project="ferry", stack="dev", region="eu-west-1")
    assert cfg == StackConfig(
        project="ferry", stack="dev", region="eu-west-1", app="hello", domain="hello.example.com", zone="example.com",
        create_zone=False, hosts=1, instance_type="t3.small", os="debian-12", root_volume_gb=20,
        admin_cidrs=("203.0.113.0/24",), ssm=False, ssh_public_key=cfg.ssh_public_key, key_name=None,
        detailed_monitoring=False, termination_protection=False, use_default_vpc=False, vpc_cidr="10.42.0.0/16",
        ipv6=True, health_path="/healthz", repository_name="hello-dev", ecr_keep_images=30, cloudwatch_agent=False,
        flow_log_retention_days=30, database=False, database_name="hello")
    assert cfg.ssh_public_key.startswith("ssh-ed25519 ")
    assert cfg.name == "hello-dev" and cfg.ssh_user == "root" and cfg.image_user == "admin"
    assert cfg.tags() == {"app": "hello", "stack": "dev", "managed-by": "pulumi"}


def test_minimal_config_takes_the_documented_defaults():
    cfg = _parse(**_minimal())
    assert (cfg.hosts, cfg.instance_type, cfg.os, cfg.root_volume_gb, cfg.ipv6, cfg.health_path) == \
        (1, "t3.small", "debian-12", 20, True, "/healthz")
    assert cfg.domain is None and cfg.zone is None and not cfg.behind_load_balancer
    assert cfg.repository_name == "hello-dev"


def test_values_arrive_as_strings_like_the_cli_gives_them():
    cfg = _parse(**_minimal(hosts="3", domain="app.shop.example.com", ssm="false", adminCidrs='["10.0.0.0/8", "2001:db8::/32"]',
                            rootVolumeGb="40"))
    assert cfg.hosts == 3 and cfg.root_volume_gb == 40 and cfg.ssm is False
    assert cfg.admin_cidrs == ("10.0.0.0/8", "2001:db8::/32")
    assert cfg.zone == "shop.example.com" and cfg.behind_load_balancer


def test_comma_separated_admin_ranges_are_accepted():
    assert _parse(**_minimal(adminCidrs="198.51.100.0/24, 203.0.113.7/32")).admin_cidrs == ("198.51.100.0/24", "203.0.113.7/32")


def test_default_vpc_turns_ipv6_off_unless_asked():
    assert _parse(**_minimal(useDefaultVpc=True)).ipv6 is False


@pytest.mark.parametrize("instance_type, arch", [
    ("t3.small", "x86_64"), ("t4g.small", "arm64"), ("m7gd.large", "arm64"), ("c6gn.xlarge", "arm64"),
    ("a1.medium", "arm64"), ("g4dn.xlarge", "x86_64"), ("m7i-flex.large", "x86_64"), ("im4gn.large", "arm64"),
])
def test_architecture_follows_the_instance_family(instance_type, arch):
    assert architecture_of(instance_type) == arch


def test_ami_filters_name_the_official_owners():
    assert ami_filter("debian-12", "arm64") == ("136693071363", "debian-12-arm64-*")
    assert ami_filter("ubuntu-24.04", "x86_64") == (
        "099720109477", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*")


@pytest.mark.parametrize("raw, region, message, fix", [
    ({"adminCidrs": "1.2.3.4/32", "sshPublicKey": KEY}, "eu-west-1", "ferry:app: missing", "pulumi config set app hello --stack dev"),
    (_minimal(), None, "aws:region: missing", "pulumi config set aws:region eu-west-1 --stack dev"),
    (_minimal(), "europe", "aws:region: 'europe' is not an AWS region", "pulumi config set aws:region"),
    (_minimal(app="Hello_App"), "eu-west-1", "ferry:app: 'Hello_App' is not a name", "pulumi config set app hello"),
    (_minimal(hosts="0"), "eu-west-1", "ferry:hosts: 0 is out of range 1..20", "pulumi config set hosts 1"),
    (_minimal(hosts="two"), "eu-west-1", "ferry:hosts: expected a whole number, got 'two'", "pulumi config set hosts 1"),
    (_minimal(hosts="2"), "eu-west-1", "ferry:hosts: several hosts sit behind a load balancer", "pulumi config set domain"),
    (_minimal(ssm="yes"), "eu-west-1", "ferry:ssm: expected true or false, got 'yes'", "pulumi config set ssm false"),
    (_minimal(adminCidrs="0.0.0.0/0"), "eu-west-1", "ferry:adminCidrs: 0.0.0.0/0 would open SSH to the whole internet",
     "pulumi config set adminCidrs 203.0.113.7/32"),
    (_minimal(adminCidrs="::/0"), "eu-west-1", "would open SSH to the whole internet", "adminCidrs"),
    (_minimal(adminCidrs="10.0.0.1/8"), "eu-west-1", "ferry:adminCidrs: '10.0.0.1/8' is not a CIDR range", "adminCidrs"),
    ({"app": "hello", "sshPublicKey": KEY}, "eu-west-1", "ferry:adminCidrs: missing", "pulumi config set ssm true"),
    (_minimal(ssm="true"), "eu-west-1", "ferry:adminCidrs: with ssm = true no SSH port is opened", "pulumi config rm adminCidrs"),
    ({"app": "hello", "adminCidrs": "1.2.3.4/32"}, "eu-west-1", "ferry:sshPublicKey: missing", "keyName"),
    (_minimal(keyName="k"), "eu-west-1", "ferry:keyName: set together with sshPublicKey", "pulumi config rm keyName"),
    (_minimal(sshPublicKey="not a key"), "eu-west-1", "ferry:sshPublicKey: 'not a key' is not an OpenSSH public key",
     "sshPublicKey"),
    (_minimal(domain="hello.example.com", zone="example.org"), "eu-west-1",
     "ferry:zone: hello.example.com is not inside the zone example.org", "pulumi config set zone example.com"),
    (_minimal(zone="example.com"), "eu-west-1", "ferry:zone: set without a domain", "pulumi config set domain"),
    (_minimal(createZone="true"), "eu-west-1", "ferry:createZone: there is no domain", "pulumi config set domain"),
    (_minimal(domain="Hello.Example.com"), "eu-west-1", "ferry:domain: 'Hello.Example.com' is not a lower-case DNS name",
     "pulumi config set domain"),
    (_minimal(os="windows"), "eu-west-1", "ferry:os: 'windows' is not one of debian-12, ubuntu-24.04", "pulumi config set os"),
    (_minimal(instanceType="big"), "eu-west-1", "ferry:instanceType: 'big' is not an EC2 instance type", "instanceType t3.small"),
    (_minimal(rootVolumeGb="4"), "eu-west-1", "ferry:rootVolumeGb: 4 is out of range 8..16384", "rootVolumeGb 20"),
    (_minimal(vpcCidr="8.8.0.0/16"), "eu-west-1", "ferry:vpcCidr: 8.8.0.0/16 is not a private range", "vpcCidr"),
    (_minimal(vpcCidr="10.0.0.0/8"), "eu-west-1", "ferry:vpcCidr: 10.0.0.0/8 must have a prefix between /16 and /24", "vpcCidr"),
    (_minimal(useDefaultVpc="true", ipv6="true"), "eu-west-1", "ferry:ipv6: the default VPC has no IPv6",
     "pulumi config set ipv6 false"),
    (_minimal(useDefaultVpc="true", vpcCidr="10.1.0.0/16"), "eu-west-1", "ferry:vpcCidr: is ignored", "pulumi config rm vpcCidr"),
    (_minimal(healthPath="healthz"), "eu-west-1", "ferry:healthPath: 'healthz' is not a path", "healthPath /healthz"),
    (_minimal(repositoryName="Hello"), "eu-west-1", "ferry:repositoryName: 'Hello' is not an ECR repository name", "repositoryName"),
    (_minimal(ecrKeepImages="0"), "eu-west-1", "ferry:ecrKeepImages: 0 is out of range 1..1000", "ecrKeepImages 30"),
    (_minimal(flowLogRetentionDays="10"), "eu-west-1", "ferry:flowLogRetentionDays: 10 is not a retention CloudWatch accepts",
     "flowLogRetentionDays 30"),
    (_minimal(hostz="2"), "eu-west-1", "ferry:hostz: unknown key", "pulumi config rm hostz --stack dev"),
])
def test_bad_config_names_file_key_problem_and_fix(raw, region, message, fix):
    with pytest.raises(ConfigError) as err:
        parse(raw, project="ferry", stack="dev", region=region)
    text = str(err.value)
    assert text.startswith("Pulumi.dev.yaml: ")
    assert message in text, text
    assert fix in text, text

"""`pulumi config set database true`: RDS PostgreSQL, run through the real program under Pulumi's
mocks. Every property the stack promises is checked on what the program declares."""

from __future__ import annotations

import ipaddress
import json

import pulumi
import pytest
from pulumi_harness import ACCOUNT, example_config, run_program, with_config

from infra.components.security import SecurityGroupsArgs, plan

DB = "aws:rds/instance:Instance"
SUBNET = "aws:ec2/subnet:Subnet"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
SG = "aws:ec2/securityGroup:SecurityGroup"


@pytest.fixture(scope="module")
def with_db():
    return run_program(with_config(example_config(), database=True))


@pytest.fixture(scope="module")
def db_no_protection():
    return run_program(with_config(example_config(), database=True, databaseDeletionProtection=False,
                                   databaseFinalSnapshot=False, databaseBackupDays=14, databaseEngineVersion="16.4",
                                   databaseName="shop", databaseUser="shop_owner", hosts=3))


@pytest.fixture(scope="module")
def without_db():
    return run_program(example_config())


def _secret_arn(run) -> str:
    return run.one(DB).state["masterUserSecrets"][0]["secretArn"]


def _group(run, name: str):
    return next(r for r in run.of(SG) if r.inputs["tags"]["Name"] == name)


def test_off_by_default_nothing_of_a_database_is_declared(without_db):
    assert without_db.of(DB) == [] and without_db.of("aws:rds/subnetGroup:SubnetGroup") == []
    assert [s for s in without_db.of(SUBNET) if "private" in s.name] == []
    assert without_db.outputs["databaseEndpoint"] is None and without_db.outputs["databaseSecretArn"] is None
    for run_doc in [json.loads(r.inputs["policy"]) for r in without_db.of("aws:iam/rolePolicy:RolePolicy")]:
        assert not any(a.startswith("secretsmanager:") for st in run_doc["Statement"] for a in st["Action"])


def test_postgres_in_two_private_subnets_of_two_zones_not_public(with_db):
    db = with_db.one(DB)
    assert db.inputs["engine"] == "postgres" and db.inputs["engineVersion"] == "17"
    assert db.inputs["publiclyAccessible"] is False
    group = with_db.one("aws:rds/subnetGroup:SubnetGroup")
    assert db.inputs["dbSubnetGroupName"] == group.inputs["name"] == "hello-dev-db"
    subnets = [with_db.by_id(i) for i in group.inputs["subnetIds"]]
    assert len(subnets) == 2
    assert {s.inputs["availabilityZone"] for s in subnets} == {"eu-west-1a", "eu-west-1b"}
    public = [s for s in with_db.of(SUBNET) if "public" in s.name]
    vpc = ipaddress.ip_network("10.42.0.0/16")
    for s in subnets:
        block = ipaddress.ip_network(s.inputs["cidrBlock"])
        assert block.subnet_of(vpc) and s.inputs["mapPublicIpOnLaunch"] is False
        assert not any(block.overlaps(ipaddress.ip_network(p.inputs["cidrBlock"])) for p in public)
        # their route table has no way out: no internet gateway, no NAT
        (assoc,) = [a for a in with_db.of("aws:ec2/routeTableAssociation:RouteTableAssociation")
                    if a.inputs["subnetId"] == s.id]
        table = with_db.by_id(assoc.inputs["routeTableId"])
        assert table.inputs.get("routes", []) == []


def test_storage_is_encrypted_and_parameters_force_ssl(with_db):
    db = with_db.one(DB)
    assert db.inputs["storageEncrypted"] is True and db.inputs["storageType"] == "gp3"
    params = with_db.one("aws:rds/parameterGroup:ParameterGroup")
    assert db.inputs["parameterGroupName"] == params.inputs["name"]
    assert params.inputs["family"] == "postgres17"
    assert {p["name"]: p["value"] for p in params.inputs["parameters"]} == {"rds.force_ssl": "1"}


def test_backups_seven_days_deletion_protection_and_final_snapshot_by_default(with_db):
    db = with_db.one(DB).inputs
    assert db["backupRetentionPeriod"] == 7
    assert db["deletionProtection"] is True
    assert db["skipFinalSnapshot"] is False and db["finalSnapshotIdentifier"] == "hello-dev-db-final"
    assert db["copyTagsToSnapshot"] is True and db["autoMinorVersionUpgrade"] is True


def test_the_stack_can_say_otherwise(db_no_protection):
    db = db_no_protection.one(DB).inputs
    assert db["backupRetentionPeriod"] == 14
    assert db["deletionProtection"] is False
    assert db["skipFinalSnapshot"] is True and "finalSnapshotIdentifier" not in db
    assert db["engineVersion"] == "16.4"
    assert db_no_protection.one("aws:rds/parameterGroup:ParameterGroup").inputs["family"] == "postgres16"
    assert (db["dbName"], db["username"]) == ("shop", "shop_owner")


def test_the_password_is_managed_by_rds_and_never_in_the_program_or_state(with_db):
    db = with_db.one(DB)
    assert db.inputs["manageMasterUserPassword"] is True
    assert db.inputs["username"] == "ferry" and db.inputs["dbName"] == "hello"
    for r in with_db.resources:  # no password input anywhere, on any resource
        assert not {"password", "passwordWo", "masterPassword"} & set(r.inputs), (r.type, r.name)
    assert "password" not in json.dumps(with_db.outputs).lower()


def test_5432_is_admitted_only_from_the_hosts_security_group(with_db, db_no_protection):
    for run in (with_db, db_no_protection):
        db_group = _group(run, "hello-dev-db")
        host_group = _group(run, "hello-dev-host")
        assert run.one(DB).inputs["vpcSecurityGroupIds"] == [db_group.id]
        into_db = [r.inputs for r in run.of(INGRESS) if r.inputs["securityGroupId"] == db_group.id]
        assert [(r["fromPort"], r["toPort"], r["ipProtocol"], r["referencedSecurityGroupId"]) for r in into_db] == \
            [(5432, 5432, "tcp", host_group.id)]
        assert all("cidrIpv4" not in r and "cidrIpv6" not in r for r in into_db)
        assert [r for r in run.of(EGRESS) if r.inputs["securityGroupId"] == db_group.id] == []
        # the hosts may open connections to it (their egress is otherwise web only)
        out = [r.inputs for r in run.of(EGRESS) if r.inputs["securityGroupId"] == host_group.id
               and r.inputs["fromPort"] == 5432]
        assert [(r["referencedSecurityGroupId"], r.get("cidrIpv4")) for r in out] == [(db_group.id, None)]
        # and no other rule anywhere mentions 5432
        assert len([r for r in run.of(INGRESS) + run.of(EGRESS) if r.inputs["fromPort"] == 5432]) == 2


def test_plan_adds_exactly_the_database_rules():
    base = SecurityGroupsArgs(name="x", tags={}, vpc_id="vpc", admin_cidrs=("203.0.113.0/24",))
    with_db = SecurityGroupsArgs(name="x", tags={}, vpc_id="vpc", admin_cidrs=("203.0.113.0/24",), database=True)
    added = [r for r in plan(with_db) if r not in plan(base)]
    assert [(r.group, r.direction, r.port, r.peer, r.cidr) for r in added] == \
        [("db", "in", 5432, "host", None), ("host", "out", 5432, "db", None)]


def test_outputs_name_the_endpoint_the_secret_and_the_vpc_range(with_db, without_db):
    db = with_db.one(DB)
    out = with_db.outputs
    assert out["databaseEndpoint"] == db.state["address"] == "hello-dev-db.c9akciq32.eu-west-1.rds.amazonaws.com"
    assert ":" not in out["databaseEndpoint"] and out["databasePort"] == 5432 and out["databaseName"] == "hello"
    assert out["databaseSecretArn"] == _secret_arn(with_db)
    assert out["databaseSecretArn"].startswith(f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:rds!")
    assert out["vpcCidr"] == without_db.outputs["vpcCidr"] == "10.42.0.0/16"


def test_vpc_cidr_output_is_the_default_vpcs_range_there():
    run = run_program(with_config(example_config(), useDefaultVpc=True, ipv6=False, vpcCidr=None))
    assert run.outputs["vpcCidr"] == "172.31.0.0/16"


def _secret_statements(doc: dict) -> list[dict]:
    return [st for st in doc["Statement"] if any(a.startswith(("secretsmanager:", "kms:")) for a in st["Action"])]


def test_host_role_and_ci_deploy_policy_read_that_one_secret_and_nothing_else(with_db, db_no_protection):
    for run in (with_db, db_no_protection):
        arn = _secret_arn(run)
        expected = [{"Sid": "ReadDatabaseSecret", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
                     "Resource": [arn]}]
        (role,) = [r for r in run.of("aws:iam/role:Role") if r.inputs.get("name") == "hello-dev-host"]
        inline = [json.loads(r.inputs["policy"]) for r in run.of("aws:iam/rolePolicy:RolePolicy")
                  if r.inputs["role"] == role.id]
        assert [st for doc in inline for st in _secret_statements(doc)] == expected
        ci = json.loads(run.outputs["ciDeployPolicy"])
        assert _secret_statements(ci) == expected
        managed = next(r for r in run.of("aws:iam/policy:Policy") if r.inputs["name"] == "hello-dev-ci-deploy")
        assert json.loads(managed.inputs["policy"]) == ci
        # the release policy (load balancer) gets nothing of it
        if run.outputs["ciReleasePolicy"]:
            assert _secret_statements(json.loads(run.outputs["ciReleasePolicy"])) == []


def test_every_taggable_resource_with_a_database_carries_the_stack_tags(with_db):
    from test_infra_program import _taggable

    checked = [r for r in with_db.resources if r.type.startswith("aws:") and _taggable(r.type)]
    for r in checked:
        tags = r.inputs.get("tags") or {}
        assert {k: tags.get(k) for k in ("app", "stack", "managed-by")} == \
            {"app": "hello", "stack": "dev", "managed-by": "pulumi"}, (r.type, r.name)
    assert {DB, "aws:rds/subnetGroup:SubnetGroup", "aws:rds/parameterGroup:ParameterGroup"} <= {r.type for r in checked}


def test_outputs_with_a_database_are_readable_by_ferry(with_db):
    from ferry.aws.secrets import StackDatabase, stack_database
    from ferry.aws.stack import parse_outputs
    parsed = parse_outputs(json.loads(json.dumps(with_db.outputs)), source="test")
    assert stack_database(parsed) == StackDatabase(endpoint=with_db.outputs["databaseEndpoint"], port=5432,
                                                   name="hello", secret_arn=_secret_arn(with_db))


@pytest.mark.parametrize("changes, key, fix", [
    ({"databaseBackupDays": 7}, "ferry:databaseBackupDays", "pulumi config set database true"),
    ({"database": True, "useDefaultVpc": True, "ipv6": False, "vpcCidr": None}, "ferry:database",
     "useDefaultVpc false"),
    ({"database": True, "databaseBackupDays": 0}, "ferry:databaseBackupDays", "pulumi config set databaseBackupDays 7"),
    ({"database": True, "databaseUser": "postgres"}, "ferry:databaseUser", "pulumi config set databaseUser ferry"),
    ({"database": True, "databaseName": "My-DB"}, "ferry:databaseName", "pulumi config set databaseName"),
    ({"database": "yes"}, "ferry:database", "pulumi config set database true"),
])
def test_bad_database_config_names_the_key_and_the_fix(changes, key, fix):
    with pytest.raises(pulumi.RunError) as err:
        run_program(with_config(example_config(), **changes))
    assert f"Pulumi.dev.yaml: {key}" in str(err.value) and fix in str(err.value), str(err.value)


@pytest.mark.parametrize("app, stack, identifier", [
    ("hello", "dev", "hello-dev-db"),
    ("1shop", "prod", "db-1shop-prod-db"),
    ("shop", "eu_prod.v2", "shop-eu-prod-v2-db"),
    ("shop", "Prod--Blue", "shop-prod-blue-db"),
    ("a" * 24, "s" * 60, "a" * 24 + "-" + "s" * 35 + "-db"),
])
def test_rds_identifiers_follow_rds_rules(app, stack, identifier):
    import re

    from infra.naming import db_identifier

    got = db_identifier(app, stack)
    assert got == identifier
    assert len(got) <= 63 and re.match(r"^[a-z](?!.*--)[a-z0-9-]*[a-z0-9]$", got)


def test_the_identifier_names_the_instance_its_groups_and_its_final_snapshot():
    run = run_program(with_config(example_config(), app="1shop", repositoryName="shop", database=True), stack="eu_prod")
    db = run.one(DB).inputs
    assert db["identifier"] == "db-1shop-eu-prod-db" and db["finalSnapshotIdentifier"] == "db-1shop-eu-prod-db-final"
    assert run.one("aws:rds/subnetGroup:SubnetGroup").inputs["name"] == db["identifier"]
    assert run.one("aws:rds/parameterGroup:ParameterGroup").inputs["name"] == db["identifier"]
    assert db["dbName"] == "db_1shop"  # PostgreSQL on RDS wants a letter first too

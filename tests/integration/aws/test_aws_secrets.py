"""deploy.secrets from AWS and the RDS URL, read by ferry's boto3 code from a moto server (real
HTTP on 127.0.0.1, in this helper's port range): by name and ARN, one JSON key, SSM SecureString,
missing ones, and denials made by moto's own IAM enforcement."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from ferry.aws import secrets as S
from ferry.aws import session
from ferry.config import parse, read_secrets
from ferry.errors import InfraError

from .motoserver import fake_env, moto_server

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def moto():
    with moto_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        for k, v in fake_env(endpoint).items():
            mp.setenv(k, v)
        for k in ("AWS_PROFILE", "AWS_REGION"):
            mp.delenv(k, raising=False)
        yield endpoint


@pytest.fixture
def aws(moto):
    httpx.post(f"{moto}/moto-api/reset", timeout=10).raise_for_status()

    class Clients:
        sm = session.client("secretsmanager", "eu-west-1")
        ssm = session.client("ssm", "eu-west-1")
        iam = session.client("iam", "eu-west-1")
        endpoint = moto
    yield Clients
    # never leave IAM enforcement on for the next test
    httpx.post(f"{moto}/moto-api/reset-auth", content=b"inf", timeout=10).raise_for_status()


def _config(tmp_path, secrets=(), accessories=None, **deploy):
    doc = tomllib.loads((ROOT / "ferry.toml").read_text())
    doc["deploy"]["secrets"] = list(secrets)
    doc["deploy"].update(deploy)
    if accessories:
        doc["accessories"] = accessories
    return parse(doc, ROOT / "ferry.toml")  # relative paths (image.source) from the repository


def test_a_secret_is_read_by_name_and_by_arn(aws, tmp_path):
    arn = aws.sm.create_secret(Name="shop/api-key", SecretString="by-name-or-arn")["ARN"]
    cfg = _config(tmp_path, ["BY_NAME=aws-sm:shop/api-key", f"BY_ARN=aws-sm:{arn}"])
    assert read_secrets(cfg) == {"BY_NAME": "by-name-or-arn", "BY_ARN": "by-name-or-arn"}


def test_the_arn_names_the_region_whatever_the_environment_says(aws, tmp_path, monkeypatch):
    arn = aws.sm.create_secret(Name="shop/regional", SecretString="from-eu-west-1")["ARN"]
    monkeypatch.setenv("AWS_REGION", "us-east-1")  # a name would be looked up there, and not found
    assert read_secrets(_config(tmp_path, [f"K=aws-sm:{arn}"])) == {"K": "from-eu-west-1"}
    with pytest.raises(InfraError, match="the secret shop/regional does not exist in us-east-1"):
        read_secrets(_config(tmp_path, ["K=aws-sm:shop/regional"]))


def test_one_key_of_a_json_secret(aws, tmp_path):
    aws.sm.create_secret(Name="shop/json", SecretString=json.dumps({"token": "t-123", "port": 6379}))
    cfg = _config(tmp_path, ["TOKEN=aws-sm:shop/json#token", "PORT=aws-sm:shop/json#port"])
    assert read_secrets(cfg) == {"TOKEN": "t-123", "PORT": "6379"}
    with pytest.raises(InfraError) as e:
        read_secrets(_config(tmp_path, ["X=aws-sm:shop/json#tokn"]))
    assert "has no key 'tokn' (its keys: port, token)" in e.value.message and "t-123" not in str(e.value)


def test_an_ssm_securestring_is_decrypted_and_a_plain_string_is_refused(aws, tmp_path):
    aws.ssm.put_parameter(Name="/shop/key", Value="ssm-secret", Type="SecureString")
    aws.ssm.put_parameter(Name="/shop/plain", Value="not-secret", Type="String")
    assert read_secrets(_config(tmp_path, ["KEY=ssm:/shop/key"])) == {"KEY": "ssm-secret"}
    with pytest.raises(InfraError) as e:
        read_secrets(_config(tmp_path, ["P=ssm:/shop/plain"]))
    assert "is a String, stored unencrypted" in e.value.message and "--type SecureString" in e.value.hint
    assert "not-secret" not in str(e.value)


def test_a_missing_secret_or_parameter_names_it_and_the_action(aws, tmp_path):
    with pytest.raises(InfraError) as e:
        read_secrets(_config(tmp_path, ["API=aws-sm:shop/nope"]))
    assert e.value.message == ("deploy.secrets: API=aws-sm:shop/nope: the secret shop/nope does not exist in "
                               "eu-west-1 (secretsmanager:GetSecretValue: ResourceNotFoundException)")
    assert "aws secretsmanager create-secret --name shop/nope" in e.value.hint
    with pytest.raises(InfraError) as e:
        read_secrets(_config(tmp_path, ["KEY=ssm:/shop/nope"]))
    assert e.value.message == ("deploy.secrets: KEY=ssm:/shop/nope: the parameter /shop/nope does not exist in "
                               "eu-west-1 (ssm:GetParameter: ParameterNotFound)")


def _deployer(aws, actions: list[str]) -> dict:
    """An IAM user allowed only `actions`, and its keys; then moto enforces IAM on every call."""
    aws.iam.create_user(UserName="deployer")
    if actions:
        aws.iam.put_user_policy(UserName="deployer", PolicyName="only", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
    key = aws.iam.create_access_key(UserName="deployer")["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def _enforce(aws, monkeypatch, creds: dict) -> None:
    import boto3

    monkeypatch.delenv("AWS_SESSION_TOKEN")
    for k, v in creds.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it keeps the credentials it first found
    httpx.post(f"{aws.endpoint}/moto-api/reset-auth", content=b"0", timeout=10).raise_for_status()


def test_a_denied_read_names_the_secret_and_the_iam_action_refused(aws, tmp_path, monkeypatch):
    aws.sm.create_secret(Name="shop/api-key", SecretString="never-shown")
    aws.ssm.put_parameter(Name="/shop/key", Value="never-shown-either", Type="SecureString")
    # allowed to read parameters, not secrets
    _enforce(aws, monkeypatch, _deployer(aws, ["ssm:GetParameter"]))
    assert read_secrets(_config(tmp_path, ["KEY=ssm:/shop/key"])) == {"KEY": "never-shown-either"}
    with pytest.raises(InfraError) as e:
        read_secrets(_config(tmp_path, ["API=aws-sm:shop/api-key", "KEY=ssm:/shop/key"]))
    msg = e.value.message
    assert msg.startswith("deploy.secrets: API=aws-sm:shop/api-key: AWS refused secretsmanager:GetSecretValue on "
                          "shop/api-key in eu-west-1 (AccessDenied: User: arn:aws:iam::"), msg
    assert "user/deployer is not authorized to perform: secretsmanager:GetSecretValue" in msg
    assert "allow secretsmanager:GetSecretValue" in e.value.hint and "ciDeployPolicy" in e.value.hint
    assert "never-shown" not in msg + e.value.hint


def test_a_denied_parameter_read_names_ssm_get_parameter(aws, tmp_path, monkeypatch):
    aws.ssm.put_parameter(Name="/shop/key", Value="hidden", Type="SecureString")
    _enforce(aws, monkeypatch, _deployer(aws, ["secretsmanager:GetSecretValue"]))
    with pytest.raises(InfraError) as e:
        read_secrets(_config(tmp_path, ["KEY=ssm:/shop/key"]))
    assert "AWS refused ssm:GetParameter on /shop/key in eu-west-1 (AccessDenied:" in e.value.message
    assert "user/deployer is not authorized to perform: ssm:GetParameter" in e.value.message
    assert "allow ssm:GetParameter" in e.value.hint


def test_the_rds_accessory_gets_its_url_from_the_stacks_secret_and_endpoint(aws, tmp_path):
    password = "Zx!9:/@?#&% p"  # what RDS generates can hold any of these
    arn = aws.sm.create_secret(Name="rds!db-0123-4567", SecretString=json.dumps(
        {"username": "ferry", "password": password}))["ARN"]
    outputs = tmp_path / "stack-outputs.json"
    outputs.write_text(json.dumps({
        "region": "eu-west-1", "hosts": [{"instanceId": "i-0123456789abcdef0", "publicIp": "203.0.113.7"}],
        "databaseEndpoint": "hello-dev-db.c9akciq32.eu-west-1.rds.amazonaws.com", "databasePort": 5432,
        "databaseName": "hello", "databaseSecretArn": arn}))
    cfg = _config(tmp_path, ["API=aws-sm:rds!db-0123-4567#username"], hosts=[], stack_outputs=str(outputs),
                  accessories={"db": {"kind": "rds", "url_env": "DATABASE_URL"}})
    values = read_secrets(cfg)
    url = urlsplit(values["DATABASE_URL"])
    assert (url.scheme, url.username, unquote(url.password), url.hostname, url.port, url.path, url.query) == \
        ("postgresql", "ferry", password, "hello-dev-db.c9akciq32.eu-west-1.rds.amazonaws.com", 5432, "/hello",
         "sslmode=require")
    assert values["API"] == "ferry"
    # database = overrides the stack's database name
    cfg = _config(tmp_path, hosts=[], stack_outputs=str(outputs),
                  accessories={"db": {"kind": "rds", "url_env": "DATABASE_URL", "database": "reports"}})
    assert urlsplit(read_secrets(cfg)["DATABASE_URL"]).path == "/reports"


def test_the_rds_secret_denied_names_the_action(aws, tmp_path, monkeypatch):
    arn = aws.sm.create_secret(Name="rds!db-1", SecretString=json.dumps({"username": "u", "password": "p"}))["ARN"]
    outputs = tmp_path / "stack-outputs.json"
    outputs.write_text(json.dumps({"region": "eu-west-1", "hosts": [{"instanceId": "i-1", "publicIp": "203.0.113.7"}],
                                   "databaseEndpoint": "db.example", "databaseSecretArn": arn}))
    cfg = _config(tmp_path, hosts=[], stack_outputs=str(outputs),
                  accessories={"db": {"kind": "rds", "url_env": "DATABASE_URL"}})
    _enforce(aws, monkeypatch, _deployer(aws, []))
    with pytest.raises(InfraError) as e:
        read_secrets(cfg)
    assert f"AWS refused secretsmanager:GetSecretValue on {arn}" in e.value.message
    assert "is not authorized to perform: secretsmanager:GetSecretValue" in e.value.message
    assert f"allow secretsmanager:GetSecretValue on {arn}" in e.value.hint
    assert S.parse_entries(cfg.deploy.secrets) == ()


def test_credentials_aws_does_not_accept_are_named_as_such(aws, tmp_path, monkeypatch):
    aws.ssm.put_parameter(Name="/shop/key", Value="hidden", Type="SecureString")
    _enforce(aws, monkeypatch, {"AWS_ACCESS_KEY_ID": "AKIAUNKNOWN000000000", "AWS_SECRET_ACCESS_KEY": "x"})
    with pytest.raises(InfraError) as e:
        read_secrets(_config(tmp_path, ["KEY=ssm:/shop/key"]))
    assert "AWS did not accept the credentials" in e.value.message and "ssm:GetParameter" in e.value.message
    assert "sts get-caller-identity" in e.value.hint

"""deploy.secrets references and the RDS URL: parsing (pure), the error mapping, the URL, and
that nothing is asked of AWS until a deploy reads the values."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from botocore.exceptions import ClientError

from ferry.aws import secrets as S
from ferry.aws.stack import parse_outputs
from ferry.config import parse, read_secrets
from ferry.errors import ConfigError, InfraError

ROOT = Path(__file__).resolve().parents[3]
ARN = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:prod/api-AbCdEf"


def _config(secrets=(), accessories=None, **deploy):
    doc = tomllib.loads((ROOT / "ferry.toml").read_text())
    doc["deploy"]["secrets"] = list(secrets)
    doc["deploy"].update(deploy)
    if accessories is not None:
        doc["accessories"] = accessories
    return parse(doc, ROOT / "ferry.toml")


@pytest.mark.parametrize("entry, ref", [
    ("API_KEY", S.SecretRef("API_KEY")),
    ("API_KEY=aws-sm:prod/api", S.SecretRef("API_KEY", "aws-sm", "prod/api")),
    (f"API_KEY=aws-sm:{ARN}", S.SecretRef("API_KEY", "aws-sm", ARN)),
    (f"TOKEN=aws-sm:{ARN}#token", S.SecretRef("TOKEN", "aws-sm", ARN, "token")),
    ("KEY=ssm:/prod/app/key", S.SecretRef("KEY", "ssm", "/prod/app/key")),
    ("KEY=ssm:arn:aws:ssm:eu-west-1:123456789012:parameter/prod/key",
     S.SecretRef("KEY", "ssm", "arn:aws:ssm:eu-west-1:123456789012:parameter/prod/key")),
])
def test_entries_name_their_source(entry, ref):
    assert S.parse_entry(entry) == ref


@pytest.mark.parametrize("entry, problem, fix", [
    ("api-key", "'api-key' is not an environment variable name", "NAME=aws-sm:"),
    ("KEY=vault:x/y", "'vault' is not a secret source", "KEY=aws-sm:<arn-or-name>[#json-key]"),
    ("KEY=/etc/passwd", "is not a secret source", "KEY=ssm:/path/to/param"),
    ("KEY=aws-sm:prod/api#", "nothing after #", "KEY=aws-sm:prod/api#password"),
    ("KEY=aws-sm:", "'' is not a Secrets Manager secret name or ARN", "KEY=aws-sm:prod/app/api-key"),
    ("KEY=aws-sm:has space", "is not a Secrets Manager secret name", "e.g."),
    ("KEY=ssm:/p#k", "is not an SSM parameter name", "no #key"),
])
def test_bad_entries_say_what_is_wrong_and_how_to_write_it(entry, problem, fix):
    with pytest.raises(ConfigError) as e:
        S.parse_entry(entry)
    assert problem in e.value.message and fix in e.value.hint, (e.value.message, e.value.hint)


def test_a_name_listed_twice_is_refused():
    with pytest.raises(ConfigError, match="deploy.secrets: KEY is listed twice"):
        S.parse_entries(["KEY", "KEY=ssm:/k"])


def test_ferry_toml_accepts_references_and_reads_nothing_from_aws_when_parsing(monkeypatch):
    from ferry.aws import session

    monkeypatch.setattr(session, "client", lambda *a, **k: pytest.fail("AWS was asked while parsing"))
    cfg = _config(["PLAIN", "API=aws-sm:prod/api#token", "KEY=ssm:/prod/key"])
    assert cfg.deploy.secrets == ("PLAIN", "API=aws-sm:prod/api#token", "KEY=ssm:/prod/key")
    with pytest.raises(ConfigError, match=r"ferry.toml: deploy.secrets: 'KEY=s3:x'"):
        _config(["KEY=s3:x"])


def test_plain_names_still_come_from_the_environment_and_ask_nothing_of_aws(monkeypatch):
    from ferry.aws import session

    monkeypatch.setattr(session, "client", lambda *a, **k: pytest.fail("AWS was asked"))
    assert read_secrets(_config(["PLAIN"]), {"PLAIN": "v"}) == {"PLAIN": "v"}


class FakeSM:
    """Answers like Secrets Manager for the pure parts' tests (the real reads: moto)."""

    def __init__(self, values):
        self.values = values
        self.asked = []

    def get_secret_value(self, SecretId):
        self.asked.append(SecretId)
        return {"SecretString": self.values[SecretId]}


def test_read_secrets_mixes_environment_and_aws_values_in_one_dict(monkeypatch):
    sm = FakeSM({"prod/api": json.dumps({"token": "t0k"}), ARN: "whole"})
    made = []

    def clients(service, region):
        made.append((service, region))
        return sm
    monkeypatch.setattr(S, "_default_clients", lambda: clients)
    cfg = _config(["PLAIN", "API=aws-sm:prod/api#token", f"WHOLE=aws-sm:{ARN}"])
    assert read_secrets(cfg, {"PLAIN": "p", "AWS_REGION": "eu-west-1"}) == {"PLAIN": "p", "API": "t0k", "WHOLE": "whole"}
    # a name: the environment's region; an ARN: its own
    assert made == [("secretsmanager", "eu-west-1"), ("secretsmanager", "eu-central-1")]


def test_without_any_region_the_error_says_how_to_give_one():
    with pytest.raises(ConfigError) as e:
        S.resolve([S.SecretRef("API", "aws-sm", "prod/api")], environ={}, clients=lambda s, r: pytest.fail())
    assert "no AWS region for prod/api" in e.value.message and "AWS_REGION" in e.value.hint


def _client_error(code, message, status, operation="GetSecretValue"):
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


# moto's answer with IAM enforcement on (seen from its server): a JSON API's denial as XML
MOTO_DENIED = ('<?xml version="1.0" encoding="utf-8"?>\n<ErrorResponse><Errors><Error><Code>AccessDenied</Code>'
               '<Message>User: arn:aws:iam::123456789012:user/deployer is not authorized to perform: '
               'secretsmanager:GetSecretValue</Message><Type>Sender</Type></Error></Errors></ErrorResponse>')


@pytest.mark.parametrize("error, action, words", [
    (_client_error("403", MOTO_DENIED, 403), "secretsmanager:GetSecretValue", "is not authorized to perform"),
    (_client_error("AccessDeniedException", "User: x is not authorized to perform: secretsmanager:GetSecretValue "
                   "on resource: prod/api", 400), "secretsmanager:GetSecretValue", "on resource"),
    (_client_error("AccessDeniedException", "Access to KMS is not allowed", 400), "kms:Decrypt", "KMS"),
    (_client_error("DecryptionFailure", "Secrets Manager can't decrypt the protected secret text using the provided "
                   "KMS key.", 400), "kms:Decrypt", "decrypt"),
])
def test_a_denied_read_names_the_secret_and_the_action_refused(error, action, words):
    class Denying:
        def get_secret_value(self, SecretId):
            raise error
    ref = S.SecretRef("API", "aws-sm", "prod/api")
    with pytest.raises(InfraError) as e:
        S.read_secrets_manager(ref, Denying(), "eu-west-1")
    msg = e.value.message
    assert f"AWS refused {action} on prod/api in eu-west-1" in msg and words in msg, msg
    assert "API=aws-sm:prod/api" in msg and f"allow {action}" in e.value.hint
    assert "<" not in msg  # the XML is unwrapped


def test_error_of_keeps_real_aws_codes():
    assert S.error_of({"Error": {"Code": "ResourceNotFoundException", "Message": "m"},
                       "ResponseMetadata": {"HTTPStatusCode": 400}}) == ("ResourceNotFoundException", "m")
    assert S.error_of({"Error": {"Code": "AccessDeniedException", "Message": "m"},
                       "ResponseMetadata": {"HTTPStatusCode": 400}}) == ("AccessDeniedException", "m")


def test_a_value_with_a_line_break_is_refused_without_showing_it():
    sm = FakeSM({"prod/pem": "-----BEGIN KEY-----\nhidden-line\n-----END KEY-----"})
    with pytest.raises(InfraError) as e:
        S.resolve([S.SecretRef("PEM", "aws-sm", "prod/pem")], environ={"AWS_REGION": "eu-west-1"},
                  clients=lambda s, r: sm)
    assert "line break" in e.value.message and "hidden-line" not in str(e.value) + (e.value.hint or "")


def test_the_rds_url_quotes_user_and_password_and_requires_ssl():
    c = S.RdsConnection("db.example.rds.amazonaws.com", 5432, "ferry", "p@ss:w/rd?#&%", "shop")
    assert c.url == ("postgresql://ferry:p%40ss%3Aw%2Frd%3F%23%26%25@db.example.rds.amazonaws.com:5432/shop"
                     "?sslmode=require")
    parts = urlsplit(c.url)
    assert unquote(parts.password) == "p@ss:w/rd?#&%" and parts.hostname == "db.example.rds.amazonaws.com"
    assert "p@ss" not in repr(c)


def _outputs(**extra):
    return parse_outputs({"region": "eu-west-1", "hosts": [{"instanceId": "i-1", "publicIp": "203.0.113.7"}],
                          **extra}, "file stack-outputs.json")


def test_an_rds_accessory_without_a_database_in_the_stack_says_how_to_turn_it_on():
    with pytest.raises(InfraError) as e:
        S.rds_connection("db", _outputs(), FakeSM({}))
    assert 'accessories.db: kind "rds"' in e.value.message and "pulumi config set database true" in e.value.hint


def test_rds_url_env_is_built_from_the_stack_outputs_and_the_secret():
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-1-AbCdEf"
    sm = FakeSM({arn: json.dumps({"username": "ferry", "password": "pw/1"})})
    cfg = _config(accessories={"db": {"kind": "rds", "url_env": "DATABASE_URL"}}, hosts=[],
                  stack_outputs="stack-outputs.json")
    out = _outputs(databaseEndpoint="hello-dev-db.x.eu-west-1.rds.amazonaws.com", databasePort=5432,
                   databaseName="hello", databaseSecretArn=arn)
    values = S.aws_values(cfg, environ={}, clients=lambda s, r: sm, read_outputs=lambda c: out)
    assert values == {"DATABASE_URL": "postgresql://ferry:pw%2F1@hello-dev-db.x.eu-west-1.rds.amazonaws.com:5432/hello"
                                      "?sslmode=require"}
    assert sm.asked == [arn]


def test_nothing_is_asked_without_references_or_rds():
    cfg = _config(["PLAIN"])
    assert S.aws_values(cfg, environ={}, clients=lambda s, r: pytest.fail(), read_outputs=lambda c: pytest.fail()) == {}


@pytest.mark.parametrize("accessory, deploy, problem", [
    ({"kind": "rds", "url_env": "DATABASE_URL"}, {}, "reads the database from the Pulumi stack"),
    ({"kind": "rds"}, {"hosts": [], "stack": "dev"}, "needs url_env"),
    ({"kind": "rds", "url_env": "DATABASE_URL", "version": "17"}, {"hosts": [], "stack": "dev"},
     "accessories.db.version: does not apply"),
    ({"kind": "rds", "url_env": "API"}, {"hosts": [], "stack": "dev", "secrets": ["API"]},
     "API is also set by deploy.secrets"),
])
def test_bad_rds_accessories_are_refused_when_parsing(accessory, deploy, problem):
    secrets = deploy.pop("secrets", [])
    with pytest.raises(ConfigError, match=problem):
        _config(secrets, accessories={"db": accessory}, **deploy)

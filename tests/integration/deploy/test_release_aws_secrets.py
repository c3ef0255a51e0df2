"""Secrets from AWS through a real release on the local target: values read from a moto server
(Secrets Manager, SSM, the RDS database secret) reach the app's 0600 env file and its container,
and nowhere else: not the logs, not --json, not the release history, not the image."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from ferry.aws import session
from ferry.local.appconfig import app_toml

from ..aws.motoserver import fake_env, moto_server
from .conftest import ferry, write_variant

pytestmark = pytest.mark.integration
APP = "aws-secrets"  # this helper's app name and ports (36000-36999)
HTTP, BLUE, GREEN = 36010, 36013, 36014


@pytest.fixture
def moto(monkeypatch):
    with moto_server() as endpoint:
        env = fake_env(endpoint)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.delenv("AWS_REGION", raising=False)
        yield env


@pytest.fixture
def aws_app(tmp_path, local_target, docker_cli):
    yield tmp_path
    subprocess.run([*docker_cli, "rm", "-f", f"{APP}-blue", f"{APP}-green"], capture_output=True)
    subprocess.run(["rm", "-rf", f"/opt/ferry/{APP}"], capture_output=True)
    subprocess.run(["nginx", "-c", local_target["nginx_conf"], "-s", "reload"], capture_output=True)


def _registry_blobs(image: str) -> list[bytes]:
    """The image's config and every layer (uncompressed), straight from the registry."""
    repo_ref, digest = image.split("@", 1)
    host, repo = repo_ref.split("/", 1)
    accept = ", ".join(["application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
                        "application/vnd.docker.distribution.manifest.v2+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json"])

    def get(path: str, headers=None) -> bytes:
        req = urllib.request.Request(f"http://{host}/v2/{repo}/{path}", headers=headers or {})
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.read()

    manifest = json.loads(get(f"manifests/{digest}", {"Accept": accept}))
    if "manifests" in manifest:  # an index: every platform's manifest
        manifests = [json.loads(get(f"manifests/{m['digest']}", {"Accept": accept})) for m in manifest["manifests"]]
    else:
        manifests = [manifest]
    out = []
    for m in manifests:
        out.append(get(f"blobs/{m['config']['digest']}"))
        for layer in m["layers"]:
            data = get(f"blobs/{layer['digest']}")
            out.append(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    return out


def _in_tar(blob: bytes, needles: list[bytes]) -> list[str]:
    """Files of a layer holding any needle (plus the raw bytes, for configs and odd layers)."""
    hits = []
    if any(n in blob for n in needles):
        hits.append("(raw)")
    try:
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            for member in tar:
                f = tar.extractfile(member) if member.isfile() else None
                if f is not None and any(n in f.read() for n in needles):
                    hits.append(member.name)
    except tarfile.TarError:
        pass
    return hits


def test_aws_secrets_reach_only_the_env_file_and_the_container(moto, aws_app, local_target, docker_cli):
    tmp = aws_app
    stamp = time.time_ns()
    token, signing, password = f"tok-{stamp}", f"sig-{stamp}", f"Pw:{stamp}/@?&"
    sm = session.client("secretsmanager", "eu-west-1")
    ssm = session.client("ssm", "eu-west-1")
    sm.create_secret(Name="shop/api", SecretString=json.dumps({"token": token}))
    ssm.put_parameter(Name="/shop/signing-key", Value=signing, Type="SecureString")
    db_arn = sm.create_secret(Name="rds!db-aws-secrets", SecretString=json.dumps(
        {"username": "ferry", "password": password}))["ARN"]
    outputs = tmp / "stack-outputs.json"
    outputs.write_text(json.dumps({
        "region": "eu-west-1", "hosts": [{"instanceId": "i-0aws0secrets0000", "publicIp": "127.0.0.1"}],
        "databaseEndpoint": "aws-secrets-db.c9akciq32.eu-west-1.rds.amazonaws.com", "databasePort": 5432,
        "databaseName": "shop", "databaseSecretArn": db_arn}))
    src = write_variant(tmp / "src", "v1")
    url = (f"postgresql://ferry:{quote(password, safe='')}@aws-secrets-db.c9akciq32.eu-west-1.rds.amazonaws.com"
           ":5432/shop?sslmode=require")
    config = tmp / "ferry.toml"
    config.write_text(app_toml(
        app=APP, source=src, http_port=HTTP, blue=BLUE, green=GREEN,
        repository=f"{local_target['registry']}/ferry-test/{APP}",
        deploy_extra=(f'stack_outputs = "{outputs}"\n'
                      'secrets = ["PLAIN", "API_TOKEN=aws-sm:shop/api#token", "SIGNING_KEY=ssm:/shop/signing-key"]\n'),
        extra='\n[accessories.db]\nkind = "rds"\nurl_env = "DATABASE_URL"\n'))
    plain = f"plain-{stamp}"
    values = [token, signing, password, quote(password, safe=""), url, plain]

    released = ferry(config, "release", "--version", "a1", "--json", env={"PLAIN": plain})
    out = json.loads(released.stdout)
    again = ferry(config, "deploy", out["image"], "--version", "a1", env={"PLAIN": plain})  # text logs
    status = ferry(config, "status", "--json")
    for what, text in (("release --json", released.stdout + released.stderr),
                       ("deploy (logs)", again.stdout + again.stderr), ("status --json", status.stdout)):
        assert not [v for v in values if v in text], f"a secret value is in the output of {what}"
    assert "already live" in again.stdout + again.stderr  # the second deploy resolved them too, then stopped

    # the env file: exactly these lines, 0600
    env_file = Path(f"/opt/ferry/{APP}/env")
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert env_file.read_text() == (f"API_TOKEN={token}\nDATABASE_URL={url}\nPLAIN={plain}\n"
                                    f"SIGNING_KEY={signing}\n")
    # the app's container has them (docker read the env file)
    inspect = json.loads(subprocess.run([*docker_cli, "inspect", f"{APP}-blue"], capture_output=True, text=True,
                                        check=True).stdout)[0]
    for line in (f"API_TOKEN={token}", f"SIGNING_KEY={signing}", f"DATABASE_URL={url}"):
        assert line in inspect["Config"]["Env"]
    assert not [v for v in values if v in json.dumps(inspect["Config"]["Labels"]) + " ".join(inspect["Args"])]

    # history and every other file ferry keeps for the app on the host
    history = Path(f"/opt/ferry/{APP}/releases.json")
    assert history.is_file() and not [v for v in values if v in history.read_text()]
    for dirpath, _, names in os.walk(f"/opt/ferry/{APP}"):
        for n in names:
            p = Path(dirpath) / n
            if p != env_file and p.is_file() and p.stat().st_size < 5_000_000:
                assert not [v for v in values if v.encode() in p.read_bytes()], f"a secret value is in {p}"

    # the image: its config and every layer, as the registry serves them
    needles = [v.encode() for v in values]
    for blob in _registry_blobs(out["image"]):
        assert _in_tar(blob, needles) == []

    # a denied read stops the next deploy before any host is touched, naming secret and action
    httpx.post(f"{moto['FERRY_AWS_ENDPOINT_URL']}/moto-api/reset-auth", content=b"0", timeout=10).raise_for_status()
    try:
        r = ferry(config, "deploy", out["image"], "--version", "a2", check=False, env={"PLAIN": plain})
    finally:
        httpx.post(f"{moto['FERRY_AWS_ENDPOINT_URL']}/moto-api/reset-auth", content=b"inf", timeout=10)
    assert r.returncode != 0
    assert "API_TOKEN=aws-sm:shop/api#token" in r.stderr and "secretsmanager:GetSecretValue" in r.stderr, r.stderr
    assert not [v for v in values if v in r.stdout + r.stderr]
    live = json.loads(ferry(config, "status", "--json").stdout)["hosts"][0]["live"]
    assert live["version"] == "a1"

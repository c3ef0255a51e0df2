"""ECR credentials through boto3 against moto in server mode (a real HTTP endpoint on
loopback; AWS itself is never contacted), and those credentials used to push."""

from __future__ import annotations

import os

import pytest

from ferry.aws import ecr
from ferry.errors import AuthError
from ferry.images.auth import RegistryAuth, credentials_for
from ferry.images.publish import RegistryPublisher
from ferry.images.registry import RegistryClient
try:  # tests/ is a package tree; without __init__.py files the folder itself is on sys.path
    from .registry_servers import ECR_ACCOUNT, make_image, shared, unique_name
except ImportError:
    from registry_servers import ECR_ACCOUNT, make_image, shared, unique_name

pytestmark = pytest.mark.integration

ECR_HOST = f"{ECR_ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com"


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Fake credentials, no shared config, no instance metadata: nothing can reach AWS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for k in ("FERRY_REGISTRY_USERNAME", "FERRY_REGISTRY_PASSWORD"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    ecr._cache.clear()
    yield monkeypatch
    ecr._cache.clear()


def test_ecr_credentials_come_from_get_authorization_token(moto_endpoint, aws_env):
    creds = ecr.ecr_credentials(ECR_HOST, endpoint_url=moto_endpoint)
    assert creds.username == "AWS"
    assert creds.password == f"{ECR_ACCOUNT}-auth-token"
    assert "ECR" in creds.source and "eu-west-1" in creds.source


def test_auto_mode_asks_ecr_for_ecr_hosts_using_the_configured_endpoint(moto_endpoint, aws_env):
    aws_env.setenv("FERRY_AWS_ENDPOINT_URL", moto_endpoint)
    creds = credentials_for(ECR_HOST, "auto")
    assert (creds.username, creds.password) == ("AWS", f"{ECR_ACCOUNT}-auth-token")
    assert credentials_for(ECR_HOST, "ecr").password == creds.password


def test_no_aws_credentials_is_a_clear_error(moto_endpoint, aws_env):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        aws_env.delenv(k)
    with pytest.raises(AuthError) as e:
        ecr.ecr_credentials(ECR_HOST, endpoint_url=moto_endpoint)
    assert "no AWS credentials" in str(e.value) and "AWS_PROFILE" in str(e.value)


def test_ecr_credentials_push_to_a_registry_that_expects_them(moto_endpoint, aws_env):
    """A registry with ECR's login (user AWS, the token as password) accepts what boto3 got."""
    reg = shared("ecr-like")
    creds = ecr.ecr_credentials(ECR_HOST, endpoint_url=moto_endpoint)
    repo = unique_name("ecr/app")
    img = make_image([{"app/x": os.urandom(2000)}])
    res = RegistryPublisher(RegistryClient(reg.address, auth=RegistryAuth(creds)), repo).publish(img, ["v1"])
    assert res.digest == img.digest

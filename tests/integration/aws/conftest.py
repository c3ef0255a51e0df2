"""A moto server (a real HTTP endpoint on 127.0.0.1, ephemeral port) for ferry's boto3 code.
Fake credentials only: nothing here can reach AWS."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                     "AWS_DEFAULT_REGION": "eu-west-1", "FERRY_AWS_ENDPOINT_URL": endpoint}.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        yield endpoint
    server.stop()


@pytest.fixture
def aws(moto_endpoint):
    """boto3 clients on the moto server (what the tests use to set the scene); every test
    starts from an empty account."""
    import httpx

    from ferry.aws import session

    httpx.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()

    class Clients:
        ec2 = session.client("ec2", "eu-west-1")
        elbv2 = session.client("elbv2", "eu-west-1")

    return Clients

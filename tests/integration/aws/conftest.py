"""A moto server (a real HTTP endpoint on 127.0.0.1, ephemeral port) for ferry's boto3 code.
Fake credentials only: nothing here can reach AWS."""

from __future__ import annotations

import pytest


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

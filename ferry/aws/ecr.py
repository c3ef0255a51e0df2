"""ECR registry credentials through boto3 (``ecr:GetAuthorizationToken``).

The token is base64 of ``AWS:<password>``, valid 12 hours, good for every repository the
caller's IAM identity may use in that account and region. The endpoint is configurable
(``endpoint_url`` or FERRY_AWS_ENDPOINT_URL) so tests talk to moto in server mode, never AWS.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from dataclasses import dataclass

from ..errors import AuthError, RegistryError
from ..images.auth import ECR_HOST, ENV_AWS_ENDPOINT, Credentials

_cache: dict[tuple[str, str | None], tuple[Credentials, float]] = {}
_cache_lock = threading.Lock()
# ECR tokens live 12 h; reuse one for an hour so a long build never asks AWS twice
CACHE_SECONDS = 3600.0


@dataclass(frozen=True)
class EcrRegistry:
    account: str
    region: str

    @classmethod
    def parse(cls, host: str) -> "EcrRegistry":
        m = ECR_HOST.match(host)
        if not m:
            raise AuthError(f"{host} is not an ECR registry host",
                            "ECR hosts look like 123456789012.dkr.ecr.eu-west-1.amazonaws.com")
        return cls(account=m.group(1), region=m.group(3))


def decode_authorization_token(token: str) -> tuple[str, str]:
    """base64 "AWS:password" -> ("AWS", "password")."""
    try:
        raw = base64.b64decode(token).decode()
    except (ValueError, UnicodeDecodeError):
        raise AuthError("ECR returned an authorization token that is not base64",
                        "retry; if it persists, check the ECR endpoint") from None
    user, sep, password = raw.partition(":")
    if not sep or not password:
        raise AuthError("ECR returned an authorization token that is not user:password",
                        "retry; if it persists, check the ECR endpoint")
    return user, password


def ecr_credentials(registry_host: str, *, endpoint_url: str | None = None, region: str | None = None,
                    use_cache: bool = True) -> Credentials:
    """Registry credentials for an ECR host, from the caller's AWS identity (env, profile,
    instance role: boto3's usual chain)."""
    reg = EcrRegistry.parse(registry_host)
    region = region or reg.region
    endpoint_url = endpoint_url or os.environ.get(ENV_AWS_ENDPOINT) or None
    key = (registry_host, endpoint_url)
    now = time.monotonic()
    if use_cache:
        with _cache_lock:
            hit = _cache.get(key)
            if hit and hit[1] > now:
                return hit[0]

    import boto3
    import botocore.exceptions as bex

    try:
        # a fresh session: the default one caches the credentials it first found
        client = boto3.session.Session().client("ecr", region_name=region, endpoint_url=endpoint_url)
        # no registryIds: it is deprecated, and the token is valid for every registry the
        # identity may use
        resp = client.get_authorization_token()
    except bex.NoCredentialsError:
        raise AuthError(f"no AWS credentials to log in to ECR {registry_host}",
                        "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run on a host with an instance role") from None
    except bex.EndpointConnectionError as e:
        raise RegistryError(f"cannot reach the ECR API for {registry_host}: {e}",
                            f"check the network, or {ENV_AWS_ENDPOINT} if you set it") from None
    except bex.ClientError as e:
        err = e.response.get("Error", {})
        raise AuthError(f"ECR refused GetAuthorizationToken for {registry_host}: {err.get('Code')}: {err.get('Message')}",
                        "the AWS identity needs ecr:GetAuthorizationToken (and pull/push rights on the repository)") from None
    except bex.BotoCoreError as e:
        raise AuthError(f"could not ask ECR for a token for {registry_host}: {e}",
                        "check the AWS configuration (region, profile)") from None
    data = resp.get("authorizationData") or []
    if not data:
        raise AuthError(f"ECR returned no authorization data for {registry_host}", "check the account id in the host name")
    user, password = decode_authorization_token(data[0]["authorizationToken"])
    creds = Credentials(user, password, source=f"ECR GetAuthorizationToken ({region})")
    with _cache_lock:
        _cache[key] = (creds, now + CACHE_SECONDS)
    return creds


"""boto3 clients with ferry's defaults; the endpoint is configurable so tests talk to moto.

`FERRY_AWS_ENDPOINT_URL` (e.g. http://127.0.0.1:PORT of a moto server) redirects every client;
unset, boto3 finds AWS's endpoints and the credentials the usual way (environment, profile,
instance role).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, TypeVar

from ..errors import InfraError

ENDPOINT_ENV = "FERRY_AWS_ENDPOINT_URL"
T = TypeVar("T")
# boto3's default session is not thread-safe while it makes a client; deploy.parallel moves
# several hosts out of the load balancer at once, each from its own thread
_clients = threading.Lock()


def client(service: str, region: str, endpoint_url: str | None = None) -> Any:
    import boto3
    from botocore.config import Config

    endpoint = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
    with _clients:
        return boto3.client(service, region_name=region, endpoint_url=endpoint,
                            config=Config(retries={"max_attempts": 5, "mode": "standard"},
                                          connect_timeout=5, read_timeout=30))


def call(what: str, fn: Callable[..., T], **kwargs: Any) -> T:
    """Run one AWS API call; turn botocore's errors into an InfraError that says what to do."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        return fn(**kwargs)
    except NoCredentialsError:
        raise InfraError(f"{what}: no AWS credentials",
                         "export AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (CI: the pipeline's role)") from None
    except ClientError as e:
        err = e.response.get("Error", {})
        code, message = err.get("Code", "?"), err.get("Message", str(e))
        hint = None
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            hint = "attach the stack's ciReleasePolicy output to the role running the release"
        raise InfraError(f"{what}: AWS refused: {code}: {message}", hint) from None
    except BotoCoreError as e:
        raise InfraError(f"{what}: {e}", "check the network and the region (FERRY_AWS_ENDPOINT_URL if set)") from None

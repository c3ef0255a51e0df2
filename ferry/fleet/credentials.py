"""What a host needs to pull the app's (or the monitoring stack's) images: the registry
credentials ferry itself resolves (env, ECR, docker config), handed to the host for one pull."""

from __future__ import annotations

from ..config import Config


def registry_credentials(cfg: Config, image: str) -> tuple[str, str] | None:
    """Credentials the host needs to pull from ``image``'s registry (None: anonymous)."""
    from ..images.auth import credentials_for

    creds = credentials_for(image.split("/", 1)[0], cfg.image.auth)
    if creds is None:
        return None
    return creds.username, creds.password

"""One exception hierarchy. Every message says what is wrong and what to do.

The CLI prints ``str(error)`` as one line on stderr and exits with ``error.exit_code``
(1 failed, 2 config, 3 lock held, 4 released but a post-deploy hook failed); ``--debug`` adds
the traceback. With ``--json`` it prints ``{"ok": false, "error", "message", "hint"}`` plus the
error's ``details`` (e.g. which host has which release when a deploy stopped).
"""

from __future__ import annotations


class FerryError(Exception):
    """Base of every error ferry raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        # structured facts for --json (never in the one-line message's place): merged into the
        # error document beside error/message/hint, which they cannot override
        self.details: dict = dict(details or {})

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message

    def to_json(self) -> dict:
        return {**self.details, "error": type(self).__name__, "message": self.message, "hint": self.hint}


class ConfigError(FerryError):
    """ferry.toml (or a stack config) is wrong; nothing was contacted."""

    exit_code = 2


class BuildError(FerryError):
    """The image could not be built from the source, requirements or base."""


class RegistryError(FerryError):
    """A registry refused, failed or could not be reached."""

    def __init__(self, message: str, hint: str | None = None, status: int | None = None,
                 details: dict | None = None):
        super().__init__(message, hint, details)
        self.status = status


class AuthError(RegistryError):
    """Credentials missing or refused (401/403)."""


class HostError(FerryError):
    """A host could not be reached or a command on it failed."""


class DeployError(FerryError):
    """A deploy step failed; traffic stays on the live colour."""


class HealthCheckFailed(DeployError):
    """The new colour never became healthy."""


class ReleaseCommandFailed(DeployError):
    """deploy.release_command exited non-zero or outlived deploy.release_timeout; nothing that
    serves changed. ``details["release_command"]`` holds its exit code and duration."""


class VolumeError(DeployError):
    """A deploy.volumes directory could not be created (the path is a file, the disk...)."""


class WorkerFailed(DeployError):
    """A [processes.NAME] container of the new release did not pass its gate."""


class LockHeld(DeployError):
    """Another deploy holds the host's lock."""

    exit_code = 3


class NothingToRollBack(DeployError):
    """There is no earlier successful release to go back to."""


class PostDeployHookFailed(FerryError):
    """Every host is live on the new release, but a deploy.post_deploy hook failed afterwards.
    Not a DeployError: traffic did move, so it has its own exit code."""

    exit_code = 4


class UnexpectedError(FerryError):
    """An exception ferry did not raise on purpose (a bug, or a failure it does not know yet),
    wrapped by the CLI so it is still one line and exit 1; ``--debug`` shows the original."""

    def __init__(self, exc: BaseException):
        text = " ".join(str(exc).split()) or "(no message)"
        super().__init__(f"unexpected {type(exc).__name__}: {text}",
                         "re-run with --debug for the traceback and report it as a ferry bug",
                         {"exception": type(exc).__name__})


class CertError(FerryError):
    """Certificate issue or renewal failed; the old certificate keeps serving."""


class LocalTargetError(FerryError):
    """A component of the local target failed to start or is missing."""


class InfraError(FerryError):
    """The Pulumi stack or AWS could not tell ferry what it needs."""


class AccessoryError(FerryError):
    """An accessory (a database or cache beside the app) could not be started, checked,
    backed up or restored; the volume is never deleted on the way."""

"""What happens to a release on a host, as the deploy reports it: ``DeployEvent`` and the
callback (``EventSink``) it goes through. The deploy knows nothing of who listens (monitoring
writes them as metrics: ``ferry.monitoring.events.record_deploy_event``), so deploy never
imports monitoring."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ..deploy.host import Host

EVENTS = ("start", "success", "failure", "rollback")


@dataclass(frozen=True)
class DeployEvent:
    """One thing that happened to a release on a host.

    kind:     "start" (before the new colour starts), "success" (traffic moved and verified),
              "failure" (the deploy gave up; traffic stayed), "rollback" (traffic moved back).
    release:  the release id the event is about (for rollback: the one now live again)
    colour:   the colour that release runs in
    duration: seconds from start to this event (success/failure/rollback)
    """

    kind: str
    release: str
    version: str = ""
    digest: str = ""
    colour: str = ""
    time: float = field(default_factory=time.time)
    duration: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVENTS:
            raise ValueError(f"deploy event kind {self.kind!r} is not one of {', '.join(EVENTS)}")


# called with the open Host the event happened on, under the deploy's lock; it must not raise
EventSink = Callable[["Host", DeployEvent], None]


def no_events(host: "Host", event: DeployEvent) -> None:
    """The sink when nobody listens."""

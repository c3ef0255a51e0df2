"""The live feed: every connected WebSocket, and a counter of messages across all of them.

In-process state: run one server process per container (`fastapi run` does) or move this to
Redis/Postgres LISTEN before adding workers."""

from __future__ import annotations

import asyncio
import logging

from fastapi import WebSocket

log = logging.getLogger(__name__)


class Hub:
    def __init__(self) -> None:
        self.clients: set[WebSocket] = set()
        self.messages = 0
        self._lock = asyncio.Lock()

    async def join(self, ws: WebSocket) -> None:
        await ws.accept()
        self.clients.add(ws)

    def leave(self, ws: WebSocket) -> None:
        self.clients.discard(ws)

    async def count(self) -> int:
        async with self._lock:
            self.messages += 1
            return self.messages

    async def broadcast(self, message: dict) -> None:
        """Send to every client; one that went away is dropped, never fails the others."""
        for ws in list(self.clients):
            try:
                await ws.send_json(message)
            except Exception:  # noqa: BLE001 - a closed socket, whatever the server's exception
                log.info("dropping a client that went away")
                self.leave(ws)


hub = Hub()

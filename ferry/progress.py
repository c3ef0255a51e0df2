"""Progress on stderr, results on stdout.

Long operations call ``progress.step("pull image")`` and ``progress.bytes(...)``; with a
terminal attached the lines are styled by rich, otherwise they are plain lines a CI log keeps.
With ``--json`` the progress still goes to stderr, so stdout holds exactly one JSON document.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Progress:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._console = None
        if self.tty:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False, soft_wrap=True)
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    def _write(self, text: str, style: str | None = None) -> None:
        if self.quiet:
            return
        with self._lock:
            if self._console is not None:
                self._console.print(text, style=style, markup=False)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()

    def _stamp(self) -> str:
        return f"{time.monotonic() - self._t0:6.2f}s"

    def step(self, message: str, host: str | None = None) -> None:
        where = f"[{host}] " if host else ""
        self._write(f"{self._stamp()} ==> {where}{message}", style="bold")

    def info(self, message: str, host: str | None = None) -> None:
        where = f"[{host}] " if host else ""
        self._write(f"{self._stamp()}     {where}{message}")

    def warn(self, message: str, host: str | None = None) -> None:
        where = f"[{host}] " if host else ""
        self._write(f"{self._stamp()} warning: {where}{message}", style="yellow")

    def bytes(self, label: str, done: int, total: int | None = None, note: str = "") -> None:
        amount = human_bytes(done) + (f" / {human_bytes(total)}" if total else "")
        self._write(f"{self._stamp()}     {label}: {amount}{(' ' + note) if note else ''}")


NULL = Progress(quiet=True)

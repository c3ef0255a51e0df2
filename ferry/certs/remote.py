"""The renewer's Host interface over ferry's SSH host (ferry/deploy/host.py), so the same
renewer code that runs on the host under the timer runs from the operator's machine."""

from __future__ import annotations

import posixpath
import shlex

from .renewer import RenewError


class RemoteHost:
    def __init__(self, host):
        self.host = host
        self.name = host.name

    def run(self, argv: list[str], check: bool = True) -> tuple[int, str]:
        r = self.host.run(argv)
        out = (r.stdout or "") + (r.stderr or "")
        if check and not r.ok:
            raise RenewError(f"{self.name}: {shlex.join(argv)} failed (exit {r.exit_code}): {out.strip()[-600:]}")
        return r.exit_code, out

    def read(self, path: str) -> bytes | None:
        text = self.host.read(path)
        return None if text is None else text.encode()

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        r = self.host.run(["mkdir", "-p", posixpath.dirname(path)])
        if not r.ok:
            raise RenewError(f"{self.name}: cannot create {posixpath.dirname(path)}: {r.stderr.strip()}",
                             "is the disk full or read-only?")
        try:
            self.host.write(path, data.decode(), mode=f"{mode:04o}")
        except Exception as e:  # HostError: say it the renewer's way, the old files stay
            raise RenewError(str(e)) from None

    def remove(self, path: str) -> None:
        self.host.run(["rm", "-f", "--", path])

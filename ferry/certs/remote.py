"""The renewer's Host interface over ferry's SSH host (ferry/deploy/host.py), so the same
renewer code that runs on the host under the timer runs from the operator's machine.

Files go over SFTP on the already-open connection: one request each, where a shell command
costs a new session (measured here: ~3 ms for an SFTP stat, ~500 ms for `ssh true`).
"""

from __future__ import annotations

import errno
import posixpath
import secrets
import shlex
import stat

from .renewer import RenewError


class RemoteHost:
    def __init__(self, host):
        self.host = host
        self.name = host.name

    @property
    def sftp(self):
        return self.host.sftp()  # the host's own SFTP session: one per connection

    def run(self, argv: list[str], check: bool = True) -> tuple[int, str]:
        r = self.host.run(argv)
        out = (r.stdout or "") + (r.stderr or "")
        if check and not r.ok:
            raise RenewError(f"{self.name}: {shlex.join(argv)} failed (exit {r.exit_code}): {out.strip()[-600:]}")
        return r.exit_code, out

    def read(self, path: str) -> bytes | None:
        try:
            with self.sftp.open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise RenewError(f"{self.name}: cannot read {path}: {e}") from None

    def makedirs(self, path: str) -> None:
        missing = []
        while path not in ("", "/"):
            try:
                if stat.S_ISDIR(self.sftp.stat(path).st_mode):
                    break
                raise RenewError(f"{self.name}: {path} exists and is not a directory")
            except FileNotFoundError:
                missing.append(path)
                path = posixpath.dirname(path)
        for p in reversed(missing):
            try:
                self.sftp.mkdir(p, 0o755)
            except OSError as e:
                raise RenewError(f"{self.name}: cannot create {p}: {e}",
                                 "is the disk full or read-only, or the path not writable?") from None

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.makedirs(posixpath.dirname(path))
        tmp = f"{path}.ferry-{secrets.token_hex(4)}"
        try:
            with self.sftp.open(tmp, "wb") as f:
                f.chmod(mode)  # before the content: a key is never readable by others
                f.write(data)
            self.sftp.posix_rename(tmp, path)
        except OSError as e:
            try:
                self.sftp.remove(tmp)
            except OSError:
                pass
            raise RenewError(f"{self.name}: cannot write {path}: {e}",
                             "is the disk full or read-only, or the path not writable?") from None

    def remove(self, path: str) -> None:
        try:
            self.sftp.remove(path)
        except FileNotFoundError:
            pass

    def readlink(self, path: str) -> str | None:
        try:
            return self.sftp.readlink(path)
        except OSError:
            return None

    def symlink(self, target: str, path: str) -> None:
        tmp = f"{path}.ferry-{secrets.token_hex(4)}"
        self.sftp.symlink(target, tmp)
        self.sftp.posix_rename(tmp, path)

    def listdir(self, path: str) -> list[str]:
        try:
            return self.sftp.listdir(path)
        except FileNotFoundError:
            return []

    def rmtree(self, path: str) -> None:
        for entry in self.sftp.listdir_attr(path):
            child = f"{path}/{entry.filename}"
            if stat.S_ISDIR(entry.st_mode):
                self.rmtree(child)
            else:
                self.sftp.remove(child)
        self.sftp.rmdir(path)

    def exists(self, path: str) -> bool:
        try:
            self.sftp.stat(path)
            return True
        except OSError:
            return False

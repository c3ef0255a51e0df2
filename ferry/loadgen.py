"""A bounded HTTP load on loopback with `hey`, for the zero-downtime tests and benchmarks.

Started before an operation and stopped (SIGINT: hey then prints its report) right after it;
``max_seconds`` bounds it even if the caller never stops it.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from urllib.parse import urlparse


class Load:
    def __init__(self, url: str, concurrency: int = 16, max_seconds: int = 120, qps: int = 10):
        host = urlparse(url).hostname or ""
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            raise ValueError(f"load is only sent to loopback, not {host}")
        self.url = url
        self.proc = subprocess.Popen(["hey", "-z", f"{max_seconds}s", "-c", str(concurrency), "-q", str(qps),
                                      "-t", "30", url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(0.5)

    def stop(self) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=60)
        return parse_hey(out)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def parse_hey(out: str) -> dict:
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors = []
    if "Error distribution:" in out:
        errors = re.findall(r"^\s+\[(\d+)\]\s+(.+)$", out.split("Error distribution:")[1], re.M)
    total = sum(codes.values()) + sum(int(n) for n, _ in errors)
    failed = sum(n for c, n in codes.items() if c >= 500) + sum(int(n) for n, _ in errors)

    def pct(p: str) -> float | None:
        m = re.search(rf"{p}% in ([\d.]+) secs", out)
        return float(m.group(1)) if m else None

    return {"total": total, "failed": failed, "codes": codes, "errors": errors,
            "p50": pct("50"), "p99": pct("99"), "raw": out[-2000:]}

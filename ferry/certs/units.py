"""What runs the renewal on the host: a systemd timer + service, or a cron entry on hosts without
systemd (pure renderers; ``ferry.certs.issue`` installs them). Twice a day, at a minute of the
hour spread by app name, as Let's Encrypt asks of clients so renewals do not all land on :00.
The renewer itself decides whether anything is due, so a run that has nothing to do is cheap.
"""

from __future__ import annotations

import hashlib
import shlex


def unit_name(app: str) -> str:
    return f"ferry-certs-{app}"


def command(host_python: str, app_dir: str) -> list[str]:
    return [host_python, f"{app_dir}/tls/renew.py", "--config", f"{app_dir}/tls/renew.json"]


def _minute(app: str) -> int:
    return int(hashlib.sha256(app.encode()).hexdigest(), 16) % 60


def systemd_service(app: str, host_python: str, app_dir: str, metrics_dir: str | None) -> str:
    return f"""# managed by ferry (ferry certs issue): renews {app}'s certificate when it is due
[Unit]
Description=Renew the TLS certificate of {app} (ferry)
Wants=network-online.target
After=network-online.target nginx.service

[Service]
Type=oneshot
ExecStart={shlex.join(command(host_python, app_dir))}
# /usr, /boot and /etc read-only; not "strict": `nginx -t` opens nginx's logs and temp
# directories under /var for writing, and a failing check would block every renewal
ProtectSystem=full
PrivateTmp=yes
ProtectHome=yes
NoNewPrivileges=yes
"""


def systemd_timer(app: str) -> str:
    m = _minute(app)
    return f"""# managed by ferry (ferry certs issue)
[Unit]
Description=Renew the TLS certificate of {app} twice a day (ferry)

[Timer]
OnCalendar=*-*-* 00,12:{m:02d}:00
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
"""


def cron_entry(app: str, host_python: str, app_dir: str) -> str:
    m = _minute(app)
    log = f"{app_dir}/tls/renew.log"
    return f"""# managed by ferry (ferry certs issue): renews {app}'s certificate when it is due
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
{m} 0,12 * * * root {shlex.join(command(host_python, app_dir))} >> {shlex.quote(log)} 2>&1
"""


def files(kind: str, app: str, host_python: str, app_dir: str, metrics_dir: str | None) -> dict[str, str]:
    """path on the host -> content, for ``kind`` "systemd" or "cron"."""
    name = unit_name(app)
    if kind == "systemd":
        return {f"/etc/systemd/system/{name}.service": systemd_service(app, host_python, app_dir, metrics_dir),
                f"/etc/systemd/system/{name}.timer": systemd_timer(app)}
    if kind == "cron":
        return {f"/etc/cron.d/{name}": cron_entry(app, host_python, app_dir)}
    raise ValueError(kind)


def enable_commands(kind: str, app: str) -> list[list[str]]:
    if kind == "systemd":
        return [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", f"{unit_name(app)}.timer"]]
    return []  # cron reads /etc/cron.d by itself

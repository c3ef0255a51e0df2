"""`ferry certs issue | renew | status`: ACME certificates through nginx (ferry/certs/manage.py)."""

from __future__ import annotations

import click

from ..cli import Context, command, emit


def _summary(r: dict) -> str:
    what = "renewed" if r.get("renewed") else "kept"
    lines = [f"{r['domain']}: certificate {what} ({r.get('reason', '')})",
             f"  serial {r.get('serial')}  issuer {r.get('issuer')}",
             f"  expires {r.get('not_after')} ({r.get('days_left')} days left)",
             f"  https://{r['domain']}" + ("" if r["https_port"] == 443 else f":{r['https_port']}") + "/"]
    ren = r.get("renewal") or {}
    if ren:
        lines.append(f"  renewal: {ren.get('kind')}" + (f" ({', '.join(ren.get('files', []))})" if ren.get("files") else "")
                     + (f"; {ren['note']}" if ren.get("note") else ""))
    return "\n".join(lines)


def _status_text(r: dict) -> str:
    lines = []
    for h in r["hosts"]:
        served = h["served_serial"]
        mark = "" if served == h["serial"] else f" (nginx serves {served or 'nothing'} on :{r['https_port']})"
        if h["serial"] is None:
            lines.append(f"{h['host']}: {r['domain']}: no certificate{mark}")
        else:
            lines.append(f"{h['host']}: {r['domain']}: {h['days_left']:.0f} days left (until {h['not_after']}), "
                         f"issuer {h['issuer']}, serial {h['serial']}{mark}; renewal {h['renewal'] or 'not installed'}; "
                         f"{h['why']}")
    return "\n".join(lines)


def register(main: click.Group) -> None:
    @main.group()
    def certs() -> None:
        """TLS certificates from an ACME CA (Let's Encrypt) through nginx, renewed on the host.

        \b
        Examples:
          ferry certs issue                 # DNS check, HTTP-01 via nginx, switch the site to HTTPS
          ferry certs renew --force --json  # order a new certificate now
          ferry certs status --json         # domain, not_after, days_left, issuer per host
        """

    @command(certs, "issue")
    @click.option("--force", is_flag=True, help="Order a new certificate even if the current one is not due.")
    @click.option("--skip-dns-check", is_flag=True,
                  help="Do not check that the domain resolves to the host first (the CA still checks).")
    def issue(ctx: Context, force: bool, skip_dns_check: bool) -> None:
        """Get a certificate for app.domain and serve the app over HTTPS.

        \b
        Example:
          ferry certs issue    # after the DNS record exists and the app is deployed
        """
        from .manage import issue as run

        r = run(ctx.config(), force=force, dns_check=False if skip_dns_check else None, progress=ctx.progress)
        emit(ctx, r, _summary)

    @command(certs, "renew")
    @click.option("--force", is_flag=True, help="Renew even if the certificate is not due.")
    def renew(ctx: Context, force: bool) -> None:
        """Renew now if due (under tls.renew_before_days left) or forced; reload nginx gracefully.

        \b
        Example:
          ferry certs renew --force
        """
        from .manage import issue as run

        r = run(ctx.config(), force=force, renew_only=True, progress=ctx.progress)
        emit(ctx, r, _summary)

    @command(certs, "status")
    def status(ctx: Context) -> None:
        """What each host has on disk and what nginx serves.

        \b
        Example:
          ferry certs status --json
        """
        from .manage import status as run

        emit(ctx, run(ctx.config(), progress=ctx.progress), _status_text)

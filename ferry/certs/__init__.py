"""ACME certificates through nginx (`ferry certs issue | renew | status`; nginx/TLS.md).

- ``renewer.py``  the ACME conversation, the certificate swap and the metric; self-contained,
                  so it is also copied to each host where the timer runs it
- ``manage.py``   issue / renew / status from the operator's machine over SSH
- ``remote.py``   the renewer's host interface over ferry's SSH host (files via SFTP)
- ``dns.py``      the DNS pre-check
- ``units.py``    the systemd timer + service, or cron entry, that renews on the host
- ``commands.py`` the command line
"""

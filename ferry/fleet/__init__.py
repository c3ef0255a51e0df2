"""The fleet layer: which hosts an app runs on and how ferry reaches them, shared by deploy,
certs and monitoring (none of which reaches into another for it).

``hosts.py`` turns ferry.toml (deploy.hosts or a stack's outputs) into ``HostTarget``s;
``connect.py`` opens them (``connect``, ``connected``) and runs one action per host in batches
(``for_each_host``); ``credentials.py`` is what a host needs to pull; ``events.py`` the deploy's
events and the callback they go through; ``argv.py`` the host commands of ``ferry logs`` /
``ferry exec`` and the shared login + pull script; ``operate.py`` runs logs and exec.
"""

"""Several hosts: one order, the challenge on every host, the same certificate everywhere, and
no per-host timer (each would order its own and publish its token on one host only).

The local target is one machine, so the two "hosts" are two SSH connections to it under two
names; that exercises the fan-out (every write and install goes to each connection), not the
network between hosts."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_several_hosts_share_one_certificate_and_renew_from_one_place(make_app, local_target):
    port = local_target["ssh"].rsplit(":", 1)[1]
    app = make_app("certs-fleet", hosts=[f"root@127.0.0.1:{port}", f"root@localhost:{port}"])
    rc, doc, err = app.ferry("certs", "issue")
    assert rc == 0, err
    assert doc["hosts"] == [f"root@127.0.0.1:{port}", f"root@localhost:{port}"]
    assert err.count("challenge published on 2 host(s)") == 1  # one order for the fleet
    assert err.count("==> install the certificate on") == 2
    assert doc["renewal"]["kind"] == "none" and "ferry certs renew" in doc["renewal"]["note"]
    rc, status, err = app.ferry("certs", "status")
    assert rc == 0, err
    assert [h["serial"] for h in status["hosts"]] == [doc["serial"]] * 2
    assert [h["renewal"] for h in status["hosts"]] == [None, None]
    assert app.served_serial() == doc["serial"]

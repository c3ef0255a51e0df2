"""OCSP stapling where the CA offers it. pebble has no OCSP responder (and Let's Encrypt no
longer runs one), so this test plays a CA that does: its own root and intermediate, a leaf
naming an OCSP URL, and a responder (cryptography's OCSP builder behind http.server; `openssl
ocsp` cannot bind loopback only) answering for it on 127.0.0.1. nginx must staple a
verified response; with pebble's certificates (no URL) the other tests show nothing breaks."""

from __future__ import annotations

import datetime
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from ferry.certs import manage
from ferry.certs import renewer as R

from .conftest import openssl

pytestmark = pytest.mark.integration
PEM = serialization.Encoding.PEM


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(subject, issuer_name, issuer_key, key, now):
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(issuer_key, hashes.SHA256()))


@pytest.fixture
def ocsp_ca(tmp_path):
    now = datetime.datetime.now(datetime.timezone.utc)
    root_key, ica_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = _ca("OCSP Test Root", _name("OCSP Test Root"), root_key, root_key, now)
    ica = _ca("OCSP Test Intermediate", root.subject, root_key, ica_key, now)
    (tmp_path / "root.pem").write_bytes(root.public_bytes(PEM))
    issued: dict[int, x509.Certificate] = {}
    answered: list[int] = []

    class Responder(BaseHTTPRequestHandler):
        def _answer(self, der: bytes) -> None:
            req = ocsp.load_der_ocsp_request(der)
            leaf = issued.get(req.serial_number)
            if leaf is None:
                resp = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
            else:
                t = datetime.datetime.now(datetime.timezone.utc)
                resp = (ocsp.OCSPResponseBuilder()
                        .add_response(cert=leaf, issuer=ica, algorithm=hashes.SHA1(), cert_status=ocsp.OCSPCertStatus.GOOD,
                                      this_update=t - datetime.timedelta(minutes=1),
                                      next_update=t + datetime.timedelta(hours=1),
                                      revocation_time=None, revocation_reason=None)
                        .responder_id(ocsp.OCSPResponderEncoding.HASH, ica)
                        .sign(ica_key, hashes.SHA256()))
                answered.append(req.serial_number)
            body = resp.public_bytes(serialization.Encoding.DER)
            self.send_response(200)
            self.send_header("Content-Type", "application/ocsp-response")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # nginx asks with GET: /<url-encoded base64 DER> (RFC 6960 A.1)
            import base64
            import urllib.parse

            self._answer(base64.b64decode(urllib.parse.unquote(self.path.lstrip("/"))))

        def do_POST(self):
            self._answer(self.rfile.read(int(self.headers["Content-Length"])))

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Responder)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def issue(domain: str) -> tuple[str, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (x509.CertificateBuilder().subject_name(_name(domain)).issuer_name(ica.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=90))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
                .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                    x509.oid.AuthorityInformationAccessOID.OCSP,
                    x509.UniformResourceIdentifier(f"http://127.0.0.1:{port}/"))]), critical=False)
                .sign(ica_key, hashes.SHA256()))
        issued[leaf.serial_number] = leaf
        chain = (leaf.public_bytes(PEM) + ica.public_bytes(PEM)).decode()
        return chain, key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    yield {"issue": issue, "root": str(tmp_path / "root.pem"), "answered": answered}
    server.shutdown()
    server.server_close()


def test_nginx_staples_a_verified_ocsp_response_when_the_certificate_names_a_responder(make_app, ocsp_ca):
    app = make_app("certs-ocsp")
    chain, key = ocsp_ca["issue"](app.domain)
    s = manage.settings(app.cfg)
    # as a renewal installs it, then the site switched to HTTPS as `ferry certs issue` does
    with app.host() as h:
        from ferry.certs.remote import RemoteHost
        from ferry.fleet.connect import Connected
        from ferry.fleet.hosts import HostTarget

        rh = RemoteHost(h)
        manage.prepare(app.cfg, rh)
        info = R.install(rh, s, key, chain, log=lambda m: None, check_served=False)
        manage._ensure_tls_site(app.cfg, Connected(HostTarget(h.spec), h), rh)
        assert R.verify(rh, s, info.serial, log=lambda m: None)
    # nginx fetches the response on the first handshakes and staples it from then on
    deadline = time.monotonic() + 30
    while True:
        r = openssl("s_client", "-connect", "127.0.0.1:8443", "-servername", app.domain, "-status",
                    "-CAfile", ocsp_ca["root"], "-verify_return_error")
        assert "Verify return code: 0 (ok)" in r.stdout, r.stdout + r.stderr
        if "OCSP Response Status: successful" in r.stdout:
            break
        assert time.monotonic() < deadline, "nginx never stapled an OCSP response:\n" + r.stdout
        time.sleep(0.5)
    assert "Cert Status: good" in r.stdout
    assert int(info.serial, 16) in ocsp_ca["answered"]

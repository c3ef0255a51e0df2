"""The DNS pre-check: before asking the CA, the domain must resolve to the host(s) ferry serves it
from. A CA that finds the wrong address fails the challenge and counts it against the account's
failed-validation limit (Let's Encrypt: 5 per hour per name), so the mistake is caught here with
a message that says which record is wrong.

``check`` is pure (resolved vs expected); ``resolve`` asks a resolver (tls.resolver, or the
system's) with dnspython; ``expected_addresses`` reads tls.public_addresses or the hosts.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from ..errors import CertError


@dataclass(frozen=True)
class Resolution:
    name: str
    addresses: frozenset[str]
    error: str | None = None  # NXDOMAIN, no answer, timeout


def resolve(name: str, resolver: str | None = None, timeout: float = 5.0) -> Resolution:
    """A and AAAA records of ``name`` from ``resolver`` ("IP[:port]") or the system resolver."""
    import dns.exception
    import dns.resolver

    if resolver is None:
        r = dns.resolver.Resolver()
    else:
        r = dns.resolver.Resolver(configure=False)
        host, port = _split(resolver)
        r.nameservers = [host]
        r.port = port
    r.lifetime = timeout
    found: set[str] = set()
    errors: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = r.resolve(name, rdtype, search=False)
            found.update(a.to_text() for a in answer)
        except dns.resolver.NXDOMAIN:
            return Resolution(name, frozenset(), "the name does not exist (NXDOMAIN)")
        except dns.resolver.NoAnswer:
            continue
        except dns.resolver.NoNameservers as e:
            errors.append(f"no name server answered ({e})")
        except dns.exception.Timeout:
            errors.append(f"the resolver {resolver or 'of this machine'} did not answer in {timeout:.0f}s")
    if not found:
        return Resolution(name, frozenset(), "; ".join(dict.fromkeys(errors)) or "no A or AAAA record")
    return Resolution(name, frozenset(found))


def _split(resolver: str) -> tuple[str, int]:
    if resolver.count(":") == 1:
        host, port = resolver.split(":")
        return host, int(port)
    return resolver.strip("[]"), 53


def host_addresses(hostnames: list[str]) -> set[str]:
    """The addresses of deploy.hosts (IP literals as they are, names resolved by the system)."""
    out: set[str] = set()
    for h in hostnames:
        try:
            out.add(str(ipaddress.ip_address(h)))
        except ValueError:
            try:
                out.update(ai[4][0] for ai in socket.getaddrinfo(h, None))
            except socket.gaierror:
                pass
    return out


def check(resolutions: list[Resolution], expected: set[str]) -> None:
    """Raise CertError unless every name resolves, and only to expected addresses (pure)."""
    if not expected:
        raise CertError("DNS pre-check: ferry does not know this host's public address",
                        "set tls.public_addresses (the Elastic IP from the Pulumi outputs), "
                        "or tls.dns_check = false to skip the check")
    exp = ", ".join(sorted(expected))
    for r in resolutions:
        if r.error:
            raise CertError(f"DNS pre-check: {r.name} does not resolve: {r.error}",
                            f"create an A record {r.name} -> {exp} (Pulumi: the stack's Dns resource) "
                            "and wait until it has propagated; nothing was changed")
        wrong = sorted(r.addresses - expected)
        if wrong:
            raise CertError(f"DNS pre-check: {r.name} resolves to {', '.join(sorted(r.addresses))}, "
                            f"but this host is {exp}",
                            f"point the record at {exp} (or remove the stale {', '.join(wrong)}) and wait "
                            "for the old answer's TTL to pass; nothing was changed")

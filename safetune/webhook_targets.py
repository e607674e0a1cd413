"""Which webhook URLs we POST to: public addresses only, checked at submission and again at delivery.

A webhook makes our servers send a request wherever a tenant says, so without this check any tenant
could reach what only we can: loopback services, the private network, the cloud metadata endpoint
(169.254.169.254). A host is resolved and *every* address it resolves to must be public; delivery
resolves again and connects to the address it checked (pinned), so a DNS answer that changes between
the check and the connection (rebinding) cannot redirect the request. Redirects are never followed.

`SAFETUNE_WEBHOOK_ALLOWED_HOSTS` (host names or CIDRs, comma-separated) admits internal receivers for
tests and on-prem installs; production also requires https.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from safetune.config import Settings, get_settings

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhookTargetRejected(ValueError):
    """The URL may not receive webhooks; the message says why (safe to show the tenant)."""


class WebhookHostUnresolved(WebhookTargetRejected):
    """The host has no address right now: a submission is refused, a delivery attempt retried."""


@dataclass(frozen=True)
class WebhookTarget:
    url: str  # as the tenant gave it
    host: str  # for TLS (SNI and the certificate check)
    address: str  # the checked address the request must go to

    @property
    def host_header(self) -> str:
        return urlsplit(self.url).netloc  # host[:port]; credentials are refused by the check

    def pinned_url(self) -> str:
        """`url` with its host replaced by the checked address."""
        parts = urlsplit(self.url)
        address = f"[{self.address}]" if ":" in self.address else self.address
        netloc = f"{address}:{parts.port}" if parts.port else address
        return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


def parse_allowed_hosts(value: str) -> tuple[frozenset[str], tuple[IpNetwork, ...]]:
    """'hooks.internal, 10.0.0.0/8, ::1' -> ({'hooks.internal'}, (10.0.0.0/8, ::1/128))."""
    names: set[str] = set()
    networks: list[IpNetwork] = []
    for raw in value.split(","):
        entry = raw.strip().lower().strip("[]")
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.rstrip("."))
    return frozenset(names), tuple(networks)


def _public(address: IpAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    # is_global is False for loopback, private, link-local (the metadata service), shared (CGNAT),
    # reserved and unspecified ranges; multicast can be "global" but is never a receiver.
    return address.is_global and not address.is_multicast


def _resolve(host: str, port: int) -> list[IpAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookHostUnresolved(f"webhook host {host!r} does not resolve") from exc
    # An IPv6 answer may carry a zone ("fe80::1%eth0"): drop it, the address decides.
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_webhook_url(url: str, settings: Settings | None = None) -> WebhookTarget:
    """Resolve `url` and return where to send it, or raise WebhookTargetRejected."""
    settings = settings or get_settings()
    parts = urlsplit(url)
    allowed_schemes = ("https",) if settings.environment == "production" else ("http", "https")
    if parts.scheme not in allowed_schemes:
        raise WebhookTargetRejected(f"webhook_url must use {' or '.join(allowed_schemes)}")
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:  # a port that is not a number
        raise WebhookTargetRejected(f"webhook_url is not a valid URL: {exc}") from exc
    if not host:
        raise WebhookTargetRejected("webhook_url has no host")
    if parts.username or parts.password:
        raise WebhookTargetRejected("webhook_url must not carry credentials")
    names, networks = parse_allowed_hosts(settings.webhook_allowed_hosts)
    addresses = _resolve(host, port)
    if host.rstrip(".") not in names:
        for address in addresses:
            if not _public(address) and not any(address in network for network in networks):
                raise WebhookTargetRejected(
                    f"webhook host {host!r} resolves to {address}, which is not a public address "
                    "(allow internal receivers with SAFETUNE_WEBHOOK_ALLOWED_HOSTS)"
                )
    return WebhookTarget(url=url, host=host, address=str(addresses[0]))

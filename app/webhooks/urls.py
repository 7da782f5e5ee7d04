"""Where a webhook may go: a callback URL checked at submit, its host's addresses at send time.

The SSRF guard: by default a webhook never reaches a loopback, link-local (cloud metadata
services live there), private, shared, reserved or multicast address, i.e. any address that
is not global. A literal address is refused at submit; a name is resolved when the delivery
is sent and refused when any of its addresses is not global, before any connection; the
connection then goes to the address that was checked (no second lookup to rebind).
``WEBHOOK_ALLOWED_HOSTS`` lets the hosts it names through as written.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Callable
from typing import NamedTuple

from app.errors import InvalidInput

MAX_URL_LENGTH = 2048

#: A resolver: host and port to the addresses a connection would use (``socket.getaddrinfo``'s).
Resolver = Callable[[str, int], list[str]]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """A webhook's host resolves to an address the guard refuses; nothing was sent."""


class Target(NamedTuple):
    """Where to connect for a URL: the URL itself, or with its host replaced by the checked address."""

    url: str
    host: str
    """The URL's host name: the Host header and TLS server name."""
    address: str | None
    """The checked address to connect to; None when the host is allowed as written."""


def allowed_hosts(setting: str) -> frozenset[str]:
    """``WEBHOOK_ALLOWED_HOSTS`` as a set of lower-case hosts."""
    return frozenset(h.strip().lower().strip("[]") for h in setting.split(",") if h.strip())


def check_callback_url(url: str, allowed: frozenset[str], field: str = "callback_url") -> str:
    """``url`` when it may be a callback; InvalidInput (422) naming what is wrong otherwise."""

    def refuse(why: str) -> InvalidInput:
        return InvalidInput(f"{field} {why}", fields={field: [why]})

    if len(url) > MAX_URL_LENGTH:
        raise refuse(f"is {len(url)} characters long; at most {MAX_URL_LENGTH}")
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        raise refuse(f"is not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise refuse("must be an http or https URL")
    if "@" in parts.netloc:
        raise refuse("must not carry credentials (user:password@): sign with the webhook secret instead")
    host = (parts.hostname or "").lower()
    if not host:
        raise refuse("has no host")
    if host in allowed:
        return url
    address = literal_address(host)
    if address is not None and refused_kind(address):
        raise refuse(
            f"points at {address}, a {refused_kind(address)} address (WEBHOOK_ALLOWED_HOSTS lets hosts in)"
        )
    return url


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells (``10.0.0.1``, ``::1``, also ``127.1``, ``0x7f.1``); None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefx." for c in host) and any(c.isdigit() for c in host):
        try:  # the legacy IPv4 forms the C resolver accepts too
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def refused_kind(address: IPAddress) -> str | None:
    """Why a webhook may not go to ``address`` (``"loopback"``, ``"link-local"``, ...), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.is_site_local:  # fec0::/10: deprecated, but still routed on some networks
            return "site-local"
        # An IPv4 address carried inside (mapped, or 6to4's 2002::/16) is judged as itself.
        address = address.ipv4_mapped or address.sixtofour or address
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "non-global"


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system's resolver gives ``host`` (what a plain connection would use)."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def target(url: str, allowed: frozenset[str], resolver: Resolver) -> Target:
    """Where to connect for ``url``; Refused when its host is or resolves to a refused address."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if host in allowed:
        return Target(url, host, None)
    literal = literal_address(host)
    try:
        found = [literal] if literal is not None else [
            ipaddress.ip_address(a.split("%")[0]) for a in resolver(host, parts.port or _PORTS[parts.scheme])
        ]  # fmt: skip
    except OSError as exc:
        raise Refused(f"{host} does not resolve: {exc}") from None
    if not found:
        raise Refused(f"{host} resolves to no address")
    for address in found:
        kind = refused_kind(address)
        if kind is not None:
            raise Refused(f"{host} resolves to {address}, a {kind} address; nothing was sent")
    return Target(url, host, str(found[0]))


_PORTS = {"http": 80, "https": 443}

"""Where webhooks may go (SSRF guard).

A target URL is refused when its host is, or resolves to, an address that is not globally
routable: private, loopback, link-local, shared, multicast, reserved, unspecified and the like
(IPv4-mapped IPv6 addresses are judged by their IPv4 address). `WEBHOOK_ALLOWED_TARGETS` lists
hosts or CIDRs that may be reached all the same (an intranet receiver; tests use 127.0.0.1).

The check runs when a subscription is created or changed (a clear 422) and again before every
attempt: the sender resolves the host itself, refuses the attempt if any address is refused
(DNS rebinding), and connects to the address it checked, not to whatever a second lookup says.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048


class InvalidTarget(ValueError):
    """The URL is not one we send to (scheme, form)."""


class RefusedTarget(ValueError):
    """The target's address is not allowed (or the host does not resolve)."""


@dataclass(frozen=True)
class Target:
    """A checked destination: connect to `address`, but speak HTTP (Host, TLS SNI and
    certificate) for `host`."""

    url: str
    scheme: str
    host: str  # lower case, ASCII (IDNA)
    port: int
    address: IPAddress

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable webhook URL, or InvalidTarget."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidTarget(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidTarget(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidTarget("the URL must start with https:// (or http://)")
    if not parts.hostname:
        raise InvalidTarget("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidTarget("credentials in the URL are not accepted; authenticate with the signature")
    if parts.fragment:
        raise InvalidTarget("the URL may not have a fragment")
    if any(c.isspace() for c in url):
        raise InvalidTarget("the URL may not contain white space")
    try:
        host = parts.hostname.lower().rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidTarget("the host name is not valid") from None
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


class Egress:
    def __init__(self, allowed: list[str]) -> None:
        self.hosts: set[str] = set()
        self.networks: list[IPNetwork] = []
        for entry in allowed:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self.hosts.add(entry.rstrip("."))

    def address_allowed(self, address: IPAddress) -> bool:
        if is_public(address):
            return True
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(a in net for a in candidates for net in self.networks if a.version == net.version)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            literal: IPAddress = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            pass
        else:
            return [literal]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise RefusedTarget(f"{host} does not resolve ({exc})") from None
        seen: list[IPAddress] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if address not in seen:
                seen.append(address)
        if not seen:
            raise RefusedTarget(f"{host} does not resolve")
        return seen

    async def check(self, url: str) -> Target:
        """The checked target of `url`: raises InvalidTarget or RefusedTarget."""
        scheme, host, port = parse_url(url)
        addresses = await self.resolve(host, port)
        if host not in self.hosts:
            refused = [a for a in addresses if not self.address_allowed(a)]
            if refused:
                raise RefusedTarget(
                    f"{host} resolves to {refused[0]}, a private, loopback, link-local or otherwise "
                    "non-public address; an operator may allow it in WEBHOOK_ALLOWED_TARGETS"
                )
        return Target(url=url, scheme=scheme, host=host, port=port, address=addresses[0])

"""Where a webhook may go: the URL's form and the addresses its host resolves to. Pure functions; the
resolution itself is a port (services/webhooks.py), done at submit and again at every attempt.

A target is refused when its scheme is not https (the local stage may allow http to loopback), when it
carries credentials, or when ANY address of its host is not a public unicast address: loopback, private,
link-local, multicast, unspecified, reserved, shared (CGNAT), the cloud metadata endpoints, or one of those
hidden in an IPv6 form (IPv4-mapped, IPv4-compatible, 6to4, NAT64, Teredo). Checking every address, and
connecting only to an address that was checked, closes DNS rebinding: the name is never resolved again
between the check and the connection.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # EC2 instance metadata
    ipaddress.ip_address("169.254.170.2"),  # ECS task metadata
    ipaddress.ip_address("fd00:ec2::254"),  # EC2 instance metadata over IPv6
}
CGNAT = ipaddress.ip_network("100.64.0.0/10")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class TargetRefused(ValueError):
    """The URL may not receive webhooks; the message says why (shown to the client)."""


@dataclass(frozen=True)
class Target:
    """A parsed webhook URL."""

    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_target(url: str, allow_loopback_http: bool = False) -> Target:
    """The target of `url`, or TargetRefused for a URL that cannot be one (before any resolution)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if allow_loopback_http else ("https",)
    if scheme not in allowed:
        raise TargetRefused(
            "the URL must use https" + (" (or http to loopback on this stage)" if allow_loopback_http else "")
        )
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("the URL must not carry credentials")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80), path)


def literal_address(host: str) -> IPAddress | None:
    """The address when `host` is an IP literal (other spellings such as "2130706433" go through resolution)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the forms that carry one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64 or (ip in IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _kind(ip: IPAddress) -> str | None:
    """What makes `ip` unfit for a webhook, or None for a public unicast address."""
    checks: list[tuple[bool, str]] = [
        (ip in METADATA, "a cloud metadata address"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT, "shared address space (CGNAT)"),
        (isinstance(ip, ipaddress.IPv6Address) and ip in NAT64_LOCAL, "private (local-use NAT64)"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "site-local"),
        (not ip.is_global, "not globally routable"),
    ]
    return next((reason for hit, reason in checks if hit), None)


def address_problem(ip: IPAddress, allow_loopback: bool = False) -> str | None:
    """Why a webhook may not be sent to `ip` (a sentence naming it), or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            problem = address_problem(inner, allow_loopback)
            return f"{ip} embeds {problem}" if problem else None
    kind = _kind(ip)
    if kind is None or (kind == "loopback" and allow_loopback):
        return None
    return f"{ip} is {kind}"


def check_addresses(target: Target, addresses: list[str], allow_loopback: bool = False) -> IPAddress:
    """The address to connect to: the first of `addresses`, once EVERY one passed; else TargetRefused.
    Plain http is only ever allowed to loopback (the local stage's setting)."""
    if not addresses:
        raise TargetRefused(f"the host '{target.host}' does not resolve")
    parsed = [ipaddress.ip_address(a.split("%", 1)[0]) for a in addresses]
    for ip in parsed:
        problem = address_problem(ip, allow_loopback)
        if problem:
            raise TargetRefused(f"the host '{target.host}' resolves to a forbidden address: {problem}")
    if target.scheme == "http" and not all(ip.is_loopback for ip in parsed):
        raise TargetRefused("the URL must use https (http is allowed only to loopback on this stage)")
    return parsed[0]

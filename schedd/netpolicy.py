"""Where webhooks may connect: `[actions] webhook_deny_networks` and `webhook_allow_private`.

The policy is checked on the **resolved address of every new connection** (SPEC §10), by
both HTTP clients: the lean client resolves the name itself and connects only to permitted
addresses; aiohttp calls `NetworkPolicy.socket_factory` for every address it tries
(hostnames and IP literals alike, redirects included). A name whose every address is
refused fails with `ForbiddenAddress`, which the webhook sender reports as error_code
``forbidden_address``. Checking the address actually connected to, not the name in the url,
is what defeats a name that resolves to a metadata or internal address (DNS rebinding
included: each new connection resolves again, and keep-alive connections were checked
when they were opened).

- ``deny``: networks never reached, whatever ``allow_private`` says. The default is the
  link-local ranges (``169.254.0.0/16``, ``fe80::/10``: cloud metadata services live
  there) and the other cloud metadata addresses (``fd00:ec2::254`` AWS IPv6,
  ``100.100.100.200`` Alibaba).
- ``allow_private`` false: only globally routable addresses are reached
  (``ipaddress``'s ``is_global``): loopback, private (RFC 1918, ``fc00::/7``), shared
  (``100.64.0.0/10``), unspecified (``0.0.0.0``) and reserved ranges are refused too.
- An IPv4-mapped IPv6 address (``::ffff:169.254.169.254``) is judged as the IPv4 address
  it maps to.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable
from functools import lru_cache
from typing import Final

from schedd.config import WEBHOOK_DENY_NETWORKS_DEFAULT

__all__ = ["DEFAULT_DENY_NETWORKS", "ForbiddenAddress", "NetworkPolicy", "parse_networks"]

#: 169.254.0.0/16 (IPv4 link-local: 169.254.169.254 is the AWS, GCP, Azure and OCI
#: metadata service), fe80::/10 (IPv6 link-local), fd00:ec2::254 (AWS metadata over IPv6),
#: 100.100.100.200 (Alibaba Cloud metadata).
DEFAULT_DENY_NETWORKS: Final = WEBHOOK_DENY_NETWORKS_DEFAULT

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class ForbiddenAddress(OSError):
    """A webhook was about to connect to an address the network policy refuses.

    ``str()`` is the same for every address, so that a connection attempt over several
    addresses, all refused, reports this error rather than a merged one (aiohappyeyeballs
    re-raises the first of identical errors); `address` and `reason` say which and why."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(errno.EACCES, "address forbidden by the webhook network policy")
        self.address = address
        self.reason = reason

    def describe(self) -> str:
        return f"{self.address} is {self.reason}"


def parse_networks(values: Iterable[str]) -> tuple[_Network, ...]:
    """CIDR strings (or single addresses) as networks; ValueError names the bad one."""
    out: list[_Network] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP network (CIDR, e.g. 10.0.0.0/8)") from None
    return tuple(out)


class NetworkPolicy:
    """`refusal(address)` answers why an IP address may not be reached, or None."""

    def __init__(self, deny: Iterable[str] = DEFAULT_DENY_NETWORKS,
                 allow_private: bool = True) -> None:
        self.deny = parse_networks(deny)
        self.allow_private = allow_private
        self.refusal = lru_cache(maxsize=1024)(self._refusal)

    def _refusal(self, address: str) -> str | None:
        try:
            ip: _Address = ipaddress.ip_address(address.partition("%")[0])  # drop a v6 scope
        except ValueError:
            return "not an IP address"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for net in self.deny:
            if ip.version == net.version and ip in net:
                return f"in a denied network ({net}, [actions] webhook_deny_networks)"
        if not self.allow_private and not ip.is_global:
            return "not a public address ([actions] webhook_allow_private = false)"
        return None

    def check(self, address: str) -> None:
        """Raise ForbiddenAddress when `address` may not be reached."""
        reason = self.refusal(address)
        if reason is not None:
            raise ForbiddenAddress(address, reason)

    def socket_factory(
        self, addr_info: tuple[int, int, int, str, tuple[str, int] | tuple[str, int, int, int]]
    ) -> socket.socket:
        """aiohttp's TCPConnector(socket_factory=...): called for every address it tries."""
        family, type_, proto, _, sockaddr = addr_info
        self.check(str(sockaddr[0]))
        return socket.socket(family=family, type=type_, proto=proto)

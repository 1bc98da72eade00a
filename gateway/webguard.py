"""Which URLs `POST /v1/fetch` may fetch: the rules, as pure functions (no socket, no lookup).

A URL is read once, by yarl (the parser aiohttp connects with), so that the host checked is
the host connected to. `read_url` refuses what the URL alone shows (scheme, credentials,
port, an IP written other than in four decimal numbers); `choose_address` refuses a host
any of whose addresses is not public, or that is one of the console's own services, and
answers the one address to connect to. Each refusal names the rule that refused it.
"""

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The ranges that are not the public internet, each with what it is called in a refusal.
_V4_RANGES = [
    (ipaddress.IPv4Network(net), rule)
    for net, rule in (
        ("0.0.0.0/8", "an unspecified address"),
        ("127.0.0.0/8", "a loopback address"),
        ("10.0.0.0/8", "a private address"),
        ("172.16.0.0/12", "a private address"),
        ("192.168.0.0/16", "a private address"),
        ("169.254.0.0/16", "a link-local address"),
        ("100.64.0.0/10", "a carrier-grade NAT address"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "a broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
        ("192.0.0.0/24", "a reserved address"),
        ("192.0.2.0/24", "a documentation address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("198.18.0.0/15", "a benchmarking address"),
    )
]
_V6_RANGES = [
    (ipaddress.IPv6Network(net), rule)
    for net, rule in (
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("ff00::/8", "a multicast address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("fc00::/7", "a unique-local address"),
        ("2001:db8::/32", "a documentation address"),
        ("100::/64", "a discard address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("2001::/32", "a Teredo address"),
    )
]
# IPv6 forms that carry an IPv4 address in their last (or, for 6to4, second) 32 bits: the
# IPv4 address inside is judged as if it had been given.
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")

_NUMBER = re.compile(r"(0x[0-9a-f]*|[0-9]+)\Z")
_DECIMAL_OCTET = re.compile(r"(0|[1-9][0-9]{0,2})\Z")
_NAME = re.compile(r"([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?\Z")


class Refused(Exception):
    """A URL or address the fetch will not go to: 400 for the URL's form, 403 for where it
    leads. `detail` says which rule refused it (never what is there)."""

    def __init__(self, status: int, detail: str, code: str) -> None:
        super().__init__(detail)
        self.status, self.detail, self.code = status, detail, code


@dataclass(frozen=True)
class Target:
    url: URL
    host: str  # as connected to: ASCII, lower case, IPv6 without brackets
    port: int
    literal: IPAddress | None  # when the URL names an address rather than a name


@dataclass(frozen=True)
class Protected:
    """The console's own services, never fetched whatever their address: names (a name
    starting with "." covers its subdomains) and (address, port) pairs (an unspecified
    address: any address on that port), each with what it is called in a refusal."""

    names: dict[str, str] = field(default_factory=dict)
    endpoints: dict[tuple[IPAddress, int], str] = field(default_factory=dict)

    def name_rule(self, host: str) -> str | None:
        host = host.rstrip(".")
        for name, what in self.names.items():
            if host == name.lstrip(".") or (name.startswith(".") and host.endswith(name)):
                return what
        return None

    def endpoint_rule(self, address: IPAddress, port: int) -> str | None:
        address = _plain(address)
        for (listening, listening_port), what in self.endpoints.items():
            if listening_port == port and (listening == address or listening.is_unspecified):
                return what
        return None


@dataclass(frozen=True)
class Allowed:
    """FETCH_ALLOW: networks and names lifted from the address rules (never from `Protected`)."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    names: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> "Allowed":
        networks, names = [], set()
        for entry in entries:
            entry = entry.strip().lower()
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        return cls(tuple(networks), frozenset(names))

    def covers(self, host: str, address: IPAddress) -> bool:
        if host.rstrip(".") in self.names:
            return True
        address = _plain(address)
        return any(address in network for network in self.networks)


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address as the IPv4 address it is; any other as it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_rule(address: IPAddress) -> str | None:
    """Why an address is not on the public internet (the rule's name), or None when it is."""
    if isinstance(address, ipaddress.IPv4Address):
        for network, rule in _V4_RANGES:
            if address in network:
                return rule
        return None if address.is_global else "not a public address"
    if address.scope_id:
        return "an address with an IPv6 zone"
    for network, rule in _V6_RANGES:
        if address in network:
            return rule
    for network, form in (
        (_MAPPED, "an IPv4-mapped"),
        (_TRANSLATED, "an IPv4-translated"),
        (_NAT64, "a NAT64"),
        (_COMPATIBLE, "an IPv4-compatible"),
    ):
        if address in network:
            inner = address_rule(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
            return f"{form} IPv6 form of {inner}" if inner else None
    if address.sixtofour is not None:
        inner = address_rule(address.sixtofour)
        return f"a 6to4 IPv6 form of {inner}" if inner else None
    return None if address.is_global else "not a public address"


def read_url(url: str, ports: Iterable[int]) -> Target:
    """The URL as it will be fetched; Refused (400) when its form is not allowed."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        raise Refused(400, "The 'url' is not a valid URL.", "invalid_url") from None
    if parsed.scheme not in ("http", "https"):
        raise Refused(400, "Only http and https URLs can be fetched.", "scheme_not_allowed")
    if parsed.user is not None or parsed.password is not None:
        raise Refused(
            400, "A URL with credentials (user@host) is not fetched.", "credentials_in_url"
        )
    host = (parsed.raw_host or "").lower()
    if not host:
        raise Refused(400, "The 'url' has no host.", "invalid_url")
    port = parsed.port
    allowed = sorted(set(ports))
    if port not in allowed:
        raise Refused(
            400,
            f"Port {port} is not allowed; pages are fetched from port {' or '.join(map(str, allowed))}.",
            "port_not_allowed",
        )
    literal = _literal(host)
    if literal is None and not _NAME.match(host):
        raise Refused(400, "The URL's host is not a valid host name.", "invalid_host")
    return Target(url=parsed, host=host, port=port, literal=literal)


def _literal(host: str) -> IPAddress | None:
    """The address a host written as one names (None for a name); Refused for an IPv4
    address written in any form but four decimal numbers, which resolvers read differently."""
    if ":" in host:
        try:
            if "%" in host:  # a zone: which interface is this machine's business
                raise ValueError(host)
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise Refused(
                400, "The URL's host is not a valid IPv6 address.", "invalid_host"
            ) from None
    labels = host.rstrip(".").split(".")
    if not _NUMBER.match(labels[-1]):
        return None
    if len(labels) == 4 and all(_DECIMAL_OCTET.match(label) for label in labels):
        try:
            return ipaddress.IPv4Address(".".join(labels))
        except ValueError:
            pass
    raise Refused(
        400,
        "An IPv4 address written in decimal, octal, hex or shortened form is refused; "
        "write it as four decimal numbers.",
        "ip_form_not_allowed",
    )


def check_name(target: Target, protected: Protected) -> None:
    """Refused (403) when the URL names one of the console's own services (before any lookup)."""
    what = protected.name_rule(target.host)
    if what:
        raise Refused(403, f"'{target.host}' is {what}: it is never fetched.", "host_not_allowed")


def choose_address(
    target: Target,
    addresses: Iterable[IPAddress],
    *,
    allowed: Allowed,
    protected: Protected,
) -> IPAddress:
    """The address to connect to: the first of `addresses`, once every one of them passes.

    Refused (403) when the host or any address is one of the console's own services, or
    when any address is not public (unless `allowed` lifts it); the refusal names the rule
    and the host, never the address a name resolved to.
    """
    addresses = list(addresses)
    check_name(target, protected)
    if not addresses:
        raise Refused(400, f"The host '{target.host}' has no address.", "host_not_found")
    named = "The address" if target.literal is not None else f"An address of '{target.host}'"
    for address in addresses:
        what = protected.endpoint_rule(address, target.port)
        if what:
            raise Refused(403, f"{named} is {what}: it is never fetched.", "host_not_allowed")
        rule = address_rule(address)
        if rule and not allowed.covers(target.host, address):
            raise Refused(
                403,
                f"{named} is {rule}; only public addresses are fetched.",
                "address_not_allowed",
            )
    return addresses[0]

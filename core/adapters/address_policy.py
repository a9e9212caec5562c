"""Which URLs a job may make this machine fetch: the guard against server-side request forgery.

Only http, https and s3 URLs. An http(s) host must resolve to public addresses only: loopback, private,
link-local, multicast, reserved and unspecified addresses are refused unless ALLOW_PRIVATE_URLS is set
(`Settings.allow_private_urls`, for LANs and the tests' loopback servers). Cloud metadata addresses are refused
even then: nothing a dataset needs lives there, and credentials do.

The check runs on the URL before a request, and again on the socket's own address lookup at connect time
(`guarded_session`), so a redirect or a DNS answer that changes between check and connect is caught too.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import connection as urllib3_connection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError, NewConnectionError

from core.errors import AddressRefused, DownloadError

ALLOWED_SCHEMES = ("http", "https", "s3")
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class CheckedUrl:
    scheme: str
    host: str
    port: int | None
    public: str
    """The URL without query string, fragment or user info: safe to log and show."""


def public_url(url: str) -> str:
    """The URL as it may appear in a log or event: no query (presigned signatures), no user:password@."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else url.split("?", 1)[0]


NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and that a host or gateway may deliver to: IPv4-mapped
    (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d), 6to4 (2002:AABB:CCDD::) and Teredo
    (2001:0::/32, the client address)."""
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address in NAT64 or (address in IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour:
        return address.sixtofour
    if address.teredo:
        return address.teredo[1]
    return None


def refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why this address may not be fetched from, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            reason = refusal(inner, allow_private=allow_private)
            if address.ipv4_mapped:
                return reason  # the same address, written as IPv6
            if reason:
                return f"{reason} (embedded in {address})"
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_global and not address.is_multicast:
        return None
    if allow_private and not address.is_multicast:
        return None
    for label, test in (
        ("a loopback address", address.is_loopback),
        ("a link-local address", address.is_link_local),
        ("a private address", address.is_private),
        ("a multicast address", address.is_multicast),
        ("an unspecified address", address.is_unspecified),
    ):
        if test:
            return label
    return "a reserved address"


def check_url(url: str, *, allow_private: bool, field: str = "dataset.url", resolve: bool = True) -> CheckedUrl:
    """Refuse a URL with a scheme other than http/https/s3, or an http(s) host that resolves to a refused address."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"not a valid URL ({exc})", field=field) from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        shown = f"'{scheme}://'" if scheme else "no scheme"
        raise AddressRefused(f"{shown} URLs are not allowed; use http, https or s3", field=field)
    if not parts.hostname:
        raise AddressRefused(f"{public_url(url)} has no host", field=field)
    checked = CheckedUrl(scheme=scheme, host=parts.hostname, port=port, public=public_url(url))
    if scheme != "s3" and resolve:
        allowed_addresses(parts.hostname, port or (443 if scheme == "https" else 80), allow_private=allow_private,
                          field=field)
    return checked


def allowed_addresses(host: str, port: int, *, allow_private: bool, field: str = "dataset.url") -> list[tuple]:
    """getaddrinfo() results for host:port; AddressRefused if any of them is refused (all or nothing),
    DownloadError if the name does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DownloadError(f"cannot resolve host '{host}' ({exc.strerror})", field=field) from None
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        reason = refusal(address, allow_private=allow_private)
        if reason:
            hint = "" if allow_private or reason == "a cloud metadata address" else " (ALLOW_PRIVATE_URLS=1 allows it)"
            raise AddressRefused(f"host '{host}' resolves to {address}, {reason}; refused{hint}", field=field)
    return infos


def _guarded_connection(base: type, *, allow_private: bool) -> type:
    """A urllib3 connection class that vets the addresses it connects to and connects only to a vetted one."""

    class Guarded(base):
        def _new_conn(self) -> socket.socket:
            infos = allowed_addresses(self._dns_host, self.port, allow_private=allow_private)
            last: OSError | None = None
            for family, kind, proto, _, sockaddr in infos:
                sock = socket.socket(family, kind, proto)
                try:
                    for option in self.socket_options or ():
                        sock.setsockopt(*option)
                    sock.settimeout(self.timeout if isinstance(self.timeout, (int, float)) else None)
                    if self.source_address:
                        sock.bind(self.source_address)
                    sock.connect(sockaddr)
                    return sock
                except OSError as exc:
                    sock.close()
                    last = exc
            if last is None:
                raise NameResolutionError(self.host, self, socket.gaierror("no address"))
            raise NewConnectionError(self, f"Failed to establish a new connection: {last}") from last

    return Guarded


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, *, allow_private: bool, **kwargs):
        self._allow_private = allow_private
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        http_conn = _guarded_connection(urllib3_connection.HTTPConnection, allow_private=self._allow_private)
        https_conn = _guarded_connection(urllib3_connection.HTTPSConnection, allow_private=self._allow_private)
        http_pool = type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn})
        https_pool = type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn})
        self.poolmanager.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}


def guarded_session(*, allow_private: bool) -> requests.Session:
    """A requests session whose every connection obeys the policy; no proxies or .netrc from the environment."""
    session = requests.Session()
    session.trust_env = False
    adapter = _GuardedAdapter(allow_private=allow_private)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session

"""Keep the generic HTTP action away from private, loopback, link-local and metadata addresses.

A flow's URL may come from a webhook payload. Without this guard it could reach the host's
own ports, a database on the private network, or a cloud metadata service that hands out
credentials (server-side request forgery).

- :func:`check_url` refuses a scheme other than http/https, credentials in the URL, and a
  host any of whose addresses is not public: private, loopback, link-local, multicast,
  reserved, unspecified, shared (100.64/10), the IPv4-mapped, 6to4 and NAT64 forms of
  those, and cloud metadata services. Every spelling of an address (``127.1``,
  ``2130706433``, ``0x7f000001``, ``[::ffff:127.0.0.1]``) is resolved by the system
  resolver to the address it means before it is judged.
- :func:`guard` mounts a transport adapter on a requests Session whose connections resolve
  the host once, judge every address, and open the socket to one of those judged addresses
  themselves; the TLS SNI, the certificate check and the Host header still use the host
  name. An answer that changes between :func:`check_url` and the connection (DNS rebinding)
  cannot reach a refused address: what is connected to is always an address that passed in
  the same resolution. The session also ignores proxy and .netrc settings from the
  environment (a proxy would resolve the host itself, out of our sight).

The operator opens it from the environment, read at every check:

- ``CONNECTOR_HTTP_ALLOW``: comma-separated host names, addresses and CIDR ranges that may
  be called although not public, e.g. ``127.0.0.1,10.20.0.0/16,intranet.example.com``. A
  host name entry trusts whatever that name resolves to.
- ``CONNECTOR_HTTP_ALLOW_PRIVATE=1``: allow every non-public address except the cloud
  metadata addresses, which only a matching ``CONNECTOR_HTTP_ALLOW`` entry opens.

What remains: a public host may itself forward requests inward (a proxy, an open redirect
is caught because every redirect hop is checked again); any port of a public address may be
called; ISATAP-style IPv6 addresses that embed a private IPv4 under a public prefix are
judged by their IPv6 prefix; a refused host's error names the address it resolved to, so a
flow author learns that much of the internal DNS. The pinning hooks urllib3's
``HTTPConnection._new_conn``; :func:`guard` checks that the hook exists so an incompatible
urllib3 fails loudly instead of silently connecting unchecked.
"""
from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import connection as u3conn
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as u3util

from .errors import ConfigurationError, UserError

ALLOW_VAR = "CONNECTOR_HTTP_ALLOW"
ALLOW_PRIVATE_VAR = "CONNECTOR_HTTP_ALLOW_PRIVATE"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: AWS/GCP/Azure/OpenStack, AWS ECS and EKS pod identity, Alibaba; AWS's IPv6 endpoints.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.170.23", "100.100.100.200",
    "fd00:ec2::254", "fd00:ec2::23"))
METADATA = "a cloud metadata address"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
                       r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


class AddressNotAllowed(UserError):
    """The URL's scheme, credentials or address is refused; the message says how to allow it."""


def refusal(address: str | IPAddress) -> str | None:
    """Return why ``address`` may not be called by default (e.g. "a loopback address"), or None."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if ip in METADATA_ADDRESSES:
        return METADATA
    if ip.version == 6:
        embedded, form = _embedded_ipv4(ip)
        if embedded is not None:
            reason = refusal(embedded)
            return f"{reason} ({form} {embedded})" if reason else None
    for flag, reason in (("is_loopback", "a loopback address"),
                         ("is_unspecified", "the unspecified address"),
                         ("is_link_local", "a link-local address"),
                         ("is_multicast", "a multicast address"),
                         ("is_reserved", "a reserved address"),
                         ("is_private", "a private address")):
        if getattr(ip, flag):
            return reason
    if ip.version == 4 and ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if not ip.is_global:
        return "not a public address"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address):
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4 for"
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64 for"
    return None, ""


@dataclass
class Allowances:
    """What the operator opened: host names, networks, and whether private is allowed."""

    hosts: set[str] = field(default_factory=set)
    networks: list = field(default_factory=list)
    private: bool = False

    def allows(self, host: str, ip: IPAddress, reason: str) -> bool:
        if _norm(host) in self.hosts:
            return True
        candidates = [ip]
        if ip.version == 6:
            embedded, _ = _embedded_ipv4(ip)
            if embedded is not None:
                candidates.append(embedded)
        if any(c in net for c in candidates for net in self.networks):
            return True
        return self.private and reason != METADATA


def allowances(env=None) -> Allowances:
    """Read the operator's allow-list from the environment (``os.environ`` by default)."""
    env = os.environ if env is None else env
    flag = env.get(ALLOW_PRIVATE_VAR, "").strip().lower()
    if flag not in _TRUE | _FALSE:
        raise ConfigurationError(f"{ALLOW_PRIVATE_VAR} must be 1 or 0, got {flag!r}")
    found = Allowances(private=flag in _TRUE)
    for entry in (e.strip() for e in env.get(ALLOW_VAR, "").split(",")):
        if not entry:
            continue
        try:
            found.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        if "/" in entry or ":" in entry or not _HOSTNAME.match(entry):
            raise ConfigurationError(
                f"{ALLOW_VAR}: {entry!r} is not a host name, an IP address or a CIDR range "
                "(no scheme or port; e.g. 127.0.0.1,10.0.0.0/8,intranet.example.com)")
        found.hosts.add(_norm(entry))
    return found


def _norm(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def _lookup(host: str, port: int) -> list[tuple]:
    """Resolve ``host`` with the system resolver (tests replace this to play DNS)."""
    return socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)


def resolve(host: str, port: int | None) -> list[str]:
    """Return every address ``host`` resolves to, once each, if all may be called.

    Raises AddressNotAllowed naming the host, the address and how to allow it, and
    socket.gaierror when the name does not resolve.
    """
    host = host.strip("[]")
    rules = allowances()
    addresses: list[str] = []
    for family, _, _, _, sockaddr in _lookup(host, port or 80):
        text = sockaddr[0]
        ip = ipaddress.ip_address(text.split("%")[0])
        reason = refusal(ip)
        if reason and not rules.allows(host, ip, reason):
            raise AddressNotAllowed(_message(host, str(ip), reason))
        if family == socket.AF_INET6 and len(sockaddr) > 3 and sockaddr[3] and "%" not in text:
            text = f"{text}%{sockaddr[3]}"  # keep a link-local address's interface
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return addresses


def _message(host: str, address: str, reason: str) -> str:
    where = (f"{address}, {reason}" if _norm(host) == address.lower()
             else f"{host}: it resolves to {address}, {reason}")
    named = host if _norm(host) == address.lower() else f"{host} or {address}"
    how = f"add {named} to {ALLOW_VAR} (comma-separated host names, addresses and CIDR ranges)"
    if reason != METADATA:
        how += f", or set {ALLOW_PRIVATE_VAR}=1"
    return (f"refusing to connect to {where}. The HTTP action calls public addresses only; "
            f"if the operator trusts this one: {how}")


def check_url(url: str) -> list[str]:
    """Refuse a URL the HTTP action may not call; return the addresses its host resolves to."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressNotAllowed(f"url: not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise AddressNotAllowed(f"url: expected an http:// or https:// URL, got scheme "
                                f"{parts.scheme or 'none'!r}")
    if parts.username is not None or parts.password is not None:
        raise AddressNotAllowed("url: credentials in the URL are not accepted; use the auth "
                                "inputs or a connection")
    host = parts.hostname
    if not host:
        raise AddressNotAllowed("url: the URL has no host")
    return resolve(host, port or (443 if parts.scheme.lower() == "https" else 80))


# -- pinning: connect to the address that was checked -------------------------------------------

class _PinnedMixin:
    """Resolve and judge the host at connect time, then connect to a judged address."""

    def _new_conn(self) -> socket.socket:
        try:
            addresses = resolve(self.host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        error: Exception | None = None
        for address in addresses:
            try:
                return u3util.create_connection(
                    (address, self.port), self.timeout, source_address=self.source_address,
                    socket_options=self.socket_options)
            except socket.timeout:
                error = ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})")
            except OSError as exc:
                error = NewConnectionError(self, f"Failed to establish a new connection: {exc}")
        raise error


class _PinnedHTTPConnection(_PinnedMixin, u3conn.HTTPConnection):
    pass


class _PinnedHTTPSConnection(_PinnedMixin, u3conn.HTTPSConnection):
    pass


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """A transport adapter whose every connection goes through :func:`resolve`."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PinnedHTTPPool,
                                                   "https": _PinnedHTTPSPool}

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        if proxies and any(proxies.values()):
            raise AddressNotAllowed("the HTTP action does not go through proxies: a proxy "
                                    "would resolve the host out of the address check")
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert,
                            proxies=proxies)


def _policy() -> tuple[str, str]:
    """The environment the address checks read: equal policies judge every address alike."""
    return os.environ.get(ALLOW_VAR, ""), os.environ.get(ALLOW_PRIVATE_VAR, "")


def _guarded(session: requests.Session, policy: tuple[str, str]) -> bool:
    mark = getattr(session, "_ssrf_guard", None)
    return (mark is not None and mark[0] == policy and not session.trust_env
            and len(session.adapters) == 2
            and all(session.adapters.get(p) is mark[1] for p in ("https://", "http://")))


def is_guarded(session: requests.Session) -> bool:
    """Return True when :func:`guard` would leave ``session`` as it is."""
    return _guarded(session, _policy())


def guard(session: requests.Session) -> requests.Session:
    """Make ``session`` connect only to checked addresses; return it.

    A session this already guarded under the same allow-list is returned untouched, so its
    kept-alive connections (each judged when it was opened) serve the next request; after
    the allow-list changed, its connections are closed and it is guarded afresh.
    """
    if not callable(getattr(u3conn.HTTPConnection, "_new_conn", None)):
        raise RuntimeError("this urllib3 has no HTTPConnection._new_conn; the SSRF guard "
                           "cannot pin connections")
    policy = _policy()
    if _guarded(session, policy):
        return session
    session.trust_env = False  # no proxies or .netrc credentials from the environment
    for old in set(session.adapters.values()):
        if isinstance(old, GuardedAdapter):
            old.close()  # its connections were judged under another allow-list
    session.adapters.clear()
    adapter = GuardedAdapter()
    for prefix in ("https://", "http://"):
        session.mount(prefix, adapter)
    session._ssrf_guard = (policy, adapter)
    return session


def guarded_session() -> requests.Session:
    """Return a new Session that connects only to checked addresses."""
    return guard(requests.Session())


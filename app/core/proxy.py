"""Forwarded headers from trusted proxies only, and the base URL that RetrieveURL and QIDO URLs are built on.

``GATEKEEPER_TRUSTED_PROXIES`` lists the addresses (or networks) of the reverse proxies in front of the API.
A request whose peer is one of them may set the client address (``X-Forwarded-For``), the scheme
(``X-Forwarded-Proto``) and the host (``X-Forwarded-Host``); from any other peer these headers (and
``Forwarded``) are removed before the app sees the request. uvicorn's own proxy-header handling is off
(``gatekeeper serve`` starts it with ``proxy_headers=False``): this middleware is the one place that decides.

The base URL (``public_base_url``): ``GATEKEEPER_PUBLIC_BASE_URL`` when set. Otherwise, for a request that
came through a trusted proxy, the scheme and host the proxy forwarded (or its ``Host``); for any other
request the address the connection arrived at (``http://10.0.0.5:8042``), never the client's ``Host``
header, which a client can set to anything.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
TRUSTED_KEY = "gatekeeper.trusted_proxy"  # set in the ASGI scope when the peer is a trusted proxy
FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port", b"forwarded")
# host[:port]: a DNS name or IPv4 address, or a bracketed IPv6 address; nothing else reaches a URL.
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                   r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")  # fmt: skip


def parse_trusted(spec: str) -> tuple[Network, ...]:
    """``"10.0.0.1, 10.1.0.0/16, ::1"`` -> networks; a malformed entry is an error at start-up, not ignored."""
    nets = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"GATEKEEPER_TRUSTED_PROXIES: {item!r} is not an IP address or network") from None
    return tuple(nets)


def is_trusted(address: str | None, nets: Iterable[Network]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in nets)


def _last(value: str) -> str:
    """The value the nearest proxy set: the last of a comma-separated list."""
    return value.rsplit(",", 1)[-1].strip()


def _client_from(forwarded_for: str, nets: tuple[Network, ...]) -> str | None:
    """Walk X-Forwarded-For from the right past our own proxies; the first address that is not one is the
    client (what a proxy appended can be trusted, what the client wrote further left cannot)."""
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return None  # a malformed hop: keep the proxy's own address
        if not is_trusted(hop, nets):
            return hop
    return hops[0] if hops else None


class ForwardedHeadersMiddleware:
    """Applies X-Forwarded-* from trusted peers to the scope; strips them from everyone else."""

    def __init__(self, app: ASGIApp, trusted: tuple[Network, ...]) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        peer = (scope.get("client") or (None, None))[0]
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        forwarded = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in FORWARDED}
        rest = [(k, v) for k, v in headers if k not in FORWARDED]
        scope = dict(scope)
        if not is_trusted(peer, self.trusted):
            scope["headers"] = rest
            scope[TRUSTED_KEY] = False
            await self.app(scope, receive, send)
            return
        scope[TRUSTED_KEY] = True
        if (client := _client_from(forwarded.get("x-forwarded-for", ""), self.trusted)) is not None:
            port = (scope.get("client") or (None, 0))[1]
            scope["client"] = (client, port)
        proto = _last(forwarded.get("x-forwarded-proto", "")).lower()
        if proto in ("http", "https"):
            scope["scheme"] = proto if scope["type"] == "http" else {"http": "ws", "https": "wss"}[proto]
        host = _last(forwarded.get("x-forwarded-host", ""))
        if host and _HOST.match(host):
            rest = [(k, v) for k, v in rest if k != b"host"] + [(b"host", host.encode("latin-1"))]
        scope["headers"] = rest
        await self.app(scope, receive, send)


def _server_origin(scope: MutableMapping[str, Any]) -> str:
    """The address this connection arrived at, as a URL origin (IPv6 in brackets)."""
    scheme = scope.get("scheme", "http")
    server = scope.get("server")
    if not server:
        return f"{scheme}://localhost"
    host, port = server[0], server[1]
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def request_base_url(request: Request, public_base_url: str) -> str:
    """The base of RetrieveURL and QIDO URLs for this request (see the module's docstring)."""
    if public_base_url:
        return public_base_url.rstrip("/")
    root = str(request.scope.get("root_path", "")).rstrip("/")
    if request.scope.get(TRUSTED_KEY):
        return f"{request.url.scheme}://{request.url.netloc}{root}"
    return _server_origin(request.scope) + root

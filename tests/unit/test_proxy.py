"""Forwarded headers: believed from trusted proxies only (app/core/proxy.py), on the ASGI scope itself."""

from __future__ import annotations

import asyncio

import pytest

from app.core.proxy import TRUSTED_KEY, ForwardedHeadersMiddleware, parse_trusted

HOSTILE = [(b"host", b"evil.example"), (b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-proto", b"https"),
           (b"x-forwarded-host", b"evil2.example"), (b"forwarded", b"for=1.2.3.4;host=evil3.example")]  # fmt: skip


def run(trusted: str, peer: str, headers: list[tuple[bytes, bytes]]) -> dict:
    """The scope the app behind the middleware receives."""
    seen: dict = {}

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        seen.update(scope)

    middleware = ForwardedHeadersMiddleware(app, parse_trusted(trusted))
    scope = {"type": "http", "client": (peer, 50000), "server": ("10.0.0.5", 8042), "scheme": "http",
             "headers": headers}  # fmt: skip
    asyncio.run(middleware(scope, None, None))  # type: ignore[arg-type]
    return seen


def test_untrusted_peer_loses_every_forwarded_header() -> None:
    scope = run("10.1.0.0/16", "192.0.2.7", HOSTILE)
    assert scope["client"] == ("192.0.2.7", 50000)
    assert scope["scheme"] == "http"
    assert dict(scope["headers"]) == {b"host": b"evil.example"}  # Host stays; the base URL never uses it
    assert scope[TRUSTED_KEY] is False


def test_trusted_proxy_sets_client_scheme_and_host() -> None:
    headers = [(b"host", b"proxy.internal"), (b"x-forwarded-for", b"198.51.100.4, 10.1.2.3"),
               (b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"pacs-gw.example:8443")]  # fmt: skip
    scope = run("10.1.0.0/16", "10.1.0.9", headers)
    # the chain is walked from the right past our own proxies (10.1.2.3): the client is 198.51.100.4
    assert scope["client"] == ("198.51.100.4", 50000)
    assert scope["scheme"] == "https"
    assert dict(scope["headers"])[b"host"] == b"pacs-gw.example:8443"
    assert not any(k.startswith(b"x-forwarded") for k, _ in scope["headers"])
    assert scope[TRUSTED_KEY] is True


def test_spoofed_left_hops_do_not_win() -> None:
    """A client that writes its own X-Forwarded-For gets its real address (the one the proxy appended)."""
    scope = run("10.1.0.9", "10.1.0.9", [(b"x-forwarded-for", b"127.0.0.1, 198.51.100.4")])
    assert scope["client"][0] == "198.51.100.4"


@pytest.mark.parametrize("host", ["evil.example/x", "a b", "x.example:99999999", "evil.example@x", ""])
def test_malformed_forwarded_host_is_ignored_even_from_a_trusted_proxy(host: str) -> None:
    scope = run("10.1.0.9", "10.1.0.9", [(b"host", b"proxy.internal"), (b"x-forwarded-host", host.encode()),
                                         (b"x-forwarded-proto", b"gopher")])  # fmt: skip
    assert dict(scope["headers"])[b"host"] == b"proxy.internal"
    assert scope["scheme"] == "http"


def test_malformed_trusted_proxies_setting_is_an_error() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        parse_trusted("10.0.0.1, proxy.example")
    assert parse_trusted(" 10.0.0.1 , ::1,") == parse_trusted("10.0.0.1/32,::1/128")

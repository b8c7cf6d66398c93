"""/docs from local assets, the bearer scheme in OpenAPI, and forwarded headers from trusted proxies only
(issue #15 item 8), over real HTTP against the running API."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from app.client import multipart_body
from testkit.dicom_factory import make_series
from tests.conftest import Stack

pytestmark = pytest.mark.integration
HOSTILE = {"Host": "evil.example", "X-Forwarded-Host": "evil2.example", "X-Forwarded-Proto": "https",
           "X-Forwarded-For": "203.0.113.9", "Forwarded": "for=203.0.113.9;host=evil3.example;proto=https"}  # fmt: skip
PROXY = "127.0.0.2"  # loopback too: a client bound to it is "the proxy", one on 127.0.0.1 is not


def test_docs_load_only_local_assets(stack: Stack) -> None:
    r = httpx.get(f"{stack.service.url}/docs", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    refs = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", r.text)
    assets = [u for u in refs if u != "/openapi.json"]
    assert assets and all(u.startswith("/docs/assets/") for u in assets), refs
    assert "://" not in r.text.replace("http://www.w3.org", ""), "no absolute URL (CDN) in the page"
    expected = [("swagger-ui-bundle.js", "javascript", 500_000), ("swagger-ui.css", "text/css", 50_000),
                ("favicon-32x32.png", "image/png", 100)]  # fmt: skip
    for path, media, min_size in expected:
        a = httpx.get(f"{stack.service.url}/docs/assets/{path}", timeout=30)
        assert a.status_code == 200 and media in a.headers["content-type"] and len(a.content) >= min_size, path
    assert httpx.get(f"{stack.service.url}/redoc", timeout=30).status_code == 404  # it would load from a CDN


def test_openapi_declares_the_bearer_scheme_on_every_protected_route(stack: Stack) -> None:
    schema = httpx.get(f"{stack.service.url}/openapi.json", timeout=30).json()
    assert schema["components"]["securitySchemes"]["bearer"]["type"] == "http"
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    open_paths = {"/healthz", "/readyz"}
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            expected = None if path in open_paths else [{"bearer": []}]
            assert op.get("security") == expected, (method, path)
    # and the declared scheme is the one the API takes
    with stack.client("pacs") as c:
        assert c.get("/dicomweb/studies", params={"StudyInstanceUID": "1.2.3.4.5"}).status_code == 204
    r = httpx.get(f"{stack.service.url}/dicomweb/studies", timeout=30)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def _client(stack: Stack, source: str, headers: dict[str, str]) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=stack.service.url, transport=transport, timeout=60,
                        headers={"Authorization": f"Bearer {stack.tokens['pacs']}", **headers})  # fmt: skip


def _urls(client: httpx.Client) -> list[str]:
    """The RetrieveURLs of a STOW reply and of a QIDO reply for a new series."""
    spec, blobs = make_series(2)
    boundary = f"b-{uuid.uuid4().hex}"
    r = client.post("/dicomweb/studies", content=multipart_body(blobs, boundary),
                    headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                             "Accept": "application/dicom+json"})  # fmt: skip
    assert r.status_code == 200, r.text[:300]
    urls = [item["00081190"]["Value"][0] for item in r.json()["00081199"]["Value"]]
    q = client.get(f"/dicomweb/studies/{spec.study_uid}/series")
    assert q.status_code == 200, q.text[:300]
    urls += [item["00081190"]["Value"][0] for item in q.json()]
    assert len(urls) == 3
    return urls


def test_untrusted_client_headers_never_reach_urls(stack: Stack) -> None:
    """Default (no trusted proxy): the URLs are built on the address the connection reached."""
    with _client(stack, "127.0.0.1", HOSTILE) as c:
        urls = _urls(c)
    assert all(u.startswith(f"{stack.service.url}/dicomweb/studies/") for u in urls), urls


@pytest.fixture(scope="module")
def proxied(stack_factory) -> Stack:  # type: ignore[no-untyped-def]
    return stack_factory(worker=False, GATEKEEPER_TRUSTED_PROXIES=PROXY)


def test_trusted_proxy_sets_scheme_and_host(proxied: Stack) -> None:
    with _client(proxied, PROXY, {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pacs-gw.example:8443"}) as c:
        urls = _urls(c)
    assert all(u.startswith("https://pacs-gw.example:8443/dicomweb/studies/") for u in urls), urls
    # without X-Forwarded-Host, the proxy's Host header; a malformed forwarded host is ignored
    with _client(proxied, PROXY, {"Host": "gw.internal:8080", "X-Forwarded-Host": "evil.example/x"}) as c:
        urls = _urls(c)
    assert all(u.startswith("http://gw.internal:8080/dicomweb/studies/") for u in urls), urls


def test_same_headers_from_another_peer_are_ignored(proxied: Stack) -> None:
    with _client(proxied, "127.0.0.1", HOSTILE) as c:
        urls = _urls(c)
    assert all(u.startswith(f"{proxied.service.url}/dicomweb/studies/") for u in urls), urls


def test_public_base_url_wins_over_everything(stack_factory) -> None:  # type: ignore[no-untyped-def]
    fixed = stack_factory(worker=False, GATEKEEPER_TRUSTED_PROXIES=PROXY,
                          GATEKEEPER_PUBLIC_BASE_URL="https://gatekeeper.hospital.example/")  # fmt: skip
    for source in (PROXY, "127.0.0.1"):
        with _client(fixed, source, {"X-Forwarded-Host": "pacs-gw.example", **HOSTILE}) as c:
            urls = _urls(c)
        assert all(u.startswith("https://gatekeeper.hospital.example/dicomweb/studies/") for u in urls), urls

"""Responsive under load (issue #15, item 6), over real HTTP against the API process.

- ``/healthz`` keeps answering (p99 under 100 ms, a generous bound for a loopback probe) while large gzip
  pushes are inflated, parsed and hashed: that work runs in worker threads, not on the event loop (a 250 KB
  gzip body once froze every route for 1.7 s).
- Content-Encoding gzip and deflate on STOW-RS, inflated with a bound: past it, 413 with the reason.
- Read timeouts: a client trickling its headers, or stalling inside a body, is cut off with 408 after the
  configured timeout; a slow client that keeps sending is served.
"""

from __future__ import annotations

import functools
import gzip
import socket
import statistics
import threading
import time
import uuid
import zlib

import httpx
import pytest

from app.client import multipart_body
from testkit.servers import Stack
from testkit.tiny_models import sample_visit

pytestmark = pytest.mark.integration
HEADER_TIMEOUT_S, BODY_TIMEOUT_S = 2.0, 2.0
IDLE_P99_MAX = 0.050  # s: an idle loopback /healthz answers in a few ms; past this the cores are starved


@pytest.fixture(scope="module")
def quiet(stack_factory) -> Stack:  # type: ignore[no-untyped-def]
    return stack_factory(worker=False, GATEKEEPER_HTTP_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
                         GATEKEEPER_HTTP_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S), GATEKEEPER_RUN_DISPATCHER="false",
                         GATEKEEPER_FSYNC="false")  # fmt: skip


@functools.cache
def gzip_zeros(n_bytes: int) -> bytes:
    """n_bytes of zeros, gzip-compressed (about 1000:1): a small body that inflates to a large one."""
    out = zlib.compressobj(1, zlib.DEFLATED, 31)
    block = bytes(1024**2)
    parts = [out.compress(block) for _ in range(n_bytes // len(block))]
    return b"".join(parts) + out.flush()


def stow_gzip(blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    boundary = f"b-{uuid.uuid4().hex}"
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
               "Content-Encoding": "gzip", "Accept": "application/dicom+json"}  # fmt: skip
    return gzip.compress(b"".join(multipart_body(blobs, boundary)), 1), headers


def probe_latencies(probe: httpx.Client, *, while_alive: list[threading.Thread] | None = None,
                    count: int = 0) -> list[float]:  # fmt: skip
    """Seconds per ``GET /healthz``, every ~5 ms: ``count`` probes, or as long as one thread is alive."""
    out: list[float] = []
    while (while_alive and any(t.is_alive() for t in while_alive)) or len(out) < count:
        start = time.perf_counter()
        assert probe.get("/healthz").status_code == 200
        out.append(time.perf_counter() - start)
        time.sleep(0.005)
    return out


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98]


def test_healthz_p99_stays_under_100_ms_during_large_compressed_pushes(quiet: Stack) -> None:
    """The bound is the issue's 100 ms over the p99 the same probe sees just before, with the API idle: on
    these 2 shared cores (this test runs niced, beside other sessions' training) scheduling alone can cost
    tens of ms. A machine whose idle p99 is already over IDLE_P99_MAX cannot measure a 100 ms bound: the test
    says so and skips. With the inflation on the event loop the p99 was 2.2 s (BENCHMARKS.md); with the
    start-up heap left to the collector, one full collection (132 ms) stalled about half the runs past the
    bound (app/core/heap.py)."""
    bomb = gzip_zeros(250 * 1024**2)  # 250 MiB inflated, as in the issue; under the 256 MiB instance limit
    _, _, blobs = sample_visit("GK-RESPONSIVE")
    stow_body, stow_headers = stow_gzip(blobs)
    results: dict[str, httpx.Response] = {}

    def push(name: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        with quiet.client("pacs", timeout=300) as c:
            results[name] = c.post(path, content=body, headers=headers)

    pushes = [
        threading.Thread(target=push, args=("bomb", "/instances", bomb, {"Content-Encoding": "gzip"})),
        threading.Thread(target=push, args=("stow", "/dicomweb/studies", stow_body, stow_headers)),
    ]
    with httpx.Client(base_url=quiet.service.url, timeout=10) as probe:
        idle = p99(probe_latencies(probe, count=200))  # the connection is open before the pushes start
        if idle > IDLE_P99_MAX:
            pytest.skip(f"the machine is too loaded to measure a 100 ms bound: idle /healthz p99 {idle * 1e3:.0f} ms")
        t0 = time.monotonic()
        for t in pushes:
            t.start()
        latencies = probe_latencies(probe, while_alive=pushes)
        pushed_s = time.monotonic() - t0
    for t in pushes:
        t.join()
    # the pushes did their work: the bomb inflated whole (not DICOM: refused after parsing), the study stored
    assert results["bomb"].status_code == 400 and "DICOM" in results["bomb"].json()["Message"], results["bomb"].text
    assert results["stow"].status_code == 200, results["stow"].text
    assert len(latencies) >= 20, f"only {len(latencies)} probes in {pushed_s:.2f} s: the pushes were too short"
    busy, median, worst = p99(latencies), statistics.median(latencies), max(latencies)
    print(f"/healthz idle p99 {idle * 1e3:.1f} ms; during {pushed_s:.2f} s of pushes: {len(latencies)} probes, "
          f"median {median * 1e3:.1f} ms, p99 {busy * 1e3:.1f} ms, max {worst * 1e3:.1f} ms")  # fmt: skip
    assert busy < 0.100 + idle, f"p99 {busy * 1e3:.0f} ms over {len(latencies)} probes (idle p99 {idle * 1e3:.0f} ms)"


def test_compressed_stow_and_its_bound(quiet: Stack) -> None:
    study, _, blobs = sample_visit("GK-RESPONSIVE")
    body, headers = stow_gzip(blobs[:3])
    with quiet.client("pacs") as c:
        r = c.post("/dicomweb/studies", content=body, headers=headers)
        assert r.status_code == 200 and len(r.json()["00081199"]["Value"]) == 3, r.text
        # deflate (RFC 9110: the zlib format) as well
        _, _, more = sample_visit("GK-RESPONSIVE")
        boundary = "deflate-boundary"
        deflated = zlib.compress(b"".join(multipart_body(more[:2], boundary)))
        r = c.post("/dicomweb/studies", content=deflated, headers={**headers, "Content-Encoding": "deflate",
                   "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})  # fmt: skip
        assert r.status_code == 200, r.text
        # past the body limit once inflated (64 MiB in the test stacks): 413 with the reason, nothing stored
        before = quiet.scalar("SELECT count(*) FROM instances")
        bomb_body, bomb_headers = stow_gzip([blobs[3], bytes(80 * 1024**2)])
        r = c.post("/dicomweb/studies", content=bomb_body, headers=bomb_headers)
        assert r.status_code == 413 and "inflates past the limit of 67108864 bytes" in r.json()["detail"], r.text
        assert quiet.scalar("SELECT count(*) FROM instances") == before
        # a peer push past the instance limit once inflated
        r = c.post("/instances", content=gzip_zeros(300 * 1024**2), headers={"Content-Encoding": "gzip"})
        assert r.status_code == 413 and "once inflated" in r.json()["detail"], r.text
        # broken or unknown encodings
        r = c.post("/dicomweb/studies", content=body[: len(body) // 2], headers=headers)
        assert r.status_code == 400 and "truncated" in r.json()["detail"]
        r = c.post("/dicomweb/studies", content=b"not gzip at all", headers=headers)
        assert r.status_code == 400 and "not valid gzip" in r.json()["detail"]
        r = c.post("/instances", content=b"x", headers={"Content-Encoding": "br"})
        assert r.status_code == 415 and "'br' not supported" in r.json()["detail"]
    assert quiet.scalar("SELECT count(*) FROM studies WHERE study_uid=:s", s=study) == 1


def _connect(stack: Stack) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", stack.service.port), timeout=30)
    sock.settimeout(0.2)
    return sock


def _trickle_until_closed(
    sock: socket.socket, pieces: list[bytes], every_s: float, limit_s: float
) -> tuple[float, bytes]:
    """Send one piece every ``every_s`` until the server closes (or ``limit_s``); (seconds, what it answered)."""
    t0, got, i = time.monotonic(), b"", 0
    next_send = t0
    while time.monotonic() - t0 < limit_s:
        if i < len(pieces) and time.monotonic() >= next_send:
            try:
                sock.sendall(pieces[i])
            except (BrokenPipeError, ConnectionResetError):
                break
            i, next_send = i + 1, next_send + every_s
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not data:
            break
        got += data
    return time.monotonic() - t0, got


def test_a_client_trickling_its_headers_is_cut_off(quiet: Stack) -> None:
    head = b"POST /instances HTTP/1.1\r\nHost: gatekeeper\r\n"
    pieces = [head] + [f"X-Slow-{i}: {'a' * 10}\r\n".encode() for i in range(100)]  # one header every 0.3 s
    with _connect(quiet) as sock:
        took, got = _trickle_until_closed(sock, pieces, 0.3, limit_s=20)
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert HEADER_TIMEOUT_S - 0.1 <= took < HEADER_TIMEOUT_S + 2, took
    with _connect(quiet) as sock:  # a connection that never says anything
        took, got = _trickle_until_closed(sock, [], 1, limit_s=20)
    assert got.startswith(b"HTTP/1.1 408") and took < HEADER_TIMEOUT_S + 2, (took, got[:100])


def test_a_stalled_body_is_cut_off_and_a_slow_steady_one_is_served(quiet: Stack) -> None:
    token = quiet.tokens["pacs"]
    head = (f"POST /instances HTTP/1.1\r\nHost: gatekeeper\r\nAuthorization: Bearer {token}\r\n"
            "Content-Length: 1000\r\n\r\n").encode()  # fmt: skip
    with _connect(quiet) as sock:
        took, got = _trickle_until_closed(sock, [head, b"DICM" * 4], 0.1, limit_s=20)  # then silence
    assert got.startswith(b"HTTP/1.1 408") and b"body stalled" in got, got[:200]
    assert BODY_TIMEOUT_S <= took < BODY_TIMEOUT_S + 2, took
    # 8 bytes, one every 0.5 s: 4 s in all, longer than either timeout, but never silent for 2 s
    head = head.replace(b"Content-Length: 1000", b"Content-Length: 8")
    with _connect(quiet) as sock:
        took, got = _trickle_until_closed(sock, [head] + [b"x"] * 8, 0.5, limit_s=20)
    assert got.startswith(b"HTTP/1.1 400"), got[:300]  # served: refused as not DICOM, not cut off
    assert took >= 3.5
    with quiet.client(None) as c:
        assert c.get("/healthz").status_code == 200


def test_a_client_waiting_for_100_continue_is_not_cut_off(quiet: Stack) -> None:
    """``Expect: 100-continue``: the client is silent until the server asks for the body; then it is served."""
    token = quiet.tokens["pacs"]
    head = (f"POST /instances HTTP/1.1\r\nHost: gatekeeper\r\nAuthorization: Bearer {token}\r\n"
            "Expect: 100-continue\r\nContent-Length: 4\r\n\r\n").encode()  # fmt: skip
    with _connect(quiet) as sock:
        sock.sendall(head)
        sock.settimeout(10)
        assert sock.recv(1024).startswith(b"HTTP/1.1 100"), "no 100 Continue"
        sock.sendall(b"DICM")
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]  # served (4 bytes are not DICOM), not a 408

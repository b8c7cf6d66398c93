"""A request body off the event loop: Content-Encoding inflated with a bound, then fed to a consumer, in a
worker thread a batch at a time.

A 250 KB gzip body inflates to 250 MiB; inflated on the event loop it froze every route for 1.7 s (issue #15).
Here the event loop only collects the received chunks; inflation, multipart parsing, hashing and file writes
run in ``anyio.to_thread`` (zlib, hashlib and file I/O release the GIL), so other requests keep being served.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable

import anyio.to_thread

BATCH_BYTES = 1024**2  # chunks collected on the event loop before one hand-over to a worker thread
INFLATE_STEP = 1024**2  # at most this much inflated output per zlib call: a bomb stops at the bound
ENCODINGS = {"identity": None, "gzip": 31, "x-gzip": 31, "deflate": 15}  # zlib wbits (deflate: RFC 9110 zlib)


class BodyTooLarge(Exception):
    """The body, a part, the number of parts, or the inflated body is over a configured limit (413)."""


class UnsupportedEncoding(ValueError):
    """A Content-Encoding this service does not inflate (415)."""


class BadCompressedBody(ValueError):
    """Not valid gzip / deflate, or truncated (400)."""


class Decoder:
    """One body's Content-Encoding: ``decode`` inflates what arrived and hands it to a sink; at most
    ``max_bytes`` of output in all."""

    def __init__(self, content_encoding: str, max_bytes: int) -> None:
        self.encoding = content_encoding.strip().lower() or "identity"
        if self.encoding not in ENCODINGS:
            raise UnsupportedEncoding(f"Content-Encoding {self.encoding[:20]!r} not supported: use gzip, deflate or "
                                      "identity")  # fmt: skip
        wbits = ENCODINGS[self.encoding]
        self._zlib = None if wbits is None else zlib.decompressobj(wbits=wbits)
        self.max_bytes = max_bytes
        self.inflated = 0

    def decode(self, data: bytes, sink: Callable[[bytes], None]) -> None:
        if self._zlib is None:
            sink(data)
            return
        try:
            while data:
                if self._zlib.eof:
                    raise BadCompressedBody(f"data after the end of the {self.encoding} stream")
                out = self._zlib.decompress(data, INFLATE_STEP)
                self.inflated += len(out)
                if self.inflated > self.max_bytes:
                    raise BodyTooLarge(f"{self.encoding} body inflates past the limit of {self.max_bytes} bytes")
                if out:
                    sink(out)
                data = self._zlib.unconsumed_tail or self._zlib.unused_data
        except zlib.error:
            raise BadCompressedBody(f"body is not valid {self.encoding}") from None

    def end(self) -> None:
        if self._zlib is not None and not self._zlib.eof:
            raise BadCompressedBody(f"{self.encoding} body is truncated")


async def pump(chunks: AsyncIterator[bytes], decoder: Decoder, sink: Callable[[bytes], None]) -> None:
    """Feed the whole body through ``decoder`` to ``sink`` in worker threads, one batch at a time (the
    calls never overlap: the state they share is handed from one thread to the next)."""
    batch: list[bytes] = []
    size = 0
    async for chunk in chunks:
        batch.append(chunk)
        size += len(chunk)
        if size >= BATCH_BYTES:
            data, batch, size = b"".join(batch), [], 0
            await anyio.to_thread.run_sync(decoder.decode, data, sink)
    if batch:
        await anyio.to_thread.run_sync(decoder.decode, b"".join(batch), sink)
    decoder.end()

"""A streaming multipart/related reader that writes each part to its own temporary file.

The body is never held in memory: at most one batch of chunks (``app.services.body``) plus the length of
the delimiter is buffered. Limits (body size, part count, part header size, part
size) are enforced while reading, so an abusive body is refused early.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from app.services.body import BodyTooLarge, Decoder, pump
from app.services.storage import ReceivedFile, TempWriter

# RFC 2046 caps a boundary at 70 characters, but real senders exceed it: Orthanc's
# DICOMweb client (plugin 1.7, Orthanc 1.10) sends "<uuid>-<uuid>", 73 characters.
# Accept longer ones, still bounded (the reader keeps one delimiter length buffered).
MAX_BOUNDARY_CHARS = 200
_PARAM_RE = re.compile(r';\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')


class MultipartError(ValueError):
    """Malformed multipart body (400)."""


__all__ = ["BodyTooLarge", "Limits", "MultipartError", "Part", "parse_content_type", "read_parts"]


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """('multipart/related', {'type': 'application/dicom', 'boundary': ...})."""
    media, _, _rest = value.partition(";")
    params = {}
    for key, raw in _PARAM_RE.findall(value[len(media) :]):
        params[key.lower()] = raw[1:-1].replace('\\"', '"') if raw.startswith('"') else raw
    return media.strip().lower(), params


@dataclass
class Part:
    content_type: str
    received: ReceivedFile | None = None  # None when the part's media type was refused


@dataclass
class Limits:
    max_body_bytes: int
    max_part_bytes: int
    max_header_bytes: int
    max_parts: int


class _Reader:
    """The multipart state machine, fed bytes synchronously (``feed``, then ``end``): the caller decides where it
    runs (``read_parts`` runs it in a worker thread, so boundary search and hashing stay off the event loop)."""

    def __init__(
        self, boundary: bytes, new_writer: Callable[[int], TempWriter], finish: Callable[[TempWriter], ReceivedFile],
        limits: Limits, accept: Callable[[str], bool],
    ) -> None:  # fmt: skip
        self.delimiter = b"\r\n--" + boundary
        self.new_writer, self.finish, self.limits, self.accept = new_writer, finish, limits, accept
        self.buffer = bytearray(b"\r\n")  # lets the first boundary match without a leading CRLF
        self.phase = "preamble"
        self.content_type = ""
        self.parts: list[Part] = []
        self.writer: TempWriter | None = None
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.total > self.limits.max_body_bytes:
            raise BodyTooLarge(f"body exceeds the limit of {self.limits.max_body_bytes} bytes")
        self.buffer += chunk
        while self._step():
            pass

    def end(self) -> None:
        if self.phase != "epilogue":
            raise MultipartError("multipart body ended before its closing boundary")

    def abort(self) -> None:
        """Remove what was written (any error, or the client went away)."""
        if self.writer is not None:
            self.writer.abort()
        for part in self.parts:
            if part.received is not None:
                part.received.path.unlink(missing_ok=True)

    def _step(self) -> bool:
        """One move of the state machine; False when it needs more data."""
        buffer, limits = self.buffer, self.limits
        if self.phase in ("preamble", "body"):
            at = buffer.find(self.delimiter)
            if at < 0:
                keep = len(self.delimiter) - 1
                if self.phase == "body" and self.writer is not None and len(buffer) > keep:
                    self.writer.write(memoryview(buffer)[: len(buffer) - keep])
                del buffer[: max(0, len(buffer) - keep)]
                return False
            if self.phase == "body" and self.writer is not None:
                self.writer.write(memoryview(buffer)[:at])
                writer, self.writer = self.writer, None
                self.parts.append(Part(content_type=self.content_type, received=self.finish(writer)))
            del buffer[: at + len(self.delimiter)]
            self.phase = "after-delimiter"
        elif self.phase == "after-delimiter":
            if len(buffer) < 2:
                return False
            if buffer[:2] == b"--":
                self.phase = "epilogue"
                return True
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                if len(buffer) > 256:
                    raise MultipartError("junk after a multipart boundary")
                return False
            if buffer[:line_end].strip(b" \t"):
                raise MultipartError("junk after a multipart boundary")
            del buffer[: line_end + 2]
            self.phase = "headers"
        elif self.phase == "headers":
            if len(buffer) < 2:
                return False
            # A part with no headers starts with the empty line at once.
            end = -2 if buffer.startswith(b"\r\n") else buffer.find(b"\r\n\r\n")
            if end == -1:
                if len(buffer) > limits.max_header_bytes:
                    raise BodyTooLarge(f"part headers exceed {limits.max_header_bytes} bytes")
                return False
            if end > limits.max_header_bytes:
                raise BodyTooLarge(f"part headers exceed {limits.max_header_bytes} bytes")
            self.content_type = _part_content_type(bytes(buffer[: max(end, 0)]))
            del buffer[: end + 4]
            if len(self.parts) >= limits.max_parts:
                raise BodyTooLarge(f"more than {limits.max_parts} parts")
            self.writer = self.new_writer(limits.max_part_bytes) if self.accept(self.content_type) else None
            if self.writer is None:
                self.parts.append(Part(content_type=self.content_type))
            self.phase = "body"
        else:  # epilogue: ignored
            buffer.clear()
            return False
        return True


async def read_parts(
    chunks: AsyncIterator[bytes],
    boundary: str,
    new_writer: Callable[[int], TempWriter],
    finish: Callable[[TempWriter], ReceivedFile],
    limits: Limits,
    accept: Callable[[str], bool],
    decoder: Decoder | None = None,
) -> list[Part]:
    """Stream a multipart body into temporary files (``decoder``: its Content-Encoding, inflated with a bound);
    the parsing, inflating and hashing run in a worker thread. On any error, remove what was written."""
    if not boundary or len(boundary) > MAX_BOUNDARY_CHARS:
        raise MultipartError(f"multipart boundary missing or longer than {MAX_BOUNDARY_CHARS} characters")
    reader = _Reader(boundary.encode("latin-1"), new_writer, finish, limits, accept)
    try:
        await pump(chunks, decoder or Decoder("identity", limits.max_body_bytes), reader.feed)
        reader.end()
    except BaseException:
        reader.abort()
        raise
    return reader.parts


def _part_content_type(raw: bytes) -> str:
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-type":
            return value.decode("latin-1").strip()
    return ""

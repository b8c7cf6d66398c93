"""A streaming multipart/related reader that writes each part to its own temporary file.

The body is never held in memory: at most one chunk plus the length of the
delimiter is buffered. Limits (body size, part count, part header size, part
size) are enforced while reading, so an abusive body is refused early.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from app.services.storage import ReceivedFile, TempWriter

# RFC 2046 caps a boundary at 70 characters, but real senders exceed it: Orthanc's
# DICOMweb client (plugin 1.7, Orthanc 1.10) sends "<uuid>-<uuid>", 73 characters.
# Accept longer ones, still bounded (the reader keeps one delimiter length buffered).
MAX_BOUNDARY_CHARS = 200
_PARAM_RE = re.compile(r';\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')


class MultipartError(ValueError):
    """Malformed multipart body (400)."""


class BodyTooLarge(Exception):
    """The body, a part, or the number of parts is over a configured limit (413)."""


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


@dataclass
class _State:
    parts: list[Part] = field(default_factory=list)
    writer: TempWriter | None = None
    total: int = 0


async def read_parts(
    chunks: AsyncIterator[bytes],
    boundary: str,
    new_writer: Callable[[int], TempWriter],
    finish: Callable[[TempWriter], object],
    limits: Limits,
    accept: Callable[[str], bool],
) -> list[Part]:
    """Stream a multipart body into temporary files; on any error, remove what was written."""
    if not boundary or len(boundary) > MAX_BOUNDARY_CHARS:
        raise MultipartError(f"multipart boundary missing or longer than {MAX_BOUNDARY_CHARS} characters")
    state = _State()
    try:
        await _read(chunks, boundary.encode("latin-1"), new_writer, finish, limits, accept, state)
    except BaseException:
        if state.writer is not None:
            state.writer.abort()
        for part in state.parts:
            if part.received is not None:
                part.received.path.unlink(missing_ok=True)
        raise
    return state.parts


async def _read(chunks, boundary, new_writer, finish, limits, accept, state):  # type: ignore[no-untyped-def]
    delimiter = b"\r\n--" + boundary
    buffer = bytearray(b"\r\n")  # lets the first boundary match without a leading CRLF
    phase = "preamble"
    content_type = ""
    async for chunk in chunks:
        state.total += len(chunk)
        if state.total > limits.max_body_bytes:
            raise BodyTooLarge(f"body exceeds the limit of {limits.max_body_bytes} bytes")
        buffer += chunk
        while True:
            if phase in ("preamble", "body"):
                at = buffer.find(delimiter)
                if at < 0:
                    keep = len(delimiter) - 1
                    if phase == "body" and state.writer is not None and len(buffer) > keep:
                        state.writer.write(memoryview(buffer)[: len(buffer) - keep])
                    del buffer[: max(0, len(buffer) - keep)]
                    break
                if phase == "body" and state.writer is not None:
                    state.writer.write(memoryview(buffer)[:at])
                    await finish_part(state, finish, content_type)
                del buffer[: at + len(delimiter)]
                phase = "after-delimiter"
            elif phase == "after-delimiter":
                if len(buffer) < 2:
                    break
                if buffer[:2] == b"--":
                    phase = "epilogue"
                    continue
                line_end = buffer.find(b"\r\n")
                if line_end < 0:
                    if len(buffer) > 256:
                        raise MultipartError("junk after a multipart boundary")
                    break
                if buffer[:line_end].strip(b" \t"):
                    raise MultipartError("junk after a multipart boundary")
                del buffer[: line_end + 2]
                phase = "headers"
            elif phase == "headers":
                if len(buffer) < 2:
                    break
                # A part with no headers starts with the empty line at once.
                end = -2 if buffer.startswith(b"\r\n") else buffer.find(b"\r\n\r\n")
                if end == -1:
                    if len(buffer) > limits.max_header_bytes:
                        raise BodyTooLarge(f"part headers exceed {limits.max_header_bytes} bytes")
                    break
                if end > limits.max_header_bytes:
                    raise BodyTooLarge(f"part headers exceed {limits.max_header_bytes} bytes")
                content_type = _part_content_type(bytes(buffer[: max(end, 0)]))
                del buffer[: end + 4]
                if len(state.parts) >= limits.max_parts:
                    raise BodyTooLarge(f"more than {limits.max_parts} parts")
                state.writer = new_writer(limits.max_part_bytes) if accept(content_type) else None
                if state.writer is None:
                    state.parts.append(Part(content_type=content_type))
                phase = "body"
            else:  # epilogue: ignored
                buffer.clear()
                break
    if phase != "epilogue":
        raise MultipartError("multipart body ended before its closing boundary")


async def finish_part(state: _State, finish: Callable[[TempWriter], object], content_type: str) -> None:
    writer, state.writer = state.writer, None
    assert writer is not None
    received = await finish(writer)  # type: ignore[misc]
    state.parts.append(Part(content_type=content_type, received=received))


def _part_content_type(raw: bytes) -> str:
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-type":
            return value.decode("latin-1").strip()
    return ""

"""The streaming multipart reader on its own: any chunking gives the same parts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.services.multipart import BodyTooLarge, Limits, MultipartError, parse_content_type, read_parts
from app.services.storage import InstanceStore

LIMITS = Limits(max_body_bytes=10**7, max_part_bytes=10**6, max_header_bytes=1024, max_parts=50)


def _body(parts: list[bytes], boundary: str = "xyz", preamble: bytes = b"") -> bytes:
    out = preamble
    for p in parts:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def _read(tmp_path: Path, body: bytes, cuts: list[int], boundary: str = "xyz", limits: Limits = LIMITS):
    store = InstanceStore(tmp_path, fsync=False)
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})

    async def chunks():  # type: ignore[no-untyped-def]
        for a, b in zip(points, points[1:], strict=False):
            yield body[a:b]

    def finish(writer):  # type: ignore[no-untyped-def]
        return writer.finish(False)

    parts = asyncio.run(read_parts(chunks(), boundary, store.new_temp, finish, limits, lambda _ct: True))
    return [p.received.path.read_bytes() for p in parts if p.received]


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
    preamble=st.sampled_from([b"", b"preamble text\r\n"]),
)
def test_any_chunking_gives_the_same_parts(tmp_path_factory, payloads, cuts, preamble) -> None:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("mp")
    assert _read(tmp, _body(payloads, preamble=preamble), cuts) == payloads


def test_payload_containing_boundary_prefix(tmp_path: Path) -> None:
    payload = b"\r\n--xy not the boundary \r\n--x"
    assert _read(tmp_path, _body([payload]), [5, 40]) == [payload]


def test_boundary_inside_a_part_is_refused(tmp_path: Path) -> None:
    # RFC 2046: the boundary must not occur in a part; a body that breaks this is malformed.
    with pytest.raises(MultipartError, match="junk"):
        _read(tmp_path, _body([b"\r\n--xyzz"]), [])


def test_missing_close_is_an_error_and_leaves_no_file(tmp_path: Path) -> None:
    body = _body([b"abc"])[:-8]
    with pytest.raises(MultipartError):
        _read(tmp_path, body, [3])
    assert list((tmp_path / "tmp").iterdir()) == []


def test_limits(tmp_path: Path) -> None:
    with pytest.raises(BodyTooLarge, match="parts"):
        _read(tmp_path, _body([b""] * 60), [], limits=LIMITS)
    huge_header = b"--xyz\r\nX-Junk: " + b"a" * 5000 + b"\r\n\r\nabc\r\n--xyz--"
    with pytest.raises(BodyTooLarge, match="headers"):
        _read(tmp_path, huge_header, [])
    small = Limits(max_body_bytes=100, max_part_bytes=10**6, max_header_bytes=1024, max_parts=50)
    with pytest.raises(BodyTooLarge, match="body"):
        _read(tmp_path, _body([b"a" * 200]), [], limits=small)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_content_type_parameters() -> None:
    media, params = parse_content_type('Multipart/Related; type="application/dicom"; boundary="a b;c"')
    assert media == "multipart/related" and params == {"type": "application/dicom", "boundary": "a b;c"}

"""A small DICOMweb client (STOW-RS, peer push) used by the demo, benchmarks and tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx


def multipart_body(blobs: Iterable[bytes], boundary: str) -> Iterator[bytes]:
    for blob in blobs:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        yield blob
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def stow(
    client: httpx.Client,
    blobs: list[bytes],
    *,
    study_uid: str | None = None,
    chunked: bool = True,
    url: str = "/dicomweb/studies",
) -> httpx.Response:
    """POST instances as multipart/related; chunked transfer unless chunked=False."""
    boundary = f"b-{uuid.uuid4().hex}"
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    url = url + (f"/{study_uid}" if study_uid else "")
    body = multipart_body(blobs, boundary)
    content: Iterator[bytes] | bytes = body if chunked else b"".join(body)
    return client.post(url, content=content, headers=headers)


def read_files(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]

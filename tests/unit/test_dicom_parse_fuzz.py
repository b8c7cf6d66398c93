"""Fuzzing the DICOM parser: mutated valid Part-10 files must give a header or InvalidInstance, nothing else.

Two engines: hypothesis drives structured byte mutations (bit flips, 32-bit length overwrites, inserts,
deletes, cuts, repeated chunks) of valid files and shrinks any failure to a minimal one; atheris
(coverage-guided, bench/chaos/fuzz_parse.py) runs briefly here and for minutes in ``make chaos``.
``GATEKEEPER_FUZZ_EXAMPLES`` sets the hypothesis budget (600 in CI).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.dicom.parse import InstanceHeader, parse_instance
from app.services.failures import InvalidInstance
from bench.chaos import fuzz_parse

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about every odd element
SEEDS = fuzz_parse.seeds()
EXAMPLES = int(os.environ.get("GATEKEEPER_FUZZ_EXAMPLES", "600"))
LENGTHS = [0, 1, 2, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]
POS = st.integers(0, 1 << 20)  # taken modulo the file's length

MUTATION = st.one_of(
    st.tuples(st.just("flip"), POS, st.integers(0, 7)),
    st.tuples(st.just("length"), POS, st.sampled_from(LENGTHS)),  # where a length field may be
    st.tuples(st.just("insert"), POS, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), POS, st.integers(1, 64)),
    st.tuples(st.just("cut"), POS),
    st.tuples(st.just("repeat"), POS, st.integers(1, 64), st.integers(2, 40)),  # e.g. nested items
)


def mutate(blob: bytes, mutations: list[tuple]) -> bytes:
    data = bytearray(blob)
    for op, pos, *args in mutations:
        at = pos % (len(data) or 1)
        if op == "flip" and data:
            data[at] ^= 1 << args[0]
        elif op == "length":
            data[at : at + 4] = args[0].to_bytes(4, "little")
        elif op == "insert":
            data[at:at] = args[0]
        elif op == "delete":
            del data[at : at + args[0]]
        elif op == "cut":
            del data[at:]
        elif op == "repeat":
            data[at:at] = bytes(data[at : at + args[0]]) * args[1]
    return bytes(data)


def parse_bytes(blob: bytes, path: Path) -> InstanceHeader | None:
    path.write_bytes(blob)
    with contextlib.suppress(InvalidInstance):
        return parse_instance(path)
    return None


def test_seeds_are_valid(tmp_path: Path) -> None:
    """The mutations start from files the parser accepts, so they reach past the first checks."""
    for blob in SEEDS:
        assert parse_bytes(blob, tmp_path / "seed.dcm") is not None


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(range(len(SEEDS))), mutations=st.lists(MUTATION, min_size=1, max_size=6))
def test_mutated_files_raise_only_invalid_instance(seed: int, mutations: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as d:
        parse_bytes(mutate(SEEDS[seed], mutations), Path(d) / "m.dcm")  # anything but InvalidInstance fails


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed (Linux x86_64 only)")
def test_coverage_guided_short_run(tmp_path: Path) -> None:
    # a count of inputs, not a time (a 5 s run failed once beside a training); 300 s is only a cap
    figures = fuzz_parse.run(None, tmp_path, seconds=300, runs=2000)
    assert figures["runs"] >= 2000 and figures["findings"] == 0
    print(figures)

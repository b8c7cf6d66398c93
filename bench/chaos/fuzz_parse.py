"""Coverage-guided fuzzing of the DICOM parser (app/dicom/parse.py) with atheris (libFuzzer).

    .venv/bin/python -m bench.chaos.fuzz_parse CORPUS_DIR -max_total_time=120   # libFuzzer flags

The target writes each input to a file and parses it: ``parse_instance`` must return a header or raise
``InvalidInstance`` (its own failure type); any other exception is a crash, saved by libFuzzer under
-artifact_prefix. -timeout and -rss_limit_mb also make a hang or a memory blow-up a finding. pydicom and
the parser are instrumented, so inputs that reach new branches of either are kept and mutated further.
The seeds are valid Part-10 CT files (explicit and implicit VR, a nested sequence, encapsulated pixels).
``run`` (the chaos scenario) drives this as a subprocess.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

SHORT = {"seconds": 10}
LONG = {"seconds": 120}
# tokens libFuzzer may splice in: the magic, transfer syntaxes, VRs, item and sequence delimiters, pixel data
TOKENS = [b"DICM", b"1.2.840.10008.1.2\x00", b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.4.80",
          b"1.2.840.10008.1.2.1.99", b"1.2.840.10008.5.1.4.1.1.2\x00", b"SQ\x00\x00", b"OB\x00\x00", b"UN\x00\x00",
          b"\xfe\xff\x00\xe0", b"\xfe\xff\x0d\xe0", b"\xfe\xff\xdd\xe0", b"\xe0\x7f\x10\x00", b"\xff\xff\xff\xff",
          b"\x02\x00\x10\x00", b"\x28\x00\x10\x00"]  # fmt: skip


def seeds() -> list[bytes]:
    """Valid CT files the mutations start from; pydicom is imported here, after the caller's instrumentation."""
    from pydicom.dataset import Dataset
    from pydicom.encaps import encapsulate
    from pydicom.sequence import Sequence
    from pydicom.uid import ImplicitVRLittleEndian, JPEGLSLossless

    from testkit.dicom_factory import ct_dataset, make_series, to_bytes

    spec, _ = make_series(1, rows=16, cols=16)
    plain = ct_dataset(spec, 0)
    implicit = ct_dataset(spec, 1)
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    nested = ct_dataset(spec, 2)
    item = Dataset()
    item.ReferencedSOPInstanceUID = plain.SOPInstanceUID
    item.ReferencedImageSequence = Sequence([Dataset()])
    nested.ReferencedImageSequence = Sequence([item])
    encapsulated = ct_dataset(spec, 3)
    encapsulated.file_meta.TransferSyntaxUID = JPEGLSLossless
    encapsulated.PixelData = encapsulate([b"\xff\xd8" + b"\x00" * 30 + b"\xff\xd9"])
    encapsulated["PixelData"].VR = "OB"
    return [to_bytes(ds) for ds in (plain, implicit, nested, encapsulated)]


def target(parse, invalid, path: Path):  # type: ignore[no-untyped-def]
    """The property: a header, or the parser's own failure type."""

    def one_input(data: bytes) -> None:
        path.write_bytes(data)
        with contextlib.suppress(invalid):
            parse(path)

    return one_input


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=["pydicom", "app.dicom.parse"]):
        from app.dicom.parse import parse_instance
        from app.services.failures import InvalidInstance
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    if corpus and not any(Path(corpus[0]).iterdir()):
        for i, blob in enumerate(seeds()):
            (Path(corpus[0]) / f"seed-{i}.dcm").write_bytes(blob)
    # an in-memory file: nothing to clean up (libFuzzer ends the process without running finally blocks)
    path = Path(f"/proc/self/fd/{os.memfd_create('gk-fuzz')}")
    atheris.Setup(sys.argv, target(parse_instance, InvalidInstance, path))
    atheris.Fuzz()


def run(make_stack, workdir: Path, *, seconds: int, runs: int | None = None) -> dict:  # type: ignore[no-untyped-def]
    """The chaos scenario: fuzz for ``seconds``; fails on any finding (the crashing input is kept).

    ``runs``: stop after that many inputs instead (``seconds`` is then only a cap), so a test does the same work
    however loaded the machine is."""
    t0 = time.monotonic()
    corpus, artifacts = workdir / "corpus", workdir / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(exist_ok=True)
    tokens = workdir / "dicom.dict"
    tokens.write_text("".join('"' + "".join(f"\\x{b:02x}" for b in t) + '"\n' for t in TOKENS))
    cmd = [sys.executable, "-m", "bench.chaos.fuzz_parse", str(corpus), f"-max_total_time={seconds}",
           *([f"-runs={runs}"] if runs is not None else []),
           "-timeout=10", "-rss_limit_mb=2048", f"-artifact_prefix={artifacts}/", f"-dict={tokens}",
           "-print_final_stats=1"]  # fmt: skip
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=seconds + 300)
    log = out.stderr
    (workdir / "fuzz.log").write_text(log)
    found = sorted(p.name for p in artifacts.iterdir())
    assert out.returncode == 0 and not found, f"the parser failed on {found} (rc {out.returncode}): {log[-1500:]}"
    execs = int(re.search(r"stat::number_of_executed_units:\s*(\d+)", log)[1])  # type: ignore[index]
    cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", log)
    return {
        "engine": "atheris (libFuzzer)",
        "fuzz_seconds": seconds,
        "runs": execs,
        "files_tried": execs,
        "execs_per_s": round(execs / max(time.monotonic() - t0, 1e-3)),
        "coverage_edges": int(cov[-1][0]) if cov else None,
        "features": int(cov[-1][1]) if cov else None,
        "corpus": int(cov[-1][2]) if cov else None,
        "findings": len(found),
        "lost": 0,
        "seconds": round(time.monotonic() - t0, 1),
    }


if __name__ == "__main__":
    main()

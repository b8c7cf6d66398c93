"""``gatekeeper evaluate-gate`` end to end on tiny models and the real CT (skipped without the data)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from testkit.tiny_models import train_tiny_scorer, train_tiny_segmenter

DATA_DIR = Path(os.environ.get("GATEKEEPER_DATA_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


@pytest.mark.realdata
@pytest.mark.skipif(
    not (DATA_DIR / "ct" / "ircadb-01").is_dir() or not (DATA_DIR / "ct" / "ircadb-17").is_dir(),
    reason=f"real CT (ircadb-01, ircadb-17) not found under {DATA_DIR}: set GATEKEEPER_DATA_DIR to run this test",
)
def test_evaluate_gate_end_to_end(tmp_path: Path) -> None:
    from app.cli import cli

    scorer, segmenter = train_tiny_scorer(tmp_path / "scorer"), train_tiny_segmenter(tmp_path / "segmenter")
    out = tmp_path / "gate"
    args = ["evaluate-gate", "--scorer", str(scorer), "--segmenter", str(segmenter), "--data-dir", str(DATA_DIR),
            "--out", str(out), "--max-pairs", "6"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output + repr(result.exception)

    for name in ("risk_coverage.png", "score_dice.png", "roc.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    held = metrics["slices"]["ircadb-01"]
    assert held["n_liver_slices"] == 98  # MANIFEST: no liver on slices 0-26 and 125-128 of 129
    assert held["normal"]["n"] == 19  # normal liver 27-47 less the 2-slice gap before the tumour run at 48
    at = held["at_threshold"]
    assert at["accepted"]["n"] + at["rejected"]["n"] == 98
    assert at["accepted"]["failures"] + at["rejected"]["failures"] == held["n_failures"]
    assert set(metrics["series"]) == {"ircadb-01", "ircadb-17"}
    assert metrics["series"]["ircadb-01"]["decision"] in ("auto", "manual")
    pairs = metrics["pairs"]
    assert pairs["n_pairs"] == 6 and pairs["lesion_outside_liver_pixels"] == 0
    # the pair views reproduce the worker's paths on unmodified slices
    assert pairs["parity"]["scorer_view"] < 1e-4 and pairs["parity"]["segmenter_view"] < 1e-4
    assert pairs["parity"]["segmenter_vs_segment_mask_pixels"] == 0
    report = (out / "REPORT.md").read_text()
    for heading in ("## Goals", "## Slices", "## Series", "## Position-matched pairs", "## What it measures"):
        assert heading in report

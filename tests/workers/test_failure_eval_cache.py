"""workers.evaluation.failure_eval: a cached per-patient table is reused only while it holds every signal.

A table cached before a signal existed (edge_dark_ratio, session 16) had the same key as a new one, so the
report was built without the new column. The shipped segmenter stands in for a fold's checkpoint here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.core.files import save_npz_atomic
from workers.evaluation.failure_eval import FailureEvalConfig, patient_table

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / ".." / "shared" / "data"
PATIENT = "totalseg-s0009"


def _config(tmp_path: Path) -> FailureEvalConfig:
    """One fold whose checkpoint is the shipped segmenter, its tables cached under tmp_path."""
    if not (DATA / "ct" / PATIENT / "ct.nii.gz").exists():
        pytest.skip(f"{PATIENT} is not under {DATA.resolve()}")
    fold = tmp_path / "runs" / PATIENT / "checkpoints"
    fold.mkdir(parents=True)
    (fold / "final.pt").symlink_to(REPO / "models" / "weights" / "segmenter.pt")
    return FailureEvalConfig(runs=str(tmp_path / "runs"), data_dir=str(DATA.resolve()),
                             cache=str(tmp_path / "cache"), anomaly_scorer=None, patients=(PATIENT,))  # fmt: skip


def test_a_table_cached_without_a_signal_is_recomputed(tmp_path: Path) -> None:
    config = _config(tmp_path)
    table = patient_table(config, PATIENT, REPO)
    assert "signal_edge_dark_ratio" in table
    key = json.loads(str(table["key"]))
    stale_key = json.dumps({k: v for k, v in key.items() if k != "signals"})  # the key before session 16
    stale = {k: v for k, v in table.items() if k != "signal_edge_dark_ratio"} | {"key": np.array(stale_key)}
    save_npz_atomic(tmp_path / "cache" / f"{PATIENT}.npz", stale)
    again = patient_table(config, PATIENT, REPO)
    assert "signal_edge_dark_ratio" in again
    np.testing.assert_allclose(again["signal_edge_dark_ratio"], table["signal_edge_dark_ratio"])
    assert patient_table(config, PATIENT, REPO)["key"] == again["key"]  # the fresh table is the cache now


def test_a_table_cached_under_another_ends_rule_is_recomputed(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """continuation_cm2 depends on models.liver_ends' parameters: a table cached before the rule changed (its
    thinning check, session 18) carried the old rule's ends under the same key, and the report used them."""
    import models.liver_ends as liver_ends

    config = _config(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(liver_ends, "ZONE_MM", 0.0)  # another rule: its tables are cached under its key
        old = patient_table(config, PATIENT, REPO)
    fresh = patient_table(config, PATIENT, REPO)
    assert fresh["key"] != old["key"]
    assert json.loads(str(fresh["key"]))["ends"] == liver_ends.rule_record()

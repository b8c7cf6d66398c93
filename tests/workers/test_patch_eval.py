"""The patch-scorer evaluation end to end on real CT (skips without ../shared/data): summary keys, ranges."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from app.cli.demo_models import shipped
from testkit.tiny_models import train_tiny_patch_scorer
from workers.evaluation.patch_report import run
from workers.evaluation.patch_summary import write_report

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REQUIRED = (
    "detector",
    "gan_generator_steps",
    "train_minutes",
    "lesion_pair_auroc_ge15mm",
    "pixel_auroc_liver",
    "conditioned_minus_unconditioned_ci95",
    "mean_auroc_all_anomaly_types",
    "trivial_baseline_mean_auroc_all_anomaly_types",
    "autoencoder_mean_auroc_all_anomaly_types",
    "unseen_normal_fpr",
)


@pytest.mark.skipif(not (DATA / "ct" / "ircadb-07").exists(), reason=f"real CT not found under {DATA}")
def test_report_has_every_summary_key(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    tiny = train_tiny_patch_scorer(tmp_path / "tiny")
    for name in ("A-fanogan", "B-fanogan", "A-fanogan-uncond"):  # the ablation for one fold only
        (runs / name).mkdir(parents=True)
        shutil.copy(tiny, runs / name / "scorer.pt")
    args = argparse.Namespace(data_dir=str(DATA), folds=["A:ircadb-07", "B:ircadb-17"], max_pairs=6,
                              synthetic_slices=3, detectors=["fanogan", "fanogan-uncond"], runs=runs, target_fpr=0.05,
                              shipped=[], patchcore_segmenter=str(shipped("segmenter")),
                              patchcore_levels=[1, 2], patchcore_coreset=0.02)  # fmt: skip
    result = run(args)
    summary = write_report(result, {"fanogan": {"steps": 2, "train_minutes": 0.0}}, tmp_path / "out", "test")
    assert set(REQUIRED) <= summary.keys()
    assert summary["detector"] == "fanogan"
    assert 0.0 <= summary["mean_auroc_all_anomaly_types"] <= 1.0
    assert 0.0 <= summary["unseen_normal_fpr"] <= 1.0  # each fold's threshold came from the other fold's patient
    assert set(summary["unseen_normal_fpr_per_patient"]) == {"ircadb-07", "ircadb-17"}
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == json.loads(json.dumps(summary, default=float))
    assert (tmp_path / "out" / "REPORT.md").read_text().count("| fanogan |") >= 1
    # the PatchCore baseline (the shipped segmenter's encoder, a memory of the other patients) on the same pairs
    patchcore = result["detectors"]["patchcore"]
    assert 0.0 <= patchcore["mean_auroc_all_anomaly_types"] <= 1.0
    assert set(patchcore["per_fold"]) == {"A", "B"}
    assert summary["patchcore_mean_auroc_all_anomaly_types"] == patchcore["mean_auroc_all_anomaly_types"]
    # conditioning measured where the ablation exists (fold A; the same weights, so no difference), and the
    # GAN fused with the rule in every fold
    assert result["conditioning"]["fanogan"]["folds"] == ["A"] and result["conditioning"]["inpaint"] is None
    assert summary["conditioned_minus_unconditioned"] == 0.0
    assert set(result["detectors"]["fanogan+deviation"]["per_fold"]) == {"A", "B"}


def test_a_report_without_any_trained_gan_says_what_to_train(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no GAN among the evaluated detectors.*train-patch-folds"):
        write_report({"detectors": {"deviation": {}}, "folds": {}}, {}, tmp_path, "test")

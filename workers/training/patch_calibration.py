"""Calibrate a patch scorer on normal patients it never trained on (a conformal quantile), in its checkpoint.

    .venv/bin/python -m workers.training.patch_calibration runs/patch/ship-fanogan/scorer.pt \
        --patients ircadb-07 ircadb-17 ircadb-01 --out runs/patch/ship-fanogan/calibrated.pt

- slice threshold: the split-conformal quantile of the normal liver slices' scores at ``target_fpr``
  (``conformal_threshold``): if a new patient's normal slice is exchangeable with the calibration slices,
  P(score > threshold) <= target. Slices of one patient are not independent and patients differ, which is
  why the evaluation measures the rate on a patient left out of calibration
  (``workers.evaluation.patch_report``: ``unseen_normal_fpr``);
- series threshold: the series score is the mean of the top-k slice scores; normal series of the
  calibration patients' length are simulated from their slices (``calibrate_series_threshold``).
Scores are taken inside the reference liver masks (``LiverRoi(reference_masks=True)``): the threshold
holds for any segmenter whose mask is close to the reference; the gate checks the segmenter itself.
A patient the scorer trained on is refused: its scores are optimistic and would set the threshold low.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.patch_gan import PatchGANConfig, build_patch_scorer
from models.patch_gan.grid import GridConfig
from models.scorer.calibration import calibrate_series_threshold
from workers.inference.checkpoint import read_checkpoint, save_checkpoint
from workers.inference.liver_roi import ROI_KEY, LiverRoi
from workers.inference.patch_scorer import ScoringConfig, load_patch_scorer, score_grid
from workers.training.patch_data import NORMAL_CASES, prepare_case

log = logging.getLogger(__name__)


def conformal_threshold(scores: np.ndarray, alpha: float) -> float:
    """Split-conformal quantile: the ceil((n + 1)(1 - alpha))-th smallest score (the largest when n is small)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if s.size == 0 or not np.isfinite(s).all():
        raise ValueError("calibration scores must be non-empty and finite")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    k = int(np.ceil((s.size + 1) * (1 - alpha)))
    return float(s[min(k, s.size) - 1])


def normal_slice_scores(path: Path, patients: list[str], data_dir: Path) -> dict[str, np.ndarray]:
    model, meta = load_patch_scorer(path)
    trained = set(meta["config"]["train"])
    if overlap := trained & set(patients):
        raise ValueError(f"the scorer trained on {sorted(overlap)}: calibrate on patients it never saw")
    grid_cfg, scoring = GridConfig(**meta["config"]["grid"]), ScoringConfig(**meta["config"]["scoring"])
    out = {}
    for name in patients:
        case = prepare_case(NORMAL_CASES[name], data_dir, grid_cfg)
        scores = score_grid(model, case.grid, scoring, meta["config"]["model"]["patch_size"], grid_cfg.pixel_mm)
        out[name] = scores.slice_scores[case.normal]
        log.info("%s: %d normal slices, median score %.4g", name, case.normal.sum(), np.median(out[name]))
    return out


def calibrate(path: Path, patients: list[str], data_dir: Path, out: Path, target_fpr: float = 0.05) -> dict[str, Any]:
    per_patient = normal_slice_scores(path, patients, data_dir)
    pooled = np.concatenate(list(per_patient.values()))
    ckpt = read_checkpoint(path)
    meta = dict(ckpt["metadata"])
    scoring = ScoringConfig(**meta["config"]["scoring"])
    n_slices = int(np.median([len(v) for v in per_patient.values()]))
    calibration = {
        "target_fpr": target_fpr,
        "threshold": conformal_threshold(pooled, target_fpr),
        "series_threshold": calibrate_series_threshold(
            torch.as_tensor(pooled), n_slices, scoring.series_top_k, target_fpr
        ),
        "series_slices": n_slices,
        "patients": {k: {"normal_slices": int(len(v)), "median": float(np.median(v))} for k, v in per_patient.items()},
        "method": "split-conformal quantile of normal liver slices of patients the scorer never trained on",
    }
    meta["calibration"] = calibration
    meta[ROI_KEY] = LiverRoi(erosion_mm=scoring.erosion_mm, reference_masks=True).as_json()
    save_checkpoint(out, ckpt["state"], meta)
    return calibration


def deviation_checkpoint(out: Path) -> Path:
    """The training-free deviation rule as a scorer checkpoint (no weights; calibrate it like any other)."""
    from workers.inference.patch_scorer import PATCH_KIND
    from workers.training.patch_training import PatchTrainConfig

    config = PatchTrainConfig(model=PatchGANConfig(detector="deviation"), train=(), gan_steps=0, encoder_steps=0)
    meta = {"kind": PATCH_KIND, "config": config.as_json(), "steps": {}, "train_minutes": 0.0, "phase": "done",
            "data": {}, "licences": {}, "licence_note": "no weights: a rule, trained on nothing"}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, {"model": build_patch_scorer(config.model).state_dict()}, meta)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path, help="a patch scorer, or 'deviation' for the training-free rule")
    p.add_argument("--patients", nargs="+", required=True, choices=sorted(NORMAL_CASES))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--target-fpr", type=float, default=0.05)
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    source = args.checkpoint
    if str(source) == "deviation":
        source = deviation_checkpoint(args.out.with_name(f".{args.out.name}.uncalibrated"))
    print(calibrate(source, args.patients, args.data_dir, args.out, args.target_fpr))


if __name__ == "__main__":
    main()

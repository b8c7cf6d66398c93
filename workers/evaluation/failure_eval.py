"""Per-slice tables for the gate's failure evaluation: each patient segmented by the fold that never saw them.

For every patient of ``workers.training.segmenter_folds.PATIENTS`` this runs the held-out fold's segmenter
through the worker's own code (``workers.inference.quality.segment_with_quality``: mask and quality
signals), scores the series with the anomaly scorer inside the predicted liver (the worker's
``score_volume``), and compares the mask with the reference slice by slice on the series grid. Tables are
cached as ``<cache>/<patient>.npz`` (derived from non-commercial data: runs/ only, never committed).
``failure_metrics`` turns them into the report's numbers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.core.files import save_npz_atomic
from models.liver_ends import rule_record
from models.quality import EXTRA_SIGNALS, SIGNALS
from models.segmenter import LiverSegmenter
from workers.inference.quality import density_of, passes_record
from workers.inference.scorer import load_scorer
from workers.inference.segmenter import load_segmenter
from workers.training.risk_fit import case_table
from workers.training.segmenter_data import load_masked_volume
from workers.training.segmenter_folds import PATIENTS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FailureEvalConfig:
    runs: str = "runs/segmenter-lopo"  # <runs>/<patient>/checkpoints/final.pt: the fold holding it out
    data_dir: str = "../shared/data"
    cache: str = "runs/gate-lopo"
    anomaly_scorer: str | None = "models/weights/deviation.pt"  # the shipped default scorer
    patients: tuple[str, ...] = tuple(PATIENTS)
    second_runs: str | None = None  # a second member of every fold (another seed): the two-member ensemble
    segmenter: str | None = None  # one checkpoint for every patient instead of folds (none of them trained it)

    def as_json(self) -> dict:
        return asdict(self)


def fold_checkpoint(config: FailureEvalConfig, patient: str, repo: Path, runs: str | None = None) -> Path:
    if config.segmenter and runs in (None, config.runs):
        return repo / config.segmenter
    return repo / (runs or config.runs) / patient / "checkpoints" / "final.pt"


def patient_table(config: FailureEvalConfig, patient: str, repo: Path) -> dict[str, np.ndarray]:
    """Per-slice arrays of one held-out patient (cached; the cache key is the checkpoint's sha256)."""
    checkpoint = fold_checkpoint(config, patient, repo)
    model, metadata = load_segmenter(checkpoint)
    if config.segmenter and patient in metadata.get("data", {}).get("per_case", {}):
        raise ValueError(f"{config.segmenter} was trained on {patient}: not a held-out patient")
    others: tuple[LiverSegmenter, ...] = ()
    if config.second_runs:
        other, other_metadata = load_segmenter(fold_checkpoint(config, patient, repo, config.second_runs))
        others = (other,)
    # both kept (compared side by side); one segmenter for every patient has its own folder beside the folds'
    folder = f"{config.cache}-{Path(config.segmenter).stem}" if config.segmenter else config.cache
    cache = repo / folder / f"{patient}{'-ensemble' if others else ''}.npz"
    # "mask": the SEG is the passes' mean since session 12; tables of the plain-pass mask are stale
    # "signals": a table cached before a signal existed lacks its column (edge_dark_ratio, session 16;
    # continuation_cm2, session 17); "ends": continuation_cm2 from another rule is stale (its thinning check,
    # session 18, changed what it finds)
    key = json.dumps({"segmenter": metadata["sha256"], "scorer": config.anomaly_scorer, "mask": "tta-mean",
                      "passes": passes_record(), "signals": [*SIGNALS, *EXTRA_SIGNALS], "ends": rule_record(),
                      **({"second": other_metadata["sha256"]} if others else {})})  # fmt: skip
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["key"]) == key:
                return {k: z[k] for k in z.files}
    volume = load_masked_volume(PATIENTS[patient], (repo / config.data_dir).resolve())
    scorer = load_scorer(repo / config.anomaly_scorer) if config.anomaly_scorer else None
    table: dict[str, Any] = {**case_table(model, scorer, volume, density_of(metadata), {"others": others}),
                             "key": np.array(key),
                             "segmenter_step": np.int64(metadata.get("step", -1))}  # fmt: skip
    save_npz_atomic(cache, table)
    log.info("%s: series Dice %.3f, %d slices, %.1f s", patient, float(table["series_dice"]), len(table["dice"]),
             float(table["segment_seconds"]))  # fmt: skip
    return table


def collect(config: FailureEvalConfig, repo: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every patient whose fold checkpoint exists (the others are named in the log, not silently dropped)."""
    tables = {}
    for patient in config.patients:
        needed = [fold_checkpoint(config, patient, repo, runs) for runs in (config.runs, config.second_runs) if runs]
        if not all(path.exists() for path in needed):
            log.warning("no fold checkpoint for %s at %s: left out", patient, ", ".join(map(str, needed)))
            continue
        tables[patient] = patient_table(config, patient, repo)
    return tables

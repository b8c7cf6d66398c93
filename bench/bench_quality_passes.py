"""The quality pass's augmented passes, fewer or more: what each costs and what it gives the gate.

On the leave-one-patient-out segmenter folds (``scripts/train-segmenter-folds.sh``; IRCADb is non-commercial,
so figures only), each patient through ``segment_with_quality`` with each set of passes: the pooled failure
AUROC of the disagreement risk (``failure_metrics.lopo``: threshold-free, as ``reports/gate`` computes it),
the failures among the 70 % lowest-risk slices, each series' Dice, and the seconds of the quality pass.

    .venv/bin/python bench/bench_quality_passes.py [--out /tmp/passes.json]
    .venv/bin/python bench/bench_quality_passes.py --second-runs runs/segmenter-lopo-seed1 --only-ensemble

With ``--second-runs`` (a second member of every fold, ``SEED=1 RUNS=runs/segmenter-lopo-seed1
scripts/train-segmenter-folds.sh``) it also measures a two-member ensemble: the second member's plain pass joins
the passes (the mean mask, the disagreement).
"""

import argparse
import json
from pathlib import Path

import torch

from models.risk import FailureRule
from workers.evaluation.failure_metrics import lopo, pooled_metrics
from workers.inference.quality import density_of
from workers.inference.segmenter import load_segmenter
from workers.training.risk_fit import case_table
from workers.training.segmenter_data import load_masked_volume
from workers.training.segmenter_folds import PATIENTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/quality-passes.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--second-runs", type=Path, default=None,
                        help="a second member of every fold (SEED=1 RUNS=... scripts/train-segmenter-folds.sh): "
                        "adds the ensemble's variants, its plain pass among the passes")  # fmt: skip
    parser.add_argument("--only-ensemble", action="store_true", help="with --second-runs: the ensemble's variants "
                        "and the default only")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    VARIANTS = {
        "3 augmented: 2 shifts + intensity (the default until 2026-12-03)": (((4, 4), (-4, -4)), 0.1),
        "2 augmented: 1 shift + intensity": (((4, 4),), 0.1),
        "2 augmented: 2 shifts (the default)": (((4, 4), (-4, -4)), None),
        "1 augmented: 1 shift": (((4, 4),), None),
        "1 augmented: intensity": ((), 0.1),
    }
    ENSEMBLE = {  # (shifts, intensity, with the second member)
        "ensemble: 2 shifts + the second member's plain pass": (((4, 4), (-4, -4)), None),
        "ensemble: 1 shift + the second member's plain pass": (((4, 4),), None),
        "ensemble: the second member's plain pass alone": ((), None),
    }
    if args.only_ensemble:
        VARIANTS = {k: v for k, v in VARIANTS.items() if k.endswith("(the default)")}
    vols = {p: load_masked_volume(PATIENTS[p], Path("../shared/data").resolve()) for p in PATIENTS}
    folds = {p: Path(f"runs/segmenter-lopo/{p}/checkpoints/final.pt") for p in PATIENTS}
    seconds = {p: args.second_runs / p / "checkpoints" / "final.pt" for p in PATIENTS} if args.second_runs else {}
    missing = [str(f) for f in [*folds.values(), *seconds.values()] if not f.exists()]
    if missing:
        raise SystemExit(f"fold checkpoints missing ({', '.join(missing)}): run scripts/train-segmenter-folds.sh")
    models = {p: load_segmenter(f) for p, f in folds.items()}
    others = {p: (load_segmenter(f)[0],) for p, f in seconds.items()}
    variants = {name: (*v, False) for name, v in VARIANTS.items()}
    if others:
        variants.update({name: (*v, True) for name, v in ENSEMBLE.items()})
    out = {}
    for name, (shifts, inten, ensemble) in variants.items():
        tables, secs = {}, {}
        for p in PATIENTS:
            m, meta = models[p]
            passes = {"shifts": shifts, "intensity": inten, "others": others[p] if ensemble else ()}
            tables[p] = case_table(m, None, vols[p], density_of(meta), passes)
            secs[p] = float(tables[p]["segment_seconds"])
        pm = pooled_metrics(lopo(tables, FailureRule()), n_boot=200)
        out[name] = {
            k: pm[k]
            for k in (
                "failure_auroc",
                "failure_auroc_ci95",
                "risk_at_70pct_coverage",
                "coverage_at_1pct_risk",
                "failures",
                "slices",
            )
        }
        out[name]["series_dice"] = {p: round(float(t["series_dice"]), 4) for p, t in tables.items()}
        out[name]["segment_seconds"] = secs
        print(name, json.dumps(out[name]), flush=True)
    args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

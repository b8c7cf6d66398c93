"""Leave-one-patient-out training of the liver segmenter over every case with a liver mask.

Each fold trains on every masked patient but one, on all their slices (tumours are inside IRCAD's liver
masks, so a liver with lesions is still liver), plus the TotalSegmentator sample (predicted masks: training
only, never a held-out patient), and evaluates on the patient it left out. The gate's evaluation
(``workers.evaluation.gate_signals``) reads each patient's prediction from the fold that never saw them.

    python -m workers.training.segmenter_folds --runs runs/segmenter-lopo --heldout ircadb-01

Runs resume (``latest.pt``); ``scripts/train-segmenter-folds.sh`` runs every fold, two at a time
(``SEED=1 RUNS=runs/segmenter-lopo-seed1``: a second member of each fold, for the ensemble's evaluation).
``--shippable`` trains the segmenter the repository ships (``models/weights/segmenter.pt``) on the
redistributable cases only: ``python -m workers.training.segmenter_folds --runs runs --shippable --steps 8000``.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from models.segmenter import SegmenterConfig, default_grid
from workers.inference.engine import bf16_is_native
from workers.training.scorer_training import pick_device
from workers.training.segmenter_data import AugmentConfig, MaskedCase, SegmenterDataConfig
from workers.training.segmenter_training import SegmenterTrainConfig, train_segmenter

# Patients with a reviewed or manual liver mask: each is held out once.
PATIENTS: dict[str, MaskedCase] = {
    "ircadb-01": MaskedCase("ircadb-01", "ct/ircadb-01/ct-dicom", "ct/ircadb-01/masks/liver.nii.gz"),
    "ircadb-07": MaskedCase("ircadb-07", "ct/ircadb-07/ct-dicom", "ct/ircadb-07/masks/liver.nii.gz"),
    "ircadb-17": MaskedCase("ircadb-17", "ct/ircadb-17/ct-dicom", "ct/ircadb-17/masks/liver.nii.gz"),
    "totalseg-s0009": MaskedCase(
        "totalseg-s0009", "ct/totalseg-s0009/ct.nii.gz", "ct/totalseg-s0009/masks/liver.nii.gz"
    ),  # fmt: skip
}
# Predicted (not manual) masks: extra anatomy for training, never a measurement.
ALWAYS_TRAIN = (
    MaskedCase(
        "totalseg-example-3mm", "ct/totalseg-example/ct-3mm.nii.gz", "ct/totalseg-example/masks/liver-on-ct-3mm.nii.gz"
    ),  # fmt: skip
    MaskedCase(
        "totalseg-example-dicom", "ct/totalseg-example/ct-dicom", "ct/totalseg-example/masks/liver-on-ct-dicom.nii.gz"
    ),  # fmt: skip
)


def fold_model() -> SegmenterConfig:
    """2 mm in-plane (a 384 mm field at 192 px) and +-2 neighbours at 3 mm (a 12 mm slab).

    Chosen by measurement (bench/bench_segmenter_train.py, toy tensors, one thread, AVX-512 EPYC, 2026-12-02):
    192 px at batch 8 trains at 3.4 steps/s (context 1), about the rate of the old 160 px grid at batch 16
    (1.55), so a 2,000-step fold takes about 10-15 min on a quiet core; 2 mm halves the boundary error of the old
    2.5 mm pixel. Beside four other engineers' test stacks the folds ran at 0.35-0.6 steps/s (60-75 min).
    Since 2026-12-02 (session 9) they train 8,000 steps, bf16 where native: 8.8 steps/s on one AMX core; 4.2
    steps/s each for two folds side by side on an AVX512-BF16 EPYC (session 12)."""
    return SegmenterConfig(preprocess=replace(default_grid(), size=192, pixel_mm=2.0), context=2)


def fold_config(heldout: str, *, steps: int = 3000, data_dir: str = "../shared/data",
                bf16: bool = False, seed: int = 0) -> SegmenterTrainConfig:  # fmt: skip
    if heldout not in PATIENTS:
        raise ValueError(f"unknown held-out patient {heldout!r}; one of {sorted(PATIENTS)}")
    train = tuple(c for name, c in PATIENTS.items() if name != heldout) + ALWAYS_TRAIN
    data = SegmenterDataConfig(data_dir=data_dir, cache_dir="runs/segmenter/cache", train=train,
                               heldout=PATIENTS[heldout])  # fmt: skip
    return SegmenterTrainConfig(model=fold_model(), data=data, batch_size=8, steps=steps, lr=2e-3,
                                eval_every=1000, checkpoint_every=100, num_threads=1, bf16=bf16,
                                seed=seed)  # fmt: skip


# The segmenter the product ships (models/weights/segmenter.pt): trained only on cases whose licence allows
# redistributing weights (CC BY 4.0 and Apache-2.0), and measured on the 3D-IRCADb patients it never saw.
SHIPPABLE_TRAIN = ("totalseg-s0009",)
SHIPPED_HELDOUT = "ircadb-01"  # evaluated during training only: the weights are the last step's, never selected
SHIPPED_LUNG_P = 0.25  # share of liver slices ringed with air (AugmentConfig.lung_p): no shippable case has a dome


def shipped_config(*, steps: int = 8000, data_dir: str = "../shared/data", bf16: bool = False, seed: int = 0,
                   lung_p: float = SHIPPED_LUNG_P) -> SegmenterTrainConfig:  # fmt: skip
    """The fold recipe on the redistributable cases only, with the lung augmentation (their livers have no dome)."""
    train = tuple(PATIENTS[name] for name in SHIPPABLE_TRAIN) + ALWAYS_TRAIN
    data = SegmenterDataConfig(data_dir=data_dir, cache_dir="runs/segmenter/cache", train=train,
                               heldout=PATIENTS[SHIPPED_HELDOUT])  # fmt: skip
    return SegmenterTrainConfig(model=fold_model(), data=data, batch_size=8, steps=steps, lr=2e-3,
                                eval_every=1000, checkpoint_every=100, num_threads=1, bf16=bf16, seed=seed,
                                augment=AugmentConfig(lung_p=lung_p))  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Train (or resume) one leave-one-patient-out fold of the segmenter, or (--shippable) the shipped one."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--runs", type=Path, default=Path("runs/segmenter-lopo"))
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--heldout", choices=sorted(PATIENTS))
    which.add_argument(
        "--shippable",
        action="store_true",
        help=f"train on {', '.join(SHIPPABLE_TRAIN)} and the Apache-2.0 sample only (redistributable)",
    )
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0,
                        help="initialisation and batch order: another seed, another ensemble member")  # fmt: skip
    parser.add_argument("--lung-p", type=float, default=None,
                        help=f"share of liver slices ringed with air (the dome): default {SHIPPED_LUNG_P} "
                        "for --shippable, 0 for a fold")  # fmt: skip
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto: bf16 autocast where it is native (AMX/AVX512-BF16 or CUDA), else fp32")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    bf16 = args.precision == "bf16" or (args.precision == "auto" and bf16_is_native(pick_device("auto")))
    if args.shippable:
        lung = {} if args.lung_p is None else {"lung_p": args.lung_p}
        config, run_dir = shipped_config(steps=args.steps, bf16=bf16, seed=args.seed, **lung), args.runs / "shippable"
    else:
        config = fold_config(args.heldout, steps=args.steps, bf16=bf16, seed=args.seed)
        if args.lung_p is not None:
            config = replace(config, augment=replace(config.augment, lung_p=args.lung_p))
        run_dir = args.runs / args.heldout
    print(train_segmenter(config, run_dir, resume=not args.fresh))


if __name__ == "__main__":
    main()

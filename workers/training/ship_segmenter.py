"""Ship a segmenter: measure it on every masked patient it never trained on, then write it, its model card
and its sha256 into ``models/weights`` (the default ``make run`` registers).

    python -m workers.training.segmenter_folds --runs runs --shippable --steps 8000     # about 30 min
    python -m workers.training.ship_segmenter runs/shippable/checkpoints/final.pt --out models/weights
    python -m workers.training.ship_segmenter CHECKPOINT --measure-only     # the same Dice, nothing written

Refused unless every training case's licence allows redistributing the weights (``model_card``): the
3D-IRCADb patients are only measured, and the card says so.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from app.services.storage import file_sha256
from models.input_checks import TRAINING_LIVER_HU_KEY
from workers.inference.checkpoint import read_checkpoint, save_checkpoint
from workers.inference.segmenter import load_segmenter
from workers.training.model_card import build_card, write_card
from workers.training.segmenter_data import MaskedCase, SegmenterDataConfig, load_masked_volume, training_liver_hu
from workers.training.segmenter_folds import PATIENTS
from workers.training.segmenter_training import evaluate

log = logging.getLogger(__name__)
SHIPPED_NAME = "segmenter.pt"
KEPT = ("dice_series", "dice_dome", "dice_per_slice_mean", "dice_per_slice_median", "n_liver_slices")


class NotShippable(ValueError):
    """The checkpoint was trained on data whose licence forbids redistributing weights."""


def measure_unseen(checkpoint: Path, patients: Mapping[str, MaskedCase], data_dir: Path) -> dict[str, dict]:
    """Dice of the worker's mask (``segment_mask``) on each patient the checkpoint did not train on."""
    model, metadata = load_segmenter(checkpoint)
    trained = set(metadata.get("data", {}).get("per_case", {}))
    measured = {}
    for name, case in patients.items():
        if case.name in trained:
            continue
        metrics, _ = evaluate(model, load_masked_volume(case, data_dir), name)
        measured[name] = {k: metrics[k] for k in KEPT}
        log.info("%s: series Dice %.3f", name, metrics["dice_series"])
    return measured


def update_sums(out_dir: Path, name: str) -> None:
    """SHA256SUMS beside the weights: this file's line replaced, the others kept."""
    sums = out_dir / "SHA256SUMS"
    lines = [ln for ln in (sums.read_text().splitlines() if sums.exists() else []) if not ln.endswith(f"  {name}")]
    sums.write_text("\n".join([*lines, f"{file_sha256(out_dir / name)}  {name}"]) + "\n")


def ship(checkpoint: Path, out_dir: Path, *, data_dir: Path, patients: Mapping[str, MaskedCase] = PATIENTS) -> Path:
    """Measure ``checkpoint`` on its unseen patients, record that on it, and write it into ``out_dir``."""
    card = build_card(checkpoint)
    if card["kind"] != "segmenter":
        raise NotShippable(f"{checkpoint.name} is a {card['kind']} checkpoint, not a segmenter")
    if not card["redistributable"]:
        raise NotShippable(f"{checkpoint.name} trained on {', '.join(card['train_cases'])}: not all allow shipping")
    measured = measure_unseen(checkpoint, patients, data_dir)
    if not measured:
        raise NotShippable(f"no patient with a liver mask that {checkpoint.name} did not train on: nothing measured")
    ckpt = read_checkpoint(checkpoint)
    metadata = dict(ckpt["metadata"])
    dices = [m["dice_series"] for m in measured.values()]
    metadata["metrics"] = {**(metadata.get("metrics") or {}), "unseen_patients": measured,
                           "unseen_series_dice_median": float(np.median(dices))}  # fmt: skip
    if TRAINING_LIVER_HU_KEY not in metadata:  # trained before training recorded it: the contrast note's range
        data = SegmenterDataConfig.from_json(metadata["config"]["data"])
        metadata[TRAINING_LIVER_HU_KEY] = training_liver_hu(replace(data, data_dir=str(data_dir.resolve())), Path.cwd())
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / SHIPPED_NAME
    save_checkpoint(target, ckpt["state"], metadata)
    write_card(target)
    update_sums(out_dir, SHIPPED_NAME)
    return target


def main(argv: list[str] | None = None) -> None:
    """Measure a segmenter on the patients it never saw and ship it into models/weights."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, default=Path("models/weights"))
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--measure-only", action="store_true",
                        help="print the Dice on every unseen masked patient (JSON) and write nothing")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.measure_only:
        print(json.dumps(measure_unseen(args.checkpoint, PATIENTS, args.data_dir.resolve()), indent=2))
        return
    try:
        target = ship(args.checkpoint, args.out, data_dir=args.data_dir)
    except NotShippable as exc:
        parser.exit(2, f"refused: {exc}\n")
    print(f"{target} sha256 {file_sha256(target)}")


if __name__ == "__main__":
    main()

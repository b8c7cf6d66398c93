"""Where a segmenter's liver goes wrong on one patient: area outside the reference, how much of it inside
another labelled structure (a neighbouring mass, an organ), and the area missed, per slice and in total.

    python -m workers.evaluation.mask_leak runs/segmenter-lopo/ircadb-07/checkpoints/final.pt ircadb-07 \\
        --structure ct/ircadb-07/masks/extrahepatic-mass.nii.gz

The mask is the plain pass's largest 3D component (``segment_mask``), on the series grid; areas are in cm²
summed over slices. Figures only: the IRCADb cases are non-commercial.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from app.dicom.seg import read_nifti_mask
from app.dicom.volume import load_series_volume
from workers.inference.segmenter import load_segmenter, segment_mask
from workers.training.segmenter_data import load_masked_volume
from workers.training.segmenter_folds import PATIENTS


def leak_table(checkpoint: Path, patient: str, structure: str, data_dir: Path) -> dict:
    """Totals and per-slice areas (cm²) of extra, extra-inside-``structure`` and missed liver."""
    case = PATIENTS[patient]
    volume = load_masked_volume(case, data_dir)
    series = load_series_volume(sorted(p for p in (data_dir / case.ct).iterdir() if p.is_file()))
    other = read_nifti_mask(data_dir / structure, series.geometry) > 0
    model, _ = load_segmenter(checkpoint)
    pred = segment_mask(model, volume.hu, volume.pixel_spacing_mm, volume.positions_mm) > 0
    ref = volume.mask > 0
    px_cm2 = volume.pixel_spacing_mm[0] * volume.pixel_spacing_mm[1] / 100.0

    def per_slice(m: np.ndarray) -> np.ndarray:
        return m.reshape(len(m), -1).sum(1) * px_cm2

    extra, missed = pred & ~ref, ref & ~pred
    rows = {"reference": per_slice(ref), "predicted": per_slice(pred), "extra": per_slice(extra),
            "extra_in_structure": per_slice(extra & other), "missed": per_slice(missed)}  # fmt: skip
    inter = float((pred & ref).sum())
    return {
        "patient": patient,
        "structure": structure,
        "series_dice": 2 * inter / max(float(pred.sum() + ref.sum()), 1.0),
        "totals_cm2": {k: round(float(v.sum()), 1) for k, v in rows.items()},
        "structure_median_hu": float(np.median(volume.hu[other])) if other.any() else None,
        "liver_median_hu": float(np.median(volume.hu[ref])),
        "slices": {k: [round(float(x), 1) for x in v] for k, v in rows.items()},
    }


def main(argv: list[str] | None = None) -> None:
    """Print where one patient's liver mask leaks and what it misses (JSON; --slices for the per-slice areas)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("patient", choices=sorted(PATIENTS))
    parser.add_argument("--structure", required=True, help="a NIfTI mask on the patient's CT grid, under --data-dir")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--slices", action="store_true", help="also the per-slice areas")
    args = parser.parse_args(argv)
    table = leak_table(args.checkpoint, args.patient, args.structure, args.data_dir.resolve())
    if not args.slices:
        table.pop("slices")
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()

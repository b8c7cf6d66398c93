"""Does ``models.liver_ends`` tell a mask that stops short from one that ends where the liver ends?

    python -m workers.evaluation.liver_ends_eval [--data-dir ../shared/data] [--cuts 2 4 6 10]

On every case with a reference liver mask: the reference's own ends (closed: the liver ends there) and the
same mask cut short by k slices at one end (open, as a segmenter that stops early leaves it). An end that
reaches the first or last slice of the series has nothing past it and is left out (totalseg-s0009's top).
Prints one line per case and cut: the reference area removed, the area found continuing, and the ends called
open. The shipped segmenter's own ends are in ``reports/gate-shipped`` (``gatekeeper evaluate-failure-gate
--segmenter``). Reads non-commercial data: numbers only, nothing written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from models.liver_ends import continuation_cm2, mask_ends, open_ends
from workers.training.segmenter_data import load_masked_volume
from workers.training.segmenter_folds import PATIENTS


def _ends(present: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
    """side -> the slice indices of the mask from that end inwards (only ends that do not touch the series' edge)."""
    idx = np.flatnonzero(present)
    return {side: idx if step < 0 else idx[::-1] for end, step, side in mask_ends(present, positions)
            if 0 <= end + step < len(present)}  # fmt: skip


def evaluate(data_dir: Path, cuts: list[int]) -> list[dict]:
    rows = []
    for name in sorted(PATIENTS):
        v = load_masked_volume(PATIENTS[name], data_dir)
        ref, pos = v.mask.astype(bool), np.asarray(v.positions_mm, dtype=np.float64)
        px_cm2 = v.pixel_spacing_mm[0] * v.pixel_spacing_mm[1] / 100.0
        area = ref.reshape(len(ref), -1).sum(1) * px_cm2
        beyond = continuation_cm2(v.hu, ref, v.pixel_spacing_mm, pos)
        rows.append({"case": name, "cut": 0, "side": "both", "removed_cm2": 0.0, "found_cm2": float(beyond.sum()),
                     "max_slice_cm2": float(beyond.max()),
                     "open": [e.side for e in open_ends(beyond, area > 0, pos)]})  # fmt: skip
        for k in cuts:
            for side, inwards in _ends(area > 0, pos).items():
                short = ref.copy()
                short[inwards[:k]] = False
                beyond = continuation_cm2(v.hu, short, v.pixel_spacing_mm, pos)
                rows.append({"case": name, "cut": k, "side": side, "removed_cm2": float(area[inwards[:k]].sum()),
                             "found_cm2": float(beyond[inwards[:k]].sum()), "max_slice_cm2": float(beyond.max()),
                             "open": [e.side for e in open_ends(beyond, short.any((1, 2)), pos)]})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print the closed and cut ends of every case with a reference liver mask."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cuts", type=int, nargs="+", default=[2, 4, 6, 10])
    args = parser.parse_args(argv)
    rows = evaluate(args.data_dir.resolve(), args.cuts)
    print("| case | slices cut | end | reference removed (cm²) | found on the cut slices (cm²) | called open |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['cut']} | {r['side']} | {r['removed_cm2']:.1f} | {r['found_cm2']:.1f} "
              f"| {', '.join(r['open']) or '-'} |")  # fmt: skip
    for k in sorted({r["cut"] for r in rows} - {0}):
        cut = [r for r in rows if r["cut"] == k]
        print(f"cut by {k}: {sum(r['open'] == [r['side']] for r in cut)} of {len(cut)} ends called open on their side")
    closed = [r for r in rows if r["cut"] == 0]
    print(f"reference ends: {sum(bool(r['open']) for r in closed)} of {len(closed)} cases with an end called open; "
          f"largest continuation on one slice {max(r['max_slice_cm2'] for r in closed):.1f} cm²")  # fmt: skip


if __name__ == "__main__":
    main()

"""Does ``models.liver_ends`` tell a mask that stops short from one that ends where the liver ends?

    python -m workers.evaluation.liver_ends_eval [--data-dir ../shared/data] [--cuts 2 4 6 10] [--tapers 6 10]

On every case with a reference liver mask: the reference's own ends (closed: the liver ends there), the
same mask cut short by k slices at one end (open, as a segmenter that stops early leaves it), and the same
mask with its last k slices at one end thinned to their inner 10 % (a segmenter that thins out early). An end that
reaches the first or last slice of the series has nothing past it and is left out (totalseg-s0009's top).
Prints one line per case and cut: the reference area removed, the area found continuing, and the ends called
open. The shipped segmenter's own ends are in ``reports/gate-shipped`` (``gatekeeper evaluate-failure-gate
--segmenter``). Reads non-commercial data: numbers only, nothing written.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from models.liver_ends import continuation_cm2, mask_ends, open_ends
from workers.training.segmenter_data import load_masked_volume
from workers.training.segmenter_folds import PATIENTS

TAPER_KEEP = 0.1


def _ends(present: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
    """side -> the slice indices of the mask from that end inwards (only ends that do not touch the series' edge)."""
    idx = np.flatnonzero(present)
    return {side: idx if step < 0 else idx[::-1] for end, step, side in mask_ends(present, positions)
            if 0 <= end + step < len(present)}  # fmt: skip


def taper(mask: np.ndarray, inwards: np.ndarray, k: int, keep: float = TAPER_KEEP) -> np.ndarray:
    """The mask with each of its last ``k`` slices (``inwards``: from the end inwards) shrunk to its most interior
    ``keep`` share (the pixels farthest from the slice's outline): a segmenter that thins out before the liver
    does, as the shipped one on ircadb-01's caudal tip (3 cm² a slice where the reference has 20-30)."""
    out = mask.copy()
    for z in inwards[:k]:
        depth = ndimage.distance_transform_edt(mask[z])
        inside = depth[mask[z]]
        out[z] = depth >= max(float(np.quantile(inside, 1.0 - keep)), 1.0)
    return out


def evaluate(data_dir: Path, cuts: Sequence[int], tapers: Sequence[int] = ()) -> list[dict]:
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
        for k in tapers:
            for side, inwards in _ends(area > 0, pos).items():
                thin = taper(ref, inwards, k)
                left = thin.reshape(len(thin), -1).sum(1) * px_cm2
                beyond = continuation_cm2(v.hu, thin, v.pixel_spacing_mm, pos)
                rows.append({"case": name, "cut": f"thinned {k}", "side": side,
                             "removed_cm2": float((area - left)[inwards[:k]].sum()),
                             "found_cm2": float(beyond[inwards[:k]].sum()), "max_slice_cm2": float(beyond.max()),
                             "open": [e.side for e in open_ends(beyond, left > 0, pos)]})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print the closed and cut ends of every case with a reference liver mask."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cuts", type=int, nargs="+", default=[2, 4, 6, 10])
    parser.add_argument(
        "--tapers",
        type=int,
        nargs="*",
        default=[6, 10],
        help=f"also thin the last k slices to their inner {TAPER_KEEP:.0%} (a mask that tapers early)",
    )
    args = parser.parse_args(argv)
    rows = evaluate(args.data_dir.resolve(), args.cuts, args.tapers)
    print(
        "| case | slices cut or thinned | end | reference removed (cm²) | found on those slices (cm²) | called open |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['cut']} | {r['side']} | {r['removed_cm2']:.1f} | {r['found_cm2']:.1f} "
              f"| {', '.join(r['open']) or '-'} |")  # fmt: skip
    for k in sorted({r["cut"] for r in rows} - {0}, key=str):
        cut = [r for r in rows if r["cut"] == k]
        what = k if isinstance(k, str) else f"cut {k}"
        print(f"{what}: {sum(r['open'] == [r['side']] for r in cut)} of {len(cut)} ends called open on their side")
    closed = [r for r in rows if r["cut"] == 0]
    print(f"reference ends: {sum(bool(r['open']) for r in closed)} of {len(closed)} cases with an end called open; "
          f"largest continuation on one slice {max(r['max_slice_cm2'] for r in closed):.1f} cm²")  # fmt: skip


if __name__ == "__main__":
    main()

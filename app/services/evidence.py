"""Evidence for a manual case: per-slice scores, top slices and their residual heat-maps."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from app.core.plotting import pyplot

TOP_K = 3


def save_evidence(path: Path, *, slice_scores: np.ndarray, heatmaps: np.ndarray, positions_mm: list[float],
                  threshold: float | None) -> list[int]:  # fmt: skip
    """Write scores and the top-k heat-maps to one .npz (atomically); return the top slice indices."""
    top = [int(i) for i in np.argsort(-slice_scores)[:TOP_K]]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fp:
        np.savez_compressed(
            fp, slice_scores=slice_scores.astype(np.float32), top_slices=np.asarray(top),
            heatmaps=heatmaps[top].astype(np.float16), positions_mm=np.asarray(positions_mm, np.float32),
            threshold=np.float32(np.nan if threshold is None else threshold),
        )  # fmt: skip
    os.replace(tmp, path)
    return top


def render_png(npz_path: Path) -> bytes:
    """A score profile along z with the threshold, beside the top slices' heat-maps."""
    plt = pyplot()

    ev = np.load(npz_path)
    top, heat = ev["top_slices"], ev["heatmaps"].astype(np.float32)
    fig, axes = plt.subplots(1, 1 + len(top), figsize=(4 + 3 * len(top), 3), dpi=80)
    axes[0].plot(ev["positions_mm"], ev["slice_scores"], lw=1)
    if np.isfinite(ev["threshold"]):
        axes[0].axhline(float(ev["threshold"]), color="r", ls="--", lw=1, label="threshold")
    axes[0].set(xlabel="position along the slice normal (mm)", ylabel="anomaly score", title="score profile")
    for ax, index, h in zip(axes[1:], top, heat, strict=True):
        ax.imshow(h, cmap="inferno")
        ax.set(title=f"slice {int(index)}", xticks=[], yticks=[])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()

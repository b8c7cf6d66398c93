"""Evidence for a manual case: per-slice scores, top slices and their residual heat-maps."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from app.core.files import save_npz_atomic
from app.core.plotting import pyplot

TOP_K = 3


Box = tuple[float, float, float, float]


def save_evidence(path: Path, *, slice_scores: np.ndarray, heatmaps: np.ndarray, positions_mm: list[float],
                  threshold: float | None, heatmap_box: Box | None = None) -> list[int]:  # fmt: skip
    """Write scores and the top-k heat-maps to one .npz (atomically); return the top slice indices.
    ``heatmap_box``: where the heat-maps lie on the slice, (y0, y1, x0, x1) in the slice's pixel edges."""
    top = [int(i) for i in np.argsort(-slice_scores)[:TOP_K]]
    arrays: dict[str, np.ndarray] = {
        "slice_scores": slice_scores.astype(np.float32), "top_slices": np.asarray(top),
        "heatmaps": heatmaps[top].astype(np.float16), "positions_mm": np.asarray(positions_mm, np.float32),
        "threshold": np.asarray(np.nan if threshold is None else threshold, np.float32),
    }  # fmt: skip
    if heatmap_box is not None:
        arrays["heatmap_box"] = np.asarray(heatmap_box, np.float32)
    save_npz_atomic(path, arrays, compressed=True)
    return top


def save_risk(path: Path, *, slice_risk: np.ndarray, threshold: float | None, flagged: np.ndarray) -> None:
    """Add the segmentation's failure risk per slice (the second signal) to an evidence file, atomically."""
    with np.load(path) as ev:
        arrays = {k: ev[k] for k in ev.files}
    arrays.update(slice_risk=slice_risk.astype(np.float32), risk_threshold=np.float32(np.nan if threshold is None
                  else threshold), risk_flagged=np.asarray(flagged, dtype=bool))  # fmt: skip
    save_npz_atomic(path, arrays, compressed=True)


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
    if "slice_risk" in ev.files:  # the second signal on its own axis: the segmentation's failure risk
        twin = axes[0].twinx()
        twin.plot(ev["positions_mm"], ev["slice_risk"], lw=1, color="tab:green")
        if np.isfinite(ev["risk_threshold"]):
            twin.axhline(float(ev["risk_threshold"]), color="tab:green", ls=":", lw=1)
        twin.set_ylabel("segmentation failure risk", color="tab:green")
    for ax, index, h in zip(axes[1:], top, heat, strict=True):
        ax.imshow(h, cmap="inferno")
        ax.set(title=f"slice {int(index)}", xticks=[], yticks=[])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


CT_WINDOW = (50.0, 400.0)  # level, width (HU): the abdominal soft-tissue window radiologists read the liver in


def heatmap_box(ev: np.lib.npyio.NpzFile, rows: int, columns: int) -> tuple[tuple[float, float, float, float], bool]:
    """Where the heat-maps lie on the slice, (y0, y1, x0, x1) in slice pixels, and whether the evidence file
    recorded it (``heatmap_box``, written by the worker); else the whole slice (marked approximate)."""
    if "heatmap_box" in ev.files:
        y0, y1, x0, x1 = (float(v) for v in ev["heatmap_box"])
        return (y0, y1, x0, x1), True
    return (0.0, float(rows), 0.0, float(columns)), False


def render_overlay(npz_path: Path, rank: int, hu: np.ndarray) -> bytes:
    """The ``rank``-th top slice's heat-map over the windowed CT slice ``hu`` (rows, columns), at the slice's own
    size, with a colour bar: one PNG pixel per CT pixel."""
    plt = pyplot()
    ev = np.load(npz_path)
    heat = ev["heatmaps"][rank].astype(np.float32)
    rows, columns = hu.shape
    (y0, y1, x0, x1), exact = heatmap_box(ev, rows, columns)
    level, width = CT_WINDOW
    dpi, bar_px, title_px = 100, 110, 22
    fig = plt.figure(figsize=((columns + bar_px) / dpi, (rows + title_px) / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, columns / (columns + bar_px), rows / (rows + title_px)))
    ax.imshow(hu, cmap="gray", vmin=level - width / 2, vmax=level + width / 2, interpolation="nearest")
    top = float(np.nanmax(heat)) if np.isfinite(heat).any() else 1.0
    shown = np.ma.masked_less_equal(heat, 0.25 * top if top > 0 else 0.0)  # faint heat leaves the CT readable
    im = ax.imshow(shown, cmap="inferno", alpha=0.55, vmin=0.0, vmax=top or 1.0, interpolation="bilinear",
                   extent=(x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5))  # fmt: skip
    ax.set_xlim(-0.5, columns - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_axis_off()
    cax = fig.add_axes((columns / (columns + bar_px) + 0.02, 0.08, 0.18 * bar_px / (columns + bar_px), 0.75))
    fig.colorbar(im, cax=cax).set_label("anomaly heat", fontsize=8)
    cax.tick_params(labelsize=7)
    where = "" if exact else " (position approximate)"
    fig.text(0.01, 1 - 0.8 * title_px / (rows + title_px), f"slice {int(ev['top_slices'][rank])}, "
             f"W{width:.0f} L{level:.0f}{where}", fontsize=9, va="center")  # fmt: skip
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()

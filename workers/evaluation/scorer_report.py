"""REPORT.md and PNG figures of ``scorer_eval``: numbers and plots of numbers (heatmaps.png, which shows
the model's view of non-commercial CT, is git-ignored)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.core.plotting import pyplot
from models.anomalies import diameter_bin
from models.metrics import auroc_of
from workers.evaluation.cases import Case, EvalConfig, SeriesView, ViewedEdits, indices_of


def plot_roc(raws: dict[str, dict[str, Any]], donor: Case, cfg: EvalConfig, path: Path) -> None:
    from sklearn.metrics import roc_curve

    plt = pyplot()
    panels = [
        ("lesion", "lesion pairs (all)"),
        ("lesion>=15", "lesion pairs >= 15 mm"),
        ("lesion-unmatched", "lesion, unmatched, unseen host"),
        ("blob@" + donor.name, "blob (unseen host)"),
        ("warp@" + donor.name, "warp (unseen host)"),
        ("metal@" + donor.name, "metal (unseen host)"),
        ("split", "real split ircadb-01"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(16, 8))
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        for label, raw in raws.items():
            if key == "split":
                s = raw["full"][donor.name][0]
                neg, pos = s[indices_of(cfg.heldout_normal)], s[indices_of(cfg.donor_tumour)]
            elif key == "lesion>=15":
                if "lesion" not in raw:
                    continue
                sel = np.array([b == f">={cfg.diameter_edges_mm[-1]:g}" for b in raw["lesion_bins"]])
                neg, pos = raw["lesion"][0][sel], raw["lesion"][1][sel]
            elif key in raw:
                neg, pos = raw[key][0], raw[key][1]
            else:
                continue
            if len(neg) and len(pos):
                fpr, tpr, _ = roc_curve(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos])
                ax.plot(fpr, tpr, label=f"{label} ({auroc_of(neg, pos):.2f})")
        if key == "split":
            p = donor.body.position_mm
            neg, pos = p[indices_of(cfg.heldout_normal)], p[indices_of(cfg.donor_tumour)]
            fpr, tpr, _ = roc_curve(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos])
            ax.plot(fpr, tpr, "k--", label=f"position only ({auroc_of(neg, pos):.2f})")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(title=title, xlabel="false-positive rate", ylabel="true-positive rate")
        ax.legend(fontsize=7, loc="lower right")
    axes.flat[-1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_profile(raws: dict[str, dict[str, Any]], donor: Case, cfg: EvalConfig, path: Path) -> None:
    plt = pyplot()
    n = len(raws) + 1
    fig, axes = plt.subplots(n, 1, figsize=(11, 2.2 * n), sharex=True)
    z = np.arange(donor.hu.shape[0])
    tumour_slices = donor.tumour.any(axis=(1, 2))
    for ax in axes:
        for k in np.flatnonzero(tumour_slices):
            ax.axvspan(k - 0.5, k + 0.5, color="tab:red", alpha=0.12, lw=0)
        for lo, hi in cfg.heldout_normal:
            ax.axvspan(lo - 0.5, hi + 0.5, color="tab:green", alpha=0.07, lw=0)
    for ax, (label, raw) in zip(axes, raws.items(), strict=False):
        ax.plot(z, raw["full"][donor.name][0], ".-", ms=3, label=f"{label} slice score")
        ax.axhline(raw["threshold"], color="k", ls="--", lw=1, label="calibrated threshold")
        ax.legend(fontsize=7, loc="upper left")
    axes[-1].plot(z, donor.body.position_mm, color="tab:purple", label="position from the lung base (mm)")
    axes[-1].legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel(f"{donor.name} slice index (caudal -> cranial); red: tumour voxels, green: held-out normal")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_grid(
    raws: dict[str, dict[str, Any]],
    tests: dict[str, ViewedEdits],
    views: dict[str, SeriesView],
    donor: Case,
    path: Path,
) -> None:
    """Rows: example slices (real tumours, lesion pairs, synthetic); columns: input, each model's heat-map."""
    plt = pyplot()
    rows: list[tuple[str, np.ndarray, np.ndarray | None, dict[str, np.ndarray]]] = []
    view = views[donor.name]
    tumour_idx = np.flatnonzero(donor.tumour.sum(axis=(1, 2)))
    areas = donor.tumour.sum(axis=(1, 2))
    picked: list[int] = []
    for t in sorted(tumour_idx.tolist(), key=lambda i: -areas[i]):
        if len(picked) < 3 and all(abs(t - p) >= 12 for p in picked):
            picked.append(t)
    for k in picked:
        x, _ = view.images([int(k)])
        rows.append(
            (
                f"{donor.name} #{k} real tumour",
                x[0, 1].numpy(),
                view.mask_fraction(donor.tumour[k][None])[0],
                {m: r["full"][donor.name][1][k] for m, r in raws.items()},
            )
        )
    for test in ("lesion", "blob@" + donor.name, "warp@" + donor.name, "metal@" + donor.name):
        ve = tests.get(test)
        if ve is None or not ve.edits:
            continue
        pick = int(
            np.argmax(
                [
                    e.info.get("diameter_mm", 0.0) + (ve.region[i].sum() if test != "lesion" else 0)
                    for i, e in enumerate(ve.edits)
                ]
            )
        )
        e = ve.edits[pick]
        if test == "lesion":
            x, _ = views[e.case].images([e.index])
            rows.append(
                (
                    f"{e.case} #{e.index} unmodified",
                    x[0, 1].numpy(),
                    None,
                    {m: r["full"][e.case][1][e.index] for m, r in raws.items()},
                )
            )
        rows.append(
            (
                f"{e.case} #{e.index} + {test.split('@')[0]}",
                ve.images[pick, 1].numpy(),
                ve.region[pick],
                {m: r[test][2][pick] for m, r in raws.items() if test in r},
            )
        )
    cols = 1 + len(raws)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.3 * cols, 2.3 * len(rows)), squeeze=False)
    for r, (title, image, region, heats) in enumerate(rows):
        axes[r, 0].imshow(image, cmap="gray", vmin=-1, vmax=1)
        if region is not None:
            axes[r, 0].contour(region, levels=[0.5], colors="r", linewidths=0.8)
        axes[r, 0].set_title(title, fontsize=7)
        for c, label in enumerate(raws, start=1):
            if label in heats:
                axes[r, c].imshow(heats[label], cmap="inferno")
                if region is not None:
                    axes[r, c].contour(region, levels=[0.5], colors="c", linewidths=0.8)
            axes[r, c].set_title(f"{label} heat-map", fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------- report


def _f(v: Any, digits: int = 2) -> str:
    return "n/a" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def _ci(v: list[float] | None) -> str:
    return "n/a" if not v else f"[{v[0]:.2f}, {v[1]:.2f}]"


def report_markdown(metrics: dict[str, Any], cfg: EvalConfig, runtime_s: float, reading: str = "") -> str:
    models = metrics["models"]
    bins = [diameter_bin(d, cfg.diameter_edges_mm) for d in (0.0, *cfg.diameter_edges_mm)]
    lines = [
        "# Scorer evaluation on real CT (issue #5, part 6)",
        "",
        f"Generated by `python -m workers.evaluation.scorer_eval` in {runtime_s:.0f} s. "
        "Research evaluation on non-commercial data (3D-IRCADb-01): numbers and plots of numbers only.",
        "",
        "## Models and training state",
        "",
        "| model | detector | conditional | GAN steps (planned) | encoder/AE steps (planned) | phase "
        "| threshold from |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, m in models.items():
        t = m["training"]
        lines.append(
            f"| {label} | {t['detector']} | {t['conditional']} | {t['gan_step']} ({t['gan_steps_planned']}) | "
            f"{t['encoder_step']} ({t['encoder_steps_planned']}) | {t['phase']} | {m['fpr']['threshold_source']} |"
        )
    lines += [
        f"\n`{label}`: the weights of `{m['training']['ablation_of']}` scored with kappa = 0 (the pixel residual "
        "alone, no critic-feature term; `--kappa-ablation`), its threshold calibrated in this evaluation."
        for label, m in models.items()
        if m["training"].get("ablation_of")
    ]
    lines += [
        "",
        "## Results",
        "",
        "AUROC: modified slices (positive) against the same slices unmodified (negative); "
        "'rose': share of pairs whose score went up. Chance = 0.50.",
        "",
        "| model | lesion pairs (n) | AUROC all | "
        + " | ".join(f"AUROC {b} (n)" for b in bins)
        + " | rose all | 95 % CI by tumour: AUROC; rose | pixel AUROC (transplants) |",
        "|---" * (6 + len(bins)) + "|",
    ]
    for label, m in models.items():
        t = m["tests"].get("lesion", {})
        by = t.get("by_diameter", {})
        cells = [f"{_f(by.get(b, {}).get('auroc'))} ({by.get(b, {}).get('n', 0)})" for b in bins]
        lines.append(
            f"| {label} | {t.get('n', 0)} | {_f(t.get('auroc'))} | "
            + " | ".join(cells)
            + f" | {_f(t.get('rose'))} | {_ci(t.get('auroc_ci95'))}; {_ci(t.get('rose_ci95'))}"
            + f" | {_f(t.get('pixel_auroc'))} |"
        )
    synth = sorted({k for m in models.values() for k in m["tests"] if "@" in k} | {"lesion-unmatched"})
    lines += [
        "",
        "| model | " + " | ".join(f"{k} AUROC (n) / rose" for k in synth) + " |",
        "|---" * (1 + len(synth)) + "|",
    ]
    for label, m in models.items():
        cells = [
            "{} ({}) / {}".format(
                _f(m["tests"].get(k, {}).get("auroc")),
                m["tests"].get(k, {}).get("n", 0),
                _f(m["tests"].get(k, {}).get("rose")),
            )
            for k in synth
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| model | pixel AUROC, real tumours in liver | slice AUROC (normal 0-45,126-128 vs tumour 48-123) | "
        "position only | slice AUROC, liver slices (27-45 vs 48-123) | position only | threshold "
        "| FPR held-out (by construction) (n) | "
        "FPR cross-fitted | tumour slices flagged | unmodified lesion-pair slices flagged |",
        "|---" * 11 + "|",
    ]
    for label, m in models.items():
        s, f = m["slice_split"], m["fpr"]
        lines.append(
            f"| {label} | {_f(m['pixel_auroc_real_tumours'])} | {_f(s['auroc'])} | {_f(s['auroc_position_only'])} | "
            f"{_f(s['auroc_liver_slices'])} | {_f(s['auroc_liver_slices_position_only'])} | {f['threshold']:.4g} | "
            f"{_f(f['fpr_heldout'], 3)} ({f['n_heldout']}) | {_f(f['fpr_crossfit'], 3)} | "
            f"{_f(f['flagged_tumour_slices'])} | {_f(f.get('flagged_lesion_pairs_unmodified'))} |"
        )
    diag = ["lesion", "lesion-unmatched", *[k for k in synth if k != "lesion-unmatched"]]
    lines += [
        "",
        "Diagnostic only (not the models' score): the same pairs scored by the mean of the top 1 % of each "
        "heat-map's pixels instead of its mean, to see whether the map holds a signal that the mean dilutes.",
        "",
        "| model | " + " | ".join(f"{k} AUROC / rose" for k in diag) + " | split AUROC |",
        "|---" * (2 + len(diag)) + "|",
    ]
    for label, m in models.items():
        cells = [
            f"{_f(m['tests'].get(k, {}).get('diagnostic_top1pct', {}).get('auroc'))} / "
            f"{_f(m['tests'].get(k, {}).get('diagnostic_top1pct', {}).get('rose'))}"
            for k in diag
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_f(m['slice_split']['auroc_diagnostic_top1pct'])} |")
    lines += [
        "",
        "Figures: `roc.png` (ROC per test), `z_profile.png` (slice score along z, ircadb-01), "
        "`heatmaps.png` (inputs and heat-maps; it shows 3D-IRCADb CT, CC BY-NC-ND, so it stays out of the "
        "repository: regenerate it with `gatekeeper evaluate-scorer`).",
        "",
    ]
    lines += comparison_lines(metrics, cfg)
    lines += ["## Data and methods", "", *METHODS.format(**{**cfg.__dict__, **metrics["data"]}).splitlines()]
    lines += ["", "## Goals (context, not claims)", ""]
    lines += goal_lines(metrics, cfg)
    if reading:
        lines += ["", "## Reading (hand-written for this run: READING.md beside this report)", "", reading.strip()]
    return "\n".join(lines) + "\n"


def comparison_lines(metrics: dict[str, Any], cfg: EvalConfig) -> list[str]:
    if not metrics.get("comparisons"):
        return []
    top = f">={cfg.diameter_edges_mm[-1]:g}"
    lines = [
        "Paired comparisons on the position-matched lesion pairs: AUROC of a minus AUROC of b on the very same "
        "pairs, 95 % interval from resampling whole donor tumours (the same resample for both models). An "
        "interval that contains 0 shows no difference.",
        "",
        f"| a | b | difference, all pairs (n; tumours) | 95 % CI | difference, lesions {top} mm (n; tumours) "
        "| 95 % CI |",
        "|---|---|---|---|---|---|",
    ]
    for c in metrics["comparisons"]:
        cells = []
        for key in ("all", top):
            d = c.get(key)
            cells += ["-", "-"] if d is None else [
                f"{_f(d['difference'])} ({d['n_pairs']}; {d['n_groups']})", _ci(d["ci95"])
            ]  # fmt: skip
        lines.append(f"| {c['a']} | {c['b']} | " + " | ".join(cells) + " |")
    return lines + [""]


def goal_lines(metrics: dict[str, Any], cfg: EvalConfig) -> list[str]:
    top = f">={cfg.diameter_edges_mm[-1]:g}"
    out = []
    for label, m in metrics["models"].items():
        big = m["tests"].get("lesion", {}).get("by_diameter", {}).get(top, {}).get("auroc")
        pix = m["pixel_auroc_real_tumours"]
        out.append(
            f"- {label}: position-matched AUROC for lesions {top} mm = {_f(big)} (goal >= 0.95: "
            f"{'met' if big is not None and big >= 0.95 else 'not met'}); pixel AUROC = {_f(pix)} (goal >= 0.90: "
            f"{'met' if pix is not None and pix >= 0.90 else 'not met'})."
        )
    for c in metrics.get("comparisons", []):
        a, b = metrics["models"][c["a"]]["training"], metrics["models"][c["b"]]["training"]
        if a["detector"] == b["detector"] == "fanogan" and a["conditional"] and not b["conditional"]:
            ok = c["all"]["ci95"] is not None and c["all"]["ci95"][0] > 0
            out.append(
                f"- conditioning ({c['a']}) vs none ({c['b']}) on all lesion pairs: AUROC difference "
                f"{_f(c['all']['difference'])} {_ci(c['all']['ci95'])} (goal: better than none, "
                f"{'met' if ok else 'not shown'}: the interval must lie above 0)."
            )
    return out


METHODS = """- Cases: donor `{donor}` (tumour mask `masks/tumor.nii.gz`, liver `masks/liver.nii.gz`, liver-only = `labels.nii.gz` == 1); recipient `{recipient}`. Both 1.6 mm slices; pixel spacing {donor_spacing} and {recipient_spacing} mm. Positions: `find_body_position` (signed mm from the lung base) on each whole series; lung base {donor_landmark_mm:.1f} mm above the first slice of `{donor}`, {recipient_landmark_mm:.1f} mm above that of `{recipient}`.
- Preprocessing: each model's own `PreprocessConfig` from its checkpoint through `models.transforms` (intensity shift and view centre from the unmodified series; a start-up check found max |difference| {parity:.2e} to `preprocess_series`). Conditioned models get each slice's normalised position.
- **Position-matched lesion test**: every cross-section (>= {min_lesion_diameter_mm} mm equivalent diameter) of every 3-D tumour component of `{donor}` slices {donor_tumour} is a donor; recipients are `{recipient}` normal-liver slices {recipient_normal} whose position from the lung base is within +-{position_tolerance_mm} mm of the donor slice's. The tumour is cut along its mask on 5 slices (centre +-2, covering the +-3 mm neighbour channels, so **neighbour channels are modified consistently**: donor slice j+d goes to recipient slice k+d), resampled in-plane by the pixel-spacing ratio, re-levelled to keep its contrast to its own liver (HU - donor liver median on the centre slice + recipient liver median on the centre slice), and blended with alpha = 1 on the mask, falling linearly to 0 over {feather_mm} mm outside it (distance transform). The whole alpha support must lie in the recipient's liver mask on the centre slice (a random valid place is drawn); on neighbour slices alpha is cut to that slice's liver. Diameter = equivalent diameter sqrt(4A/pi) of the transplanted centre cross-section. Pairs are drawn at random with a quota per diameter bin. Each pair: score of the modified slice vs the same slice unmodified.
- Caveat on recipients: the only normal liver at the donor's tumour levels in another patient is `{recipient}` slices 0-75, which are **training slices** of every model. The opposite direction (`{recipient}` tumours, +7 to +63 mm, into `{donor}`'s held-out normal liver, -116 to -88 mm) cannot be position-matched; it is reported as `lesion-unmatched` (same method, no position constraint, recipient never seen).
- **Synthetic anomalies** (MOOD-style), centre placed at random so the whole disc lies in the host's liver on the centre slice, the same 2-D edit applied to the 5 slab slices: blob = Gaussian, sigma {blob_sigma_mm} mm, truncated at 3 sigma, amplitude +-{blob_amplitude_hu} HU (alternating sign); warp = random smooth displacement (Gaussian-filtered noise, sigma = R/3, max {warp_shift_mm} mm) times (1 - r^2/R^2)^2 in a disc R = {warp_radius_mm} mm, bilinear; metal = disc radius {metal_radius_mm} mm at 3000 HU with a 1-pixel linear edge, no streaks. Hosts: `{donor}` held-out normal liver slices {donor_normal_liver} (unseen patient, {synthetic_per_slice} per slice) and `{recipient}` normal slices (training slices, 2 per slice on every 4th slice).
- **Pixel AUROC**: heat-maps of `{donor}` slices {donor_tumour} against the tumour and liver masks mapped into the model's view with the same resampling (`resample_inplane`, same centre); pixels with liver fraction >= 0.5 inside the field of view; tumour = tumour fraction >= 0.5; pooled over slices ({n_pix_tumour} tumour and {n_pix_liver} liver pixels at the first model's view).
- **Slice AUROC**: held-out normal `{donor}` {heldout_normal} vs tumour slices {donor_tumour}; beside it the AUROC of the slice's position alone (mm from the lung base as the score), and the same among liver slices only.
- **FPR**: threshold = checkpoint calibration when present, else calibrated here (same `calibrate_threshold`, target {target_fpr}) on the held-out normal slices. The FPR on those same slices is <= target by construction; the cross-fitted FPR calibrates on alternate slices and measures on the others (both ways, averaged).
- **Liver-restricted models** (checkpoint metadata `roi`, `workers/inference/liver_roi.py`): the slice score is the model's own reduction taken only over the liver the segmenter (`--segmenter`, the one the threshold was calibrated with) predicts on the unmodified series, holes filled slice by slice, eroded by the stored margin; heat-maps (pixel AUROC, figures) stay whole. Both sides of a pair are scored in the region of the unmodified slice (the worker would segment the modified slice; `evaluate-gate` does). A start-up check compares the donor's scores with the worker's `score_volume`. Slices without predicted liver score 0; the FPR columns count only held-out slices with liver in the region."""  # noqa: E501

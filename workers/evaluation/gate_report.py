"""REPORT.md and PNG plots of ``gate_eval``: numbers and curves only, no patient image."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.core.plotting import pyplot
from workers.evaluation.cases import SLAB
from workers.evaluation.gate_metrics import failed_slices, risk_coverage

if TYPE_CHECKING:
    from workers.evaluation.gate_metrics import GateConfig, SeriesRun


def _f(v: Any, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def _ci(v: list[float] | None) -> str:
    return "" if not v else f" [{v[0]:.2f}, {v[1]:.2f}]"


# ---------------------------------------------------------------- figures


def _curve(ax: Any, order_key: np.ndarray, failed: np.ndarray, label: str, **kw: Any) -> None:
    c = risk_coverage(order_key, failed)
    ax.step(np.r_[0.0, c["coverage"]], np.r_[c["risk"][:1], c["risk"]], where="pre", label=label, **kw)


def plot_risk_coverage(runs: dict[str, SeriesRun], pairs: dict, metrics: dict, cfg: GateConfig, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    run = runs[cfg.heldout]
    liver = run.liver
    failed = failed_slices(run.dice, liver, cfg.failure_dice)[liver]
    s = run.scores[liver]
    ax = axes[0]
    _curve(ax, s, failed, "anomaly score", color="tab:blue")
    pos = run.position_mm[liver]
    a = metrics["slices"][cfg.heldout]["auroc_failure_position_only"]
    # risk_coverage accepts low keys first: when failures lie cranial (AUROC > 0.5), accept caudal slices first
    key = pos if a is None or a >= 0.5 else -pos
    _curve(ax, key, failed, "slice position only (better direction)", color="tab:purple")
    _curve(ax, -np.nan_to_num(run.dice[liver]), failed, "oracle (true Dice)", color="grey", ls=":")
    ax.axhline(np.mean(failed), color="k", lw=0.8, ls="--", label="accept all")
    at = metrics["slices"][cfg.heldout]["at_threshold"]
    ax.plot([at["coverage"]], [at["accepted"]["failure_rate"] or 0.0], "o", color="tab:red", label="stored threshold")
    ax.axhline(cfg.goal_risk, color="tab:green", lw=0.8, label=f"goal: risk <= {cfg.goal_risk:.0%}")
    ax.set(title=f"{cfg.heldout}: liver slices (n={liver.sum()})", xlabel="coverage (share accepted)",
           ylabel=f"risk (failure rate among accepted; Dice < {cfg.failure_dice})", ylim=(-0.02, 1.02))  # fmt: skip
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[1]
    base_fail, mod_fail = pairs["base_dice"] < cfg.failure_dice, pairs["mod_dice"] < cfg.failure_dice
    scores = np.r_[pairs["base_score"], pairs["mod_score"]]
    fails = np.r_[base_fail, mod_fail]
    _curve(ax, scores, fails, "anomaly score", color="tab:blue")
    ax.axhline(np.mean(fails) if len(fails) else 0, color="k", lw=0.8, ls="--", label="accept all")
    ax.axhline(cfg.goal_risk, color="tab:green", lw=0.8, label=f"goal: risk <= {cfg.goal_risk:.0%}")
    ax.set(title=f"position-matched pairs, both slices of each pair (n={len(scores)})",
           xlabel="coverage (share accepted)", ylabel="risk", ylim=(-0.02, 1.02))  # fmt: skip
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_score_dice(runs: dict[str, SeriesRun], pairs: dict, threshold: float, cfg: GateConfig, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, (name, run) in zip(axes, runs.items(), strict=False):
        liver = run.liver
        lesion = liver & run.lesion
        for sel, label, colour in ((liver & ~run.lesion, "liver, no lesion", "tab:blue"),
                                   (lesion, "liver with tumour / cyst", "tab:red")):  # fmt: skip
            ax.scatter(run.scores[sel], np.nan_to_num(run.dice[sel]), s=10, color=colour, label=label)
        ax.axvline(threshold, color="k", ls="--", lw=0.8, label="slice threshold")
        ax.axhline(cfg.failure_dice, color="tab:green", lw=0.8, label=f"Dice {cfg.failure_dice}")
        note = " (training data)" if name == cfg.same_patient else ""
        ax.set(
            title=f"{name}{note}: liver slices", xlabel="slice anomaly score", ylabel="slice Dice", ylim=(-0.02, 1.02)
        )
        ax.legend(fontsize=7, loc="lower left")
    ax = axes[2]
    bins = pairs["bin"]
    for b in sorted(set(bins)):
        sel = bins == b
        ax.scatter(pairs["mod_score"][sel] - pairs["base_score"][sel], pairs["mod_dice"][sel] - pairs["base_dice"][sel],
                   s=10, label=f"lesion {b} mm")  # fmt: skip
    ax.axhline(-cfg.drop_margin, color="tab:green", lw=0.8, label=f"Dice drop {cfg.drop_margin}")
    ax.axvline(0, color="grey", lw=0.5)
    ax.set(title="position-matched pairs", xlabel="score change (with lesion - without)",
           ylabel="Dice change (with lesion - without)")  # fmt: skip
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _roc(ax: Any, scores: np.ndarray, positive: np.ndarray, label: str, **kw: Any) -> None:
    from sklearn.metrics import roc_auc_score, roc_curve

    if 0 < positive.sum() < len(positive) and np.all(np.isfinite(scores)):
        fpr, tpr, _ = roc_curve(positive, scores)
        ax.plot(fpr, tpr, label=f"{label} ({roc_auc_score(positive, scores):.2f})", **kw)


def plot_roc(runs: dict[str, SeriesRun], pairs: dict, cfg: GateConfig, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    run = runs[cfg.heldout]
    liver = run.liver
    failed = failed_slices(run.dice, liver, cfg.failure_dice)[liver]
    ax = axes[0]
    _roc(ax, run.scores[liver], failed, "anomaly score", color="tab:blue")
    _roc(ax, run.position_mm[liver], failed, "position (cranial = positive)", color="tab:purple", ls="--")
    _roc(ax, -run.liver_area_cm2[liver], failed, "small liver area (diagnostic)", color="grey", ls=":")
    ax.set(title=f"{cfg.heldout}: failure (Dice < {cfg.failure_dice}) on liver slices, n={failed.sum()}/{liver.sum()}")
    ax = axes[1]
    base_fail = pairs["base_dice"] < cfg.failure_dice
    drop = pairs["base_dice"] - pairs["mod_dice"]
    lesion_fail = ((pairs["mod_dice"] < cfg.failure_dice) & ~base_fail) | (drop >= cfg.drop_margin)
    _roc(ax, pairs["mod_score"] - pairs["base_score"], lesion_fail, "score change", color="tab:blue")
    _roc(ax, pairs["mod_score"], lesion_fail, "score with lesion", color="tab:orange")
    if not 0 < lesion_fail.sum() < len(lesion_fail):
        ax.text(0.5, 0.5, f"{int(lesion_fail.sum())} of {len(lesion_fail)} pairs failed:\nno ROC", ha="center")
    ax.set(title=f"pairs: lesion-induced failure, n={int(lesion_fail.sum())}/{len(lesion_fail)}")
    for ax in axes:
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlabel="false-positive rate", ylabel="true-positive rate")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------- markdown


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def goal_rows(metrics: dict, cfg: GateConfig) -> list[str]:
    h = metrics["slices"][cfg.heldout]
    at, normal, p = h["at_threshold"], h["normal"], metrics["pairs"]
    risk = at["accepted"]["failure_rate"]
    rows = [
        ("failures among auto-accepted liver slices", f"<= {cfg.goal_risk:.0%}",
         f"{_pct(risk)} ({at['accepted']['failures']}/{at['accepted']['n']})",
         None if risk is None else risk <= cfg.goal_risk),
        ("normal liver slices accepted", f">= {cfg.goal_normal_accepted:.0%}",
         f"{_pct(normal['accepted'])} of {normal['n']} ({normal['n_in_calibration']} of them calibration slices)",
         None if normal["accepted"] is None else normal["accepted"] >= cfg.goal_normal_accepted),
        ("both at once (the operating point)", "both", f"risk {_pct(risk)}, normal accepted {_pct(normal['accepted'])}",
         None if risk is None or normal["accepted"] is None
         else risk <= cfg.goal_risk and normal["accepted"] >= cfg.goal_normal_accepted),
        ("AUROC of the score for failure, held-out slices", f">= {cfg.goal_auroc}",
         f"{_f(h['auroc_failure'])}{_ci(h.get('auroc_failure_ci95'))}; "
         f"position alone {_f(h['auroc_failure_position_only'])}",
         None if h["auroc_failure"] is None else h["auroc_failure"] >= cfg.goal_auroc),
        ("AUROC of the score change for lesion-induced failure, pairs", f">= {cfg.goal_auroc}",
         f"{_f(p['auroc_score_change_for_lesion_failure'])}{_ci(p['auroc_score_change_ci95'])} "
         f"({p['lesion_failures']} failing pairs of {p['n_pairs']})",
         None if p["auroc_score_change_for_lesion_failure"] is None
         else p["auroc_score_change_for_lesion_failure"] >= cfg.goal_auroc),
    ]  # fmt: skip
    out = ["| goal | target | measured | |", "|---|---|---|---|"]
    out += [f"| {g} | {t} | {m} | {_met(ok)} |" for g, t, m, ok in rows]
    return out


def slice_rows(metrics: dict, cfg: GateConfig) -> list[str]:
    out = [
        "| series | liver slices | failures | AUROC score (95 % CI, blocks of "
        f"{cfg.block} slices) | AUROC position (either direction) | AUROC small liver area (diagnostic) | AURC "
        f"| coverage at risk <= {cfg.goal_risk:.0%} (threshold) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in metrics["slices"].items():
        g = m["at_goal_risk"]
        tag = " (training data)" if name == cfg.same_patient else ""
        out.append(
            f"| {name}{tag} | {m['n_liver_slices']} | {m['n_failures']} | {_f(m['auroc_failure'])}"
            f"{_ci(m.get('auroc_failure_ci95'))} | {_f(m['auroc_failure_position_only'])} "
            f"({_f(m['auroc_failure_position_either_direction'])}) | {_f(m['auroc_failure_small_liver_area'])} | "
            f"{_f(m['aurc'], 3)} | {_pct(g['coverage'])} ({_f(g['threshold'], 4)}) |"
        )
    out += [
        "",
        "At the stored slice threshold (accepted: score <= threshold):",
        "",
        "| series | coverage | accepted: n, Dice mean / median, failures | rejected: n, Dice mean / median, failures "
        "| normal liver slices accepted | slices with a lesion accepted | predicted liver pixels on slices without |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in metrics["slices"].items():
        at = m["at_threshold"]
        acc, rej = at["accepted"], at["rejected"]
        out.append(
            f"| {name} | {_pct(at['coverage'])} | {acc['n']}, {_f(acc['dice_mean'], 3)} / {_f(acc['dice_median'], 3)}"
            f", {acc['failures']} | {rej['n']}, {_f(rej['dice_mean'], 3)} / {_f(rej['dice_median'], 3)}, "
            f"{rej['failures']} | {_pct(m['normal']['accepted'])} of {m['normal']['n']} | "
            f"{_pct(m['lesion_slices']['accepted'])} of {m['lesion_slices']['n']} | "
            f"{m['no_liver_slices']['predicted_liver_pixels']} |"
        )
    return out


def series_rows(metrics: dict, cfg: GateConfig) -> list[str]:
    out = ["| series | series score | series threshold | decision | series Dice | mean slice Dice (liver slices) |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    for name, m in metrics["series"].items():
        tag = " (training data)" if name == cfg.same_patient else ""
        out.append(
            f"| {name}{tag} | {_f(m['series_score'], 4)} | {_f(m['series_threshold'], 4)} | {m['decision']} | "
            f"{_f(m['series_dice'], 3)} | {_f(m['dice_per_slice_mean'], 3)} |"
        )
    return out


def pair_rows(metrics: dict, cfg: GateConfig) -> list[str]:
    p, g = metrics["pairs"], metrics["pairs"]["gate"]
    out = [
        "| pairs (tumours) | failing without lesion | failing with lesion | lesion-induced failures | "
        "Dice median without / with | Dice drop median / p95 / max | score rose | AUROC score change | "
        "AUROC score with lesion | AUROC score, both slices pooled |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {p['n_pairs']} ({p['n_tumours']}) | {p['base_failures']} | {p['mod_failures']} | {p['lesion_failures']} | "
        f"{_f(p['dice_base_median'], 3)} / {_f(p['dice_mod_median'], 3)} | {_f(p['dice_drop_median'], 3)} / "
        f"{_f(p['dice_drop_p95'], 3)} / {_f(p['dice_drop_max'], 3)} | {_pct(p['score_rose'])} | "
        f"{_f(p['auroc_score_change_for_lesion_failure'])}{_ci(p['auroc_score_change_ci95'])} | "
        f"{_f(p['auroc_mod_score_for_lesion_failure'])} | {_f(p['auroc_score_for_failure_pooled'])} |",
        "",
        f"Gate at the stored slice threshold: slices with a lesion accepted {_pct(g['mod_accepted'])}, the same "
        f"slices without {_pct(g['base_accepted'])}; failures among accepted slices with a lesion "
        f"{g['failures_among_accepted_mod']} ({_pct(g['risk_accepted_mod'])}); lesion-induced failures rejected "
        f"{_pct(g['lesion_failures_rejected'])}.",
        "",
        "| lesion diameter (mm) | pairs | lesion-induced failures | Dice drop median / max | AUROC score change |",
        "|---|---|---|---|---|",
    ]
    for b, m in p["by_diameter"].items():
        out.append(f"| {b} | {m['n']} | {m['lesion_failures']} | {_f(m['dice_drop_median'], 3)} / "
                   f"{_f(m['dice_drop_max'], 3)} | {_f(m['auroc_score_change'])} |")  # fmt: skip
    return out


def findings(metrics: dict, cfg: GateConfig) -> list[str]:
    """Plain statements that follow from the numbers (no judgement beyond them)."""
    h, p = metrics["slices"][cfg.heldout], metrics["pairs"]
    out = []
    if p["lesion_failures"] == 0:
        out.append(
            f"- No transplanted lesion made the segmenter fail (largest Dice drop {_f(p['dice_drop_max'], 3)}, "
            f"margin {cfg.drop_margin}): on these pairs there is no failure to predict, so the gate **cannot be "
            "measured** on them. That is itself the finding: in this test, lesions of these sizes do not break "
            "the segmenter, so a gate that rejects them protects nothing here."
        )
    pa, sa, la = h["auroc_failure_position_only"], h["auroc_failure"], h["auroc_failure_small_liver_area"]
    if pa is not None and sa is not None:
        out.append(
            f"- On {cfg.heldout} the score's failure AUROC is {sa:.2f}, slice position alone reaches "
            f"{max(pa, 1 - pa):.2f} (either direction) and the reference liver area {_f(la)} (not available to a "
            "gate)."
            + (
                " Position or area predicts failure at least as well as the score: the failures follow "
                "anatomy (the liver's ends), and the score's AUROC may be borrowed from it."
                if max(pa, 1 - pa, la or 0) >= sa
                else ""
            )
        )
    g = h.get("at_normal_goal")
    if g:
        out.append(
            f"- Any threshold that accepts {cfg.goal_normal_accepted:.0%} of {cfg.heldout}'s normal liver slices "
            f"(score <= {g['threshold']:.4g}) accepts {_pct(g['coverage'])} of its liver slices with "
            f"{_pct(g['accepted']['failure_rate'])} failures among them ({g['accepted']['failures']}/"
            f"{g['accepted']['n']}): the goals' trade-off independent of the stored calibration."
        )
    if h["normal"]["n"] and h["normal"]["n_in_calibration"] == h["normal"]["n"]:
        out.append(
            f"- Every normal liver slice of {cfg.heldout} is also a calibration slice of the threshold, so its "
            f"acceptance ({_pct(h['normal']['accepted'])}) is close to 1 - target FPR by construction, not a "
            "measurement on unseen normal liver. No unseen normal liver is in the data."
        )
    return out


METHODS = """- **Models as the worker runs them**: the scorer through `score_volume` (same preprocessing and body position as training; {fast} path), the segmenter through `segment_mask` (2.5D input, {context} neighbour slice(s) each side at {neighbour_mm} mm, mask back on the series grid, threshold {seg_threshold}). The operating point is the checkpoint's calibration: slice threshold {threshold:.5g} (target FPR {target_fpr}) and series threshold {series_threshold}.
- **Reference and failure**: reference = `masks/liver.nii.gz`, which in 3D-IRCADb includes tumours and cysts (the segmenter's training target, `segmenter_data.SegmenterDataConfig`). Dice per slice on the series' own grid; **failure = Dice < {failure_dice} on a slice whose reference holds liver** (slices without liver are outside the definition; the predicted liver pixels on them are reported beside). Normal liver slices: reference liver, no tumour or cyst within {normal_gap} slices.
- **Slice gate**: accepted = slice score <= slice threshold (the worker's `flagged` is score > threshold). Risk-coverage: liver slices sorted by score, coverage = share accepted, risk = failure rate among accepted, one point per distinct score; AURC = area under it. The AUROC of slice position (mm from the lung base, `models.body_position`) and of the reference liver area are printed beside because both predict failure without looking at any anomaly. 95 % intervals resample blocks of {block} consecutive slices ({n_boot} draws).
- **Series gate**: the worker's decision (`route.decide`): series score (mean of the top 3 slice scores) > series threshold -> manual queue. Series Dice = 3-D Dice over the whole series. Two series only: a description, not a rate.
- **Position-matched pairs**: the scorer evaluation's lesion test (`lesion_pairs.make_lesion_edits`, same seed and parameters): every cross-section >= {min_lesion_diameter_mm} mm of every tumour of `{donor}` slices {donor_tumour} is cut along its mask on 5 slices (centre +-{slab}) and transplanted into `{recipient}` normal liver (slices {recipient_normal}) at the same distance from the lung base (+-{position_tolerance_mm} mm), quota per diameter bin, {max_pairs} pairs at most. Both models see the modified slab consistently (the segmenter's neighbour channels at +-{neighbour_mm} mm fall inside it); intensity shift, crop box and view centre come from the unmodified series (start-up checks below). Reference for the modified slice = recipient liver mask **plus the lesion** (a tumour is liver in the reference, as in 3D-IRCADb; the transplant lies wholly inside the liver mask on the centre slice, {outside} pixels outside). **Lesion-induced failure** = Dice with the lesion < {failure_dice} while the slice without it passes, or a Dice drop >= {drop_margin}. The gate must predict these from the score (its change, or the modified slice's score alone, which is what it sees in service). Caveat: the recipient slices are training slices of both models (the only normal liver at the donor's tumour levels), so the unmodified Dice is optimistic and the lesion is the only novelty.
- Start-up checks: scorer view vs `preprocess_series` max |diff| {scorer_view:.1e}; pair scores vs `score_volume` max |diff| {score_diff:.1e}; segmenter view vs `to_model_grid` {seg_view:.1e}, on a modified series {seg_mod:.1e}; unmodified pair masks vs `segment_mask`: {seg_pixels} pixels differ."""  # noqa: E501


PAIR_KEYS = (
    "donor",
    "recipient",
    "recipient_normal",
    "donor_tumour",
    "position_tolerance_mm",
    "min_lesion_diameter_mm",
)


def report_markdown(metrics: dict, cfg: GateConfig) -> str:
    s, g, p = metrics["models"]["scorer"], metrics["models"]["segmenter"], metrics["pairs"]
    lines = [
        "# Gate evaluation on real CT (issue #3, part 6)",
        "",
        f"Generated by `gatekeeper evaluate-gate` in {metrics['runtime_s']:.0f} s. Research evaluation on "
        "non-commercial data (3D-IRCADb-01): numbers and curves only, no patient image.",
        "",
        "| model | checkpoint | state |",
        "|---|---|---|",
        f"| scorer ({s['detector']}) | `{s['path']}` | phase {s['phase']}, GAN step {s['gan_step']}, encoder step "
        f"{s['encoder_step']}; slice threshold {_f(s['threshold'], 5)}, series threshold "
        f"{_f(s['series_threshold'], 5)} |",
        f"| segmenter | `{g['path']}` | step {g['step']}, sha256 {str(g['sha256'])[:12]} |",
        "",
        "## Goals",
        "",
        *goal_rows(metrics, cfg),
        "",
        *findings(metrics, cfg),
        "",
        f"## Slices: does the score predict segmentation failure (Dice < {cfg.failure_dice})?",
        "",
        *slice_rows(metrics, cfg),
        "",
        "## Series: the worker's decision",
        "",
        *series_rows(metrics, cfg),
        "",
        "## Position-matched pairs: does the lesion make the segmenter fail, and does the score say so?",
        "",
        *pair_rows(metrics, cfg),
        "",
        "Figures: `risk_coverage.png`, `score_dice.png` (score against Dice per slice; pairs: score change "
        "against Dice change), `roc.png` (failure ROC beside position alone).",
        "",
        "## What it measures (methods)",
        "",
    ]
    parity = p["parity"]
    pairs_cfg = metrics["config"]["pairs"]
    lines += METHODS.format(
        fast="fast (channels_last + bf16)" if cfg.fast else "fp32",
        context=metrics["segmenter_grid"]["context"],
        neighbour_mm=metrics["segmenter_grid"]["neighbour_mm"],
        seg_threshold=g["threshold"],
        threshold=s["threshold"],
        target_fpr=s["target_fpr"],
        series_threshold=_f(s["series_threshold"], 5),
        failure_dice=cfg.failure_dice,
        normal_gap=cfg.normal_gap,
        block=cfg.block,
        n_boot=cfg.n_boot,
        slab=SLAB,
        max_pairs=cfg.max_pairs,
        outside=p["lesion_outside_liver_pixels"],
        drop_margin=cfg.drop_margin,
        scorer_view=parity["scorer_view"],
        score_diff=parity["scorer_vs_score_volume"],
        seg_view=parity["segmenter_view"],
        seg_mod=parity["segmenter_view_modified"],
        seg_pixels=parity["segmenter_vs_segment_mask_pixels"],
        **{k: pairs_cfg[k] for k in PAIR_KEYS},
    ).splitlines()
    lines += [
        f"- Training and calibration overlap: {training_note(metrics, cfg)}",
        "",
        "## Reproduce",
        "",
        "```",
        f"gatekeeper evaluate-gate --scorer {s['path']} --segmenter {g['path']} --out <folder>",
        "```",
        "",
        "Data: `../shared/data` (or `--data-dir`); read its MANIFEST: the 3D-IRCADb data, masks and weights "
        "trained on them must never be committed.",
    ]
    return "\n".join(lines) + "\n"


def training_note(metrics: dict, cfg: GateConfig) -> str:
    parts = []
    for name, m in metrics["slices"].items():
        t = m["training_slices"]
        parts.append(f"`{name}`: {t['scorer']} slices in the scorer's training set, {t['segmenter']} in the "
                     f"segmenter's, {m['calibration_slices']} calibration slices of the threshold")  # fmt: skip
    return "; ".join(parts) + "."


def write_report(metrics: dict, runs: dict[str, SeriesRun], pairs: dict, cfg: GateConfig, out_dir: Path) -> None:
    plot_risk_coverage(runs, pairs, metrics, cfg, out_dir / "risk_coverage.png")
    plot_score_dice(runs, pairs, metrics["models"]["scorer"]["threshold"], cfg, out_dir / "score_dice.png")
    plot_roc(runs, pairs, cfg, out_dir / "roc.png")
    (out_dir / "REPORT.md").write_text(report_markdown(metrics, cfg))

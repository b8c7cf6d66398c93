"""``gatekeeper evaluate-failure-gate``: reports/gate/REPORT.md, summary.json and figures.

    python -m workers.evaluation.failure_report --out reports/gate

Needs the leave-one-patient-out segmenter folds (``scripts/train-segmenter-folds.sh``) and the data in
``../shared/data``. Numbers and curves only: no patient image (most cases are non-commercial).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from app.core.plotting import pyplot
from models.risk import FEATURES, FailureRule
from workers.evaluation.failure_eval import FailureEvalConfig, collect
from workers.evaluation.failure_metrics import lopo, patient_metrics, pooled_metrics
from workers.training.risk_fit import DEFAULT_FIT

REPO = Path(__file__).resolve().parents[2]
GOALS = {"failure_auroc": 0.95, "risk_at_70pct_coverage": 0.01, "patients": 4, "segmenter_series_dice_median": 0.95}


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f} %" if pct else f"{v:.3f}"


def _plots(out: Path, runs: dict[str, dict]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, r in runs.items():
        c = r["pooled"]["curve"]
        ax.step(c["coverage"], c["risk"], where="post", label=label)
    ax.axvline(0.7, color="grey", lw=0.6, ls="--")
    ax.axhline(0.01, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("coverage (share of liver slices accepted)")
    ax.set_ylabel("failure rate among accepted")
    ax.set_ylim(0, max(0.05, max(max(r["pooled"]["curve"]["risk"] or [0]) for r in runs.values()) * 0.5))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "risk_coverage.png", dpi=110)
    plt.close(fig)


def _roc_plot(out: Path, per: dict[str, Any]) -> None:
    from sklearn.metrics import roc_curve

    from workers.evaluation.failure_metrics import SINGLE_DIRECTION

    plt = pyplot()
    risk = np.concatenate([per[p]["risk"] for p in sorted(per)])
    failed = np.concatenate([per[p]["failed"] for p in sorted(per)])
    x = np.concatenate([per[p]["features"] for p in sorted(per)])
    names = per[sorted(per)[0]]["model"].features
    fig, ax = plt.subplots(figsize=(5, 4.5))
    fpr, tpr, _ = roc_curve(failed, risk)
    ax.plot(fpr, tpr, lw=2, color="k", label="fused risk")
    for j, name in enumerate(names):
        fpr, tpr, _ = roc_curve(failed, SINGLE_DIRECTION[name] * x[:, j])
        ax.plot(fpr, tpr, lw=0.8, label=name)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (failures flagged)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=110)
    plt.close(fig)


def build(config: FailureEvalConfig, out: Path, alpha: float = 0.01) -> dict[str, Any]:
    t0 = time.perf_counter()
    tables = collect(config, REPO)
    rule = FailureRule()
    runs = {}
    for label, clinical in (("clinical definition", True), ("old definition (Dice < 0.9)", False)):
        per = lopo(tables, rule, alpha=alpha, clinical=clinical)
        runs[label] = {"per": per, "pooled": pooled_metrics(per), "patients": patient_metrics(per, tables, rule)}
    main = runs["clinical definition"]
    # the fitted fusions beside the shipped parameter-free risk, on the same folds
    hows = ("gate", "plain", "union", "disagreement+ends", "union+ends")
    fused = {how: pooled_metrics(lopo(tables, rule, alpha=alpha, how=how)) for how in hows}
    dices = [float(t["series_dice"]) for t in tables.values()]
    summary = {
        "failure_auroc": main["pooled"]["failure_auroc"],
        "failure_auroc_ci95": main["pooled"]["failure_auroc_ci95"],
        "risk_at_70pct_coverage": main["pooled"]["risk_at_70pct_coverage"],
        "coverage_at_1pct_risk": main["pooled"]["coverage_at_1pct_risk"],
        "patients": len(tables),
        "segmenter_series_dice_median": float(np.median(dices)) if dices else None,
        "segmenter_series_dice": {p: float(t["series_dice"]) for p, t in tables.items()},
        "slices": main["pooled"]["slices"],
        "failures": main["pooled"]["failures"],
        "single_signal_auroc": main["pooled"]["single_signal_auroc"],
        "old_definition": {k: runs["old definition (Dice < 0.9)"]["pooled"][k]
                           for k in ("failure_auroc", "risk_at_70pct_coverage", "coverage_at_1pct_risk", "failures")},
        "risk_model": DEFAULT_FIT,
        "fitted_fusions": {
            name: {k: fused[how][k] for k in ("failure_auroc", "risk_at_70pct_coverage", "coverage_at_1pct_risk")}
            for how, name in (("gate", "logistic_l1_chosen_on_patients"), ("plain", "logistic_l2_all_signals"))
        },
        # parameter-free too: the larger of the disagreement and the dark edge (models.risk.union_risk)
        "union_disagreement_edge_dark": {
            k: fused["union"][k] for k in ("failure_auroc", "failure_auroc_ci95", "risk_at_70pct_coverage",
                                           "coverage_at_1pct_risk")},
        # session 17: the open end beside them (models.liver_ends), on the same judged slices
        **{key: {k: fused[how][k] for k in ("failure_auroc", "failure_auroc_ci95", "risk_at_70pct_coverage",
                                            "coverage_at_1pct_risk", "slices", "failures")}
           for how, key in (("disagreement+ends", "union_disagreement_open_end"),
                            ("union+ends", "union_disagreement_edge_dark_open_end"))},
        "open_ends": _end_counts(main["patients"]),
        "per_patient_auroc_mean": float(np.mean([m["auroc"] for m in main["patients"].values() if m["auroc"]])),
        "crc_alpha": alpha,
        "per_patient": main["patients"],
        "goals": GOALS,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plots(out, runs)
    _roc_plot(out, main["per"])
    (out / "REPORT.md").write_text(_markdown(summary, runs, config, time.perf_counter() - t0, out))
    return summary


def _ends_section(s: dict) -> list[str]:
    c = s["open_ends"]
    lines = ["", "## The mask's ends: does liver go on past them? (`models.liver_ends`)", "",
             "Where every pass agrees on nothing, the disagreement is 0: a whole slice the mask leaves out at the "
             "liver's end is a failure no risk above can see. The gate looks past each end of the mask, and on the "
             "mask's own last 16 mm beside it, for tissue of the liver's own density that the mask leaves out, and "
             f"sends the series to a radiologist when 5 cm² or more is found (`liver_beyond_mask`). Over "
             f"{c['ends']} ends: {c['truly_open']} truly open (5 cm² or more of reference liver left out there), "
             f"{c['open_called_open']} of them called open; closed ends called open: {c['closed_called_open']}.",
             "", "| patient | end | end slice | called open | found left out (cm²) | reference past the end (cm²) "
             "| reference left out, past and beside (cm²) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for p, m in s["per_patient"].items():
        for e in m["ends"]:
            left_out = e.get("reference_left_out_cm2", e["reference_beyond_cm2"])
            lines.append(f"| {p} | {e['side']} | {e['end_slice']} | {e['claimed_open']} "
                         f"| {e['continuation_cm2']:.1f} | {e['reference_beyond_cm2']:.1f} "
                         f"| {left_out:.1f} |")  # fmt: skip
    lines += ["", "The per-slice figures above judge liver slices only (the reference or the mask holds liver): a "
              "claim past the reference's liver counts here, as a closed end called open, where it acts (it sends "
              "the series to a radiologist). The series decision (`series auto` above) also requires no open end "
              f"({sum(m['series_auto_without_end_check'] for m in s['per_patient'].values())} series auto without "
              "that check)."]  # fmt: skip
    return lines


def _end_counts(patients: dict[str, Any]) -> dict[str, int]:
    """The mask's ends over every patient: called open or not (models.liver_ends), against the reference."""
    ends = [e for m in patients.values() for e in m["ends"]]
    return {"ends": len(ends), "truly_open": sum(e["truly_open"] for e in ends),
            "open_called_open": sum(e["truly_open"] and e["claimed_open"] for e in ends),
            "closed_called_open": sum(e["claimed_open"] and not e["truly_open"] for e in ends)}  # fmt: skip


def _shown(out: Path) -> str:
    """The report folder as the command line gave it, relative to the repository where it lies inside."""
    try:
        return str(out.resolve().relative_to(REPO))
    except ValueError:
        return str(out)


def _markdown(s: dict, runs: dict, config: FailureEvalConfig, seconds: float, out: Path) -> str:
    def met(key: str, ok: bool) -> str:
        return "met" if ok else "**not met**"

    ci = ", ".join(f"{v:.3f}" for v in s["failure_auroc_ci95"] or [])
    series = s["per_patient"].values()
    n_fail, n_auto = sum(m["series_failure"] for m in series), sum(m["series_auto"] for m in series)
    lines = [
        "# Does the gate predict where the segmenter fails? (issue #14)",
        "",
        f"Generated by `python -m workers.evaluation.failure_report --out {_shown(out)}"
        + (f" --second-runs {config.second_runs}" if config.second_runs else "")
        + (f" --segmenter {config.segmenter} --patients {' '.join(config.patients)}" if config.segmenter else "")
        + f"` in {seconds:.0f} s, from "
        + (
            f"one segmenter, `{config.segmenter}`, that never trained on these patients (the command refuses one "
            "that did); each patient's risk fit and threshold still come from the other patients only. "
            if config.segmenter
            else f"the leave-one-patient-out segmenter folds in `{config.runs}` (`scripts/train-segmenter-folds.sh`). "
            "Each patient is segmented by the fold that never saw them. "
        )
        + "Through the worker's own code "
        "(`workers.inference.quality.segment_with_quality`: the mask is the mean of its three passes, plain and "
        "two shifts"
        + (
            f"; with a second member of each fold from `{config.second_runs}`, trained alike with another seed, whose "
            "plain pass joins the mean and the disagreement"
            if config.second_runs
            else ""
        )
        + "). Its risk is "
        f"the gate's shipped `{s['risk_model']}` risk (below: why not a fitted fusion); the acceptance threshold is "
        "set by conformal risk control on the other patients' risks only (for a fitted fusion, from models that "
        "left each of them out too). Numbers only: the IRCADb cases are non-commercial.",
        "",
        "## Goals",
        "",
        "| goal | target | measured | |",
        "|---|---|---|---|",
        f"| failure AUROC (pooled held-out slices) | >= 0.95 | {_fmt(s['failure_auroc'])} [{ci}] "
        f"| {met('a', (s['failure_auroc'] or 0) >= 0.95)} |",
        f"| failures among the 70 % lowest-risk liver slices | <= 1 % | {_fmt(s['risk_at_70pct_coverage'], True)} "
        f"| {met('r', (s['risk_at_70pct_coverage'] or 1) <= 0.01)} |",
        f"| patients, leave one out | >= 4 | {s['patients']} | {met('p', s['patients'] >= 4)} |",
        f"| segmenter median series Dice | >= 0.95 | {_fmt(s['segmenter_series_dice_median'])} "
        f"| {met('d', (s['segmenter_series_dice_median'] or 0) >= 0.95)} |",
        "",
        f"Coverage at <= 1 % risk (pooled curve): {_fmt(s['coverage_at_1pct_risk'], True)}. Judged slices: "
        f"{s['slices']} (the reference or the prediction holds liver), "
        f"{s['failures']} failures under the clinical "
        f"definition. Series: {n_fail} of {len(series)} fail (Dice < 0.95 or a failing slice in the core); the gate "
        f"accepts {n_auto} of {len(series)}. Failure AUROC per held-out patient: "
        + ", ".join(f"{p} {_fmt(m['auroc'])}" for p, m in s["per_patient"].items())
        + " (pooled, the patients' different failure rates mix).",
        "",
        "## Per patient (clinical definition)",
        "",
        "| held-out patient | series Dice | judged slices | failures | AUROC | risk at 70 % | CRC threshold "
        "| coverage at it | failures among accepted | series failure | series auto | segmenter steps "
        "| segment + quality s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p, m in s["per_patient"].items():
        lines.append(
            f"| {p} | {m['series_dice']:.3f} | {m['slices']} | {m['failures']} | {_fmt(m['auroc'])} "
            f"| {_fmt(m['risk_at_70pct_coverage'], True)} | {_fmt(m['crc_threshold'])} "
            f"| {_fmt(m['coverage_at_threshold'], True)} | {_fmt(m['failure_rate_accepted'], True)} "
            f"| {m['series_failure']} | {m['series_auto']} | {m['segmenter_step']} | {m['segment_seconds']:.1f} |"
        )
    lines += ["", "## Each signal alone (pooled, direction fixed in advance)", "",
              "| signal | AUROC |", "|---|---|"]  # fmt: skip
    lines += [f"| {k} | {_fmt(v)} |" for k, v in s["single_signal_auroc"].items()]
    l1, l2 = s["fitted_fusions"]["logistic_l1_chosen_on_patients"], s["fitted_fusions"]["logistic_l2_all_signals"]
    un = s["union_disagreement_edge_dark"]
    de, ue = s["union_disagreement_open_end"], s["union_disagreement_edge_dark_open_end"]
    lines += ["", "## The risk model: why nothing is fitted but the threshold", "",
              f"The shipped risk (`{s['risk_model']}`) is the TTA disagreement itself; only its threshold is fit, by "
              "conformal risk control. The fitted fusions on the same folds, each held-out patient scored by a model "
              "fit on the others (`risk_fit.fit_on`):", "",
              "| risk model | failure AUROC (pooled) | failures among the 70 % lowest-risk |", "|---|---|---|",
              f"| TTA disagreement, nothing fitted (shipped) | {_fmt(s['failure_auroc'])} "
              f"| {_fmt(s['risk_at_70pct_coverage'], True)} |",
              f"| larger of the TTA disagreement and the dark edge, nothing fitted | {_fmt(un['failure_auroc'])} "
              f"| {_fmt(un['risk_at_70pct_coverage'], True)} |",
              f"| larger of the TTA disagreement and the open end, nothing fitted | {_fmt(de['failure_auroc'])} "
              f"| {_fmt(de['risk_at_70pct_coverage'], True)} |",
              f"| largest of the disagreement, the dark edge and the open end | {_fmt(ue['failure_auroc'])} "
              f"| {_fmt(ue['risk_at_70pct_coverage'], True)} |",
              f"| logistic, L1, strength chosen leaving one training patient out | {_fmt(l1['failure_auroc'])} "
              f"| {_fmt(l1['risk_at_70pct_coverage'], True)} |",
              f"| logistic, L2, all {len(FEATURES)} signals (sessions 9-11: eleven) | {_fmt(l2['failure_auroc'])} "
              f"| {_fmt(l2['risk_at_70pct_coverage'], True)} |",
              "", "Each fit sees three patients whose failure rates differ several-fold, so its intercept and slopes "
              "move from fold to fold and each held-out patient's risks land on another scale: the pooled ranking "
              "suffers first. Session 9's folds showed the same (fused 0.75, disagreement alone 0.89). A fitted "
              "fusion needs more contoured patients than four; `gatekeeper fit-failure-risk --model gate` fits one.",
              ]  # fmt: skip
    lines += _ends_section(s)
    old = s["old_definition"]
    lines += [
        "",
        "## Under the old definition (Dice < 0.9 wherever the reference holds liver)",
        "",
        f"failure AUROC {_fmt(old['failure_auroc'])}, failures among the 70 % lowest-risk "
        f"{_fmt(old['risk_at_70pct_coverage'], True)}, coverage at <= 1 % {_fmt(old['coverage_at_1pct_risk'], True)}, "
        f"{old['failures']} failures.",
        "",
        "Figures: `risk_coverage.png` (both definitions), `roc.png` (fused risk against each signal alone).",
        "",
        "## How to read it",
        "",
        "- **The threshold's guarantee.** Conformal risk control bounds the expected share of slices that are both "
        "accepted and failed by alpha when calibration and new slices are exchangeable. Here the calibration "
        "slices come from two or three other patients, slices of one patient are correlated, and the patients "
        "differ (contrast, coverage, pathology): the per-patient columns show how far that assumption carries.",
        "- **Series decision.** Auto only when no slice of the predicted liver's core (fractions 0.2-0.8 of the "
        "predicted extent) is over the threshold: failures at the liver's ends (small cross-sections) are shown to "
        "the radiologist as evidence but do not by themselves stop a series, as in the series failure definition.",
        "- **Segment + quality seconds** were measured while other jobs shared the 2 cores: not a speed figure "
        "(BENCHMARKS.md has those).",
        "- **An ensemble** is measured, not shipped: `reports/gate-ensemble` (`gatekeeper evaluate-failure-gate "
        "--second-runs runs/segmenter-lopo-seed1 --out reports/gate-ensemble`) segments each patient with two "
        "members of its fold (another seed). The active-learning loop is simulated in `reports/active-learning` "
        "(`gatekeeper simulate-active-learning`).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Write the gate's failure report."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, default=Path("reports/gate"))
    parser.add_argument("--runs", default=FailureEvalConfig.runs)
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--second-runs", default=None, help="a second member of every fold: the ensemble's report")
    parser.add_argument("--segmenter", default=None,
                        help="one segmenter checkpoint for every patient instead of the folds (it must not have "
                        "trained on any of them), e.g. models/weights/segmenter.pt")  # fmt: skip
    parser.add_argument("--patients", nargs="+", default=None, help="patients to evaluate (default: every one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    config = FailureEvalConfig(runs=args.runs, second_runs=args.second_runs, segmenter=args.segmenter)
    if args.patients:
        config = replace(config, patients=tuple(args.patients))
    summary = build(config, args.out, args.alpha)
    print(json.dumps({k: summary[k] for k in GOALS}, indent=2))


if __name__ == "__main__":
    main()

"""``gatekeeper fit-failure-risk`` and ``gatekeeper evaluate-failure-gate``: the gate's second signal."""

from __future__ import annotations

from pathlib import Path

import typer

from app.cli.train import _finish, _show_progress_in_logs, console


def _case(spec: str) -> tuple[str, str, str]:
    name, sep, paths = spec.partition("=")
    ct, sep2, mask = paths.partition(":")
    if not (sep and sep2 and name and ct and mask):
        raise typer.BadParameter(f"expected NAME=CT:MASK (paths under --data-dir), got {spec!r}")
    return name, ct, mask


def fit_failure_risk_cmd(
    segmenter: Path = typer.Argument(..., help="The segmenter checkpoint the risk model is for."),
    scorer: Path = typer.Option(..., help="The scorer whose anomaly score is fused (the one the gate pins)."),
    case: list[str] = typer.Option(
        ...,
        help="NAME=CT:MASK, a contoured case the segmenter never trained on "
        "(CT: DICOM folder or NIfTI; MASK: NIfTI liver mask on its grid). Repeat, >= 3.",
    ),
    out: Path = typer.Option(..., help="Where to write the segmenter checkpoint that carries the risk model."),
    alpha: float = typer.Option(
        0.01, help="Risk level of the conformal threshold: the share of slices both accepted and failed."
    ),
    data_dir: Path = typer.Option(Path("../shared/data"), help="Folder the CT and MASK paths are relative to."),
    register: bool = typer.Option(False, help="Register the result as a new segmenter version."),
    promote: bool = typer.Option(False, help="Register and promote it."),
    model_kind: str = typer.Option(
        "disagreement",
        "--model",
        help="disagreement: the TTA disagreement, only its threshold fitted (the default: it transferred across "
        "patients, reports/gate); union: the larger of the disagreement and the dark edge, nothing else fitted; "
        "disagreement+ends, union+ends: the same with the open end (liver-like tissue past the mask's end); "
        "gate: a logistic fusion of every signal, L1 chosen leaving one case out; "
        "plain: the L2 logistic fusion of sessions 9-11.",
    ),  # fmt: skip
) -> None:
    """Fit the failure risk of a segmenter (and its acceptance threshold) on contoured cases."""
    from workers.training.risk_fit import fit_segmenter_risk
    from workers.training.segmenter_data import MaskedCase

    _show_progress_in_logs()
    cases = [MaskedCase(*_case(spec)) for spec in case]
    try:
        model = fit_segmenter_risk(segmenter, scorer, cases, data_dir.resolve(), out, alpha=alpha, how=model_kind)
    except ValueError as exc:
        console.print(f"[red]cannot fit: {exc}[/red]")
        raise typer.Exit(2) from exc
    cal = model.fitted_on["calibration"]
    fit = model.fitted_on
    console.print(f"{model.kind} risk model on {fit['slices']} slices ({fit['failures']} failures); threshold "
                  f"{model.threshold} accepts {cal['accepted']} of {cal['slices']} out-of-case slices")  # fmt: skip
    _finish("segmenter", out, register, promote)


def evaluate_failure_gate_cmd(
    runs: Path = typer.Option(Path("runs/segmenter-lopo"), help="Leave-one-patient-out segmenter folds."),
    out: Path = typer.Option(Path("reports/gate"), help="Report folder (REPORT.md, summary.json, figures)."),
    alpha: float = typer.Option(0.01, help="Risk level of the conformal threshold."),
    second_runs: Path | None = typer.Option(
        None,
        help="A second member of every fold (SEED=1 RUNS=... scripts/train-segmenter-folds.sh): each patient "
        "is segmented by the two-member ensemble.",
    ),  # fmt: skip
    segmenter: Path | None = typer.Option(
        None,
        help="One segmenter for every patient instead of the folds (refused for a patient it trained on), e.g. "
        "models/weights/segmenter.pt with --patient ircadb-01 --patient ircadb-07 --patient ircadb-17.",
    ),  # fmt: skip
    patient: list[str] = typer.Option([], help="A patient to evaluate (repeat; default: every one)."),
) -> None:
    """Does the fused risk predict segmentation failure on held-out patients? (workers.evaluation.failure_report)"""
    from workers.evaluation.failure_report import main

    extra = ["--second-runs", str(second_runs)] if second_runs else []
    extra += ["--segmenter", str(segmenter)] if segmenter else []
    extra += ["--patients", *patient] if patient else []
    main(["--runs", str(runs), "--out", str(out), "--alpha", str(alpha), *extra])


def simulate_active_learning_cmd(
    test: str = typer.Option("ircadb-01", help="The test patient: never labelled, never picked from."),
    out: Path = typer.Option(Path("runs/active-learning"), help="Run folder (one sub-folder per test patient)."),
    rounds: int = typer.Option(4, help="Labelling rounds."),
    budget: int = typer.Option(16, help="Slices labelled per round."),
    seeds: list[int] = typer.Option([0, 1, 2], help="Training seeds (the curves' noise). Repeat."),
    report: Path = typer.Option(Path("reports/active-learning"), help="Where the report is written afterwards."),
) -> None:
    """Simulate the active-learning loop (gate, uncertainty and random picks; workers.evaluation.active_learning)
    and write its report. Resumes: finished strategy x seed runs are kept."""
    from workers.evaluation import active_learning, active_learning_report

    seed_args = [str(s) for s in seeds]
    active_learning.main(["--out", str(out), "--test", test, "--rounds", str(rounds), "--budget", str(budget),
                          "--seeds", *seed_args])  # fmt: skip
    active_learning_report.main(["--runs", str(out), "--out", str(report)])

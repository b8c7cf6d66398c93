"""``gatekeeper train-patch-scorer``, ``calibrate-patch-scorer``, ``evaluate-patch-scorer``: the patch scorers.

Thin wrappers over ``workers.training.patch_training``, ``patch_calibration`` and
``workers.evaluation.patch_report``; each runs in the foreground, logs progress, and a rerun of the same
training command resumes from the run folder's last checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import typer

from app.cli.train import _finish, _show_progress_in_logs


def train_patch_scorer_cmd(
    run_dir: Path = typer.Option(..., help="Run folder: config.json, progress.jsonl, checkpoints/, scorer.pt."),
    train: list[str] = typer.Option(["totalseg-s0009"], help="Normal patients to train on (repeat the option)."),
    detector: str = typer.Option("fanogan", help="fanogan, inpaint (context inpainting GAN) or autoencoder."),
    steps: int = typer.Option(10_000, help="Generator steps (f-AnoGAN) or updates (inpainting, autoencoder)."),
    encoder_steps: int = typer.Option(4_000, help="izi_f encoder steps (f-AnoGAN)."),
    unconditioned: bool = typer.Option(False, help="No position conditioning (the ablation)."),
    wgan_gp: bool = typer.Option(False, help="WGAN-GP with 5 critic steps and penalty 10 (Schlegl et al.)."),
    width: int = typer.Option(16, help="Channels of the first convolution (bench/bench_patch_gan.py)."),
    threads: int = typer.Option(2, help="CPU threads."),
    data_dir: Path = typer.Option(Path("../shared/data"), help="Folder with ct/<case>/ (MANIFEST.md)."),
    register: bool = typer.Option(False, help="Register the result in the model registry."),
) -> None:
    """Train (or resume) a patch scorer; ``calibrate-patch-scorer`` must run before it can gate."""
    import argparse

    from workers.training.patch_training import config_from_args
    from workers.training.patch_training import train as run

    _show_progress_in_logs()
    args = argparse.Namespace(detector=detector, unconditioned=unconditioned, width=width, wgan_gp=wgan_gp,
                              train=train, data_dir=str(data_dir), steps=steps, encoder_steps=encoder_steps,
                              seed=0, threads=threads)  # fmt: skip
    _finish("scorer", run(config_from_args(args), run_dir), register, False)


def calibrate_patch_scorer_cmd(
    checkpoint: Path = typer.Argument(..., help="scorer.pt of a patch scorer."),
    patients: list[str] = typer.Option(..., help="Normal patients it never trained on (repeat the option)."),
    out: Path = typer.Option(..., help="Where to write the calibrated checkpoint."),
    target_fpr: float = typer.Option(0.05, help="Target false-positive rate per normal slice."),
    data_dir: Path = typer.Option(Path("../shared/data"), help="Folder with ct/<case>/."),
    register: bool = typer.Option(False, help="Register the calibrated file."),
    promote: bool = typer.Option(False, help="Register and promote it."),
) -> None:
    """Conformal slice and series thresholds from normal patients the scorer never saw."""
    from workers.training.patch_calibration import calibrate

    _show_progress_in_logs()
    result = calibrate(checkpoint, patients, data_dir, out, target_fpr)
    typer.echo(f"slice threshold {result['threshold']:.4g}, series threshold {result['series_threshold']:.4g}")
    _finish("scorer", out, register, promote)


def evaluate_patch_scorer_cmd(
    runs: Path = typer.Option(Path("runs/patch"), help="Folder of <fold>-<detector>/scorer.pt runs."),
    out: Path = typer.Option(Path("reports/scorer"), help="Report folder (REPORT.md, summary.json, plots)."),
) -> None:
    """Leave-one-normal-patient-out evaluation against the baselines (workers.evaluation.patch_report)."""
    from workers.evaluation.patch_report import main

    main(["--runs", str(runs), "--out", str(out)])

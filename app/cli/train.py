"""``gatekeeper train-scorer`` and ``gatekeeper train-segmenter``: resumable training runs in a run folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.console import Console

from app.core.config import get_settings

console = Console(stderr=True)


def _show_progress_in_logs() -> None:
    """A run in the background (output to a file) gets no live progress bar: the trainers then log a
    progress line every few steps, and this makes those lines reach stderr."""
    from app.core.logging import configure_logging

    configure_logging(get_settings().log_level)


def _finish(kind: str, checkpoint: Path, register: bool, promote: bool) -> None:
    """Print where the final checkpoint is; register it (and promote it) when asked."""
    console.print(f"final checkpoint: {checkpoint}")
    if not (register or promote):
        return
    from app.core.db import session_scope
    from app.services import registry
    from workers.training.model_card import checked_card

    card = checked_card(checkpoint, kind, source_file=checkpoint.name)
    with session_scope() as session:
        row = registry.register(session=session, models_dir=get_settings().models_dir, kind=kind, source=checkpoint,
                                metrics={}, card=card, actor="cli")  # fmt: skip
        if promote:
            registry.promote(session=session, model_id=row.id, actor="cli")
    console.print(f"registered {kind} v{row.version} (id {row.id}){' and promoted' if promote else ''}")


def train_scorer_cmd(
    run_dir: Path = typer.Option(..., help="Run folder: config.json, checkpoints, metrics.jsonl, sample grids."),
    data_dir: Path = typer.Option(None, help="Real CT (MANIFEST split); default GATEKEEPER_DATA_DIR."),
    detector: str = typer.Option("fanogan", help="fanogan, or autoencoder (the non-GAN baseline)."),
    conditional: bool = typer.Option(True, help="Condition G, D and E on the slice position."),
    view: str = typer.Option("body", help="body: whole slice, 400 mm field; liver: 192 mm around the liver at 1.5 mm."),
    image_size: int = typer.Option(64, help="64 or 128 (the body view; the liver view is always 128)."),
    base_width: int = typer.Option(32, help="Channels of the first critic block (reference: 64)."),
    top_k_fraction: float = typer.Option(
        None, help="Slice score = mean of this top fraction of the heat-map; default: its mean (Schlegl et al.)."
    ),  # fmt: skip
    n_critic: int = typer.Option(5, help="Critic steps per generator step."),
    gan_steps: int = typer.Option(20_000, help="Generator steps (stage 1)."),
    encoder_steps: int = typer.Option(5_000, help="izi_f encoder steps (stage 2)."),
    batch_size: int = typer.Option(32),
    seed: int = typer.Option(0),
    bf16: bool = typer.Option(
        True,
        help="bf16 autocast where the device runs bf16 natively (CUDA; CPUs with AVX512-BF16 or AMX), "
        "fp32 elsewhere; --no-bf16 always trains in fp32 (faster for narrow WGAN-GPs: see BENCHMARKS.md).",
    ),
    fresh: bool = typer.Option(False, help="Ignore an existing checkpoint instead of resuming."),
    register: bool = typer.Option(False, help="Register the final checkpoint in the model registry."),
    promote: bool = typer.Option(False, help="Register and promote it."),
) -> None:
    """Train the f-AnoGAN scorer (WGAN-GP, then the izi_f encoder, then calibration); resumes by default."""
    _show_progress_in_logs()
    from models.scorer import ScorerConfig
    from models.transforms import body_view, liver_view
    from workers.training.scorer_data import ScorerDataConfig
    from workers.training.scorer_training import ScorerTrainConfig, train_scorer

    data_root = (data_dir or get_settings().data_dir).resolve()
    data = ScorerDataConfig(data_dir=str(data_root), cache_dir=str(run_dir.resolve() / "cache"))
    views = {"body": lambda: body_view(image_size), "liver": liver_view}
    if view not in views:
        raise typer.BadParameter(f"view must be one of {sorted(views)}, got {view!r}", param_hint="--view")
    preprocess = views[view]()
    data = dataclasses.replace(data, preprocess=preprocess)
    model = ScorerConfig(image_size=preprocess.size, base_width=base_width, conditional=conditional,
                         top_k_fraction=top_k_fraction, n_critic=n_critic)  # fmt: skip
    config = ScorerTrainConfig(detector=detector, model=model, data=data, gan_steps=gan_steps,
                               encoder_steps=encoder_steps, batch_size=batch_size, seed=seed, bf16=bf16)  # fmt: skip
    _finish("scorer", train_scorer(config, run_dir, resume=not fresh), register, promote)


def train_segmenter_cmd(
    run_dir: Path = typer.Option(..., help="Run folder: config.json, checkpoints, metrics.jsonl, overlays."),
    data_dir: Path = typer.Option(None, help="Real CT with liver masks (MANIFEST split); default GATEKEEPER_DATA_DIR."),
    steps: int = typer.Option(4000),
    batch_size: int = typer.Option(16),
    seed: int = typer.Option(0),
    fresh: bool = typer.Option(False, help="Ignore an existing checkpoint instead of resuming."),
    register: bool = typer.Option(False, help="Register the final checkpoint in the model registry."),
    promote: bool = typer.Option(False, help="Register and promote it."),
) -> None:
    """Train the liver segmenter; Dice per slice and per series on the held-out patient; resumes by default."""
    _show_progress_in_logs()
    from workers.training.segmenter_data import SegmenterDataConfig
    from workers.training.segmenter_training import SegmenterTrainConfig, train_segmenter

    data_root = (data_dir or get_settings().data_dir).resolve()
    data = SegmenterDataConfig(data_dir=str(data_root), cache_dir=str(run_dir.resolve() / "cache"))
    config = SegmenterTrainConfig(data=data, steps=steps, batch_size=batch_size, seed=seed)
    _finish("segmenter", train_segmenter(config, run_dir, resume=not fresh), register, promote)


def calibrate_scorer_cmd(
    checkpoint: Path = typer.Option(..., exists=True, dir_okay=False, help="Scorer checkpoint to calibrate."),
    out: Path = typer.Option(None, help="Where the calibrated copy goes; default <name>-calibrated.pt beside it."),
    segmenter: Path = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        help="Score inside this segmenter's liver (holes filled, eroded); promote the same segmenter with it.",
    ),
    erosion_mm: float = typer.Option(3.0, min=0.0, max=30.0, help="Erosion of the liver region, mm."),
) -> None:
    """Threshold at the target false-positive rate on the held-out normal split of the checkpoint's own data."""
    from workers.training.scorer_training import calibrate_checkpoint

    try:
        target = calibrate_checkpoint(checkpoint, out, segmenter=segmenter, erosion_mm=erosion_mm)
    except ValueError as exc:  # e.g. a segmenter file given where a scorer is expected
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"calibrated checkpoint: {target}")


def evaluate_scorer_cmd(
    checkpoint: list[str] = typer.Option(..., help="LABEL=PATH, repeatable: the conditioned model and its baselines."),
    data_dir: Path = typer.Option(None, help="Real CT (MANIFEST split); default GATEKEEPER_DATA_DIR."),
    out: Path = typer.Option(Path("reports/scorer-wholeview"), help="REPORT.md, metrics.json and PNG plots go here."),
    max_pairs: int = typer.Option(240, help="Position-matched lesion pairs."),
    segmenter: Path = typer.Option(
        None, exists=True, dir_okay=False, help="Segmenter whose liver the liver-restricted checkpoints score in."
    ),
    kappa_ablation: bool = typer.Option(
        False, help="Also score each f-AnoGAN with kappa = 0 (image residual only), calibrated in the evaluation."
    ),
) -> None:
    """Position-matched lesion test, synthetic anomalies, pixel and slice AUROC beside position-only, FPR."""
    from workers.evaluation.scorer_eval import evaluate_scorer, parse_checkpoints

    try:
        pairs = parse_checkpoints(checkpoint)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--checkpoint") from exc
    evaluate_scorer(pairs, (data_dir or get_settings().data_dir).resolve(), out, max_pairs=max_pairs,
                    segmenter=segmenter, kappa_ablation=kappa_ablation)  # fmt: skip
    console.print(f"report: {out / 'REPORT.md'}")


def evaluate_gate_cmd(
    scorer: Path = typer.Option(..., help="Calibrated scorer checkpoint (its thresholds = the operating point)."),
    segmenter: Path = typer.Option(..., help="Segmenter checkpoint."),
    data_dir: Path = typer.Option(None, help="Real CT (MANIFEST split); default GATEKEEPER_DATA_DIR."),
    out: Path = typer.Option(Path("reports/gate"), help="REPORT.md, metrics.json and PNG plots go here."),
    max_pairs: int = typer.Option(240, help="Position-matched lesion pairs."),
    threads: int = typer.Option(1, help="torch threads (1 leaves room for a training run beside it)."),
) -> None:
    """Held-out patient through scoring and segmentation: Dice of accepted vs rejected, failure AUROC, risk-coverage."""
    import dataclasses
    import logging

    import torch

    from workers.evaluation.gate_eval import GateConfig, evaluate_gate

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(threads)
    config = dataclasses.replace(GateConfig(), max_pairs=max_pairs)
    evaluate_gate(scorer, segmenter, (data_dir or get_settings().data_dir).resolve(), out, config)
    console.print(f"report: {out / 'REPORT.md'}")

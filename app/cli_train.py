"""``gatekeeper train-scorer`` and ``gatekeeper train-segmenter``: resumable training runs in a run folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.console import Console

from app.core.config import get_settings

console = Console(stderr=True)


def _register(kind: str, checkpoint: Path, promote: bool) -> None:
    from app.core.db import session_scope
    from app.services import registry

    with session_scope() as session:
        row = registry.register(session=session, models_dir=get_settings().models_dir, kind=kind, source=checkpoint,
                                metrics={}, card={"source_file": checkpoint.name}, actor="cli")  # fmt: skip
        if promote:
            registry.promote(session=session, model_id=row.id, actor="cli")
    console.print(f"registered {kind} v{row.version} (id {row.id}){' and promoted' if promote else ''}")


def train_scorer_cmd(
    run_dir: Path = typer.Option(..., help="Run folder: config.json, checkpoints, metrics.jsonl, sample grids."),
    data_dir: Path = typer.Option(None, help="Real CT (MANIFEST split); default GATEKEEPER_DATA_DIR."),
    detector: str = typer.Option("fanogan", help="fanogan, or autoencoder (the non-GAN baseline)."),
    conditional: bool = typer.Option(True, help="Condition G, D and E on the slice position."),
    image_size: int = typer.Option(64, help="64 or 128."),
    base_width: int = typer.Option(32, help="Channels of the first critic block (reference: 64)."),
    gan_steps: int = typer.Option(20_000, help="Generator steps (stage 1)."),
    encoder_steps: int = typer.Option(5_000, help="izi_f encoder steps (stage 2)."),
    batch_size: int = typer.Option(32),
    seed: int = typer.Option(0),
    fresh: bool = typer.Option(False, help="Ignore an existing checkpoint instead of resuming."),
    register: bool = typer.Option(False, help="Register the final checkpoint in the model registry."),
    promote: bool = typer.Option(False, help="Register and promote it."),
) -> None:
    """Train the f-AnoGAN scorer (WGAN-GP, then the izi_f encoder, then calibration); resumes by default."""
    from models.scorer import ScorerConfig
    from workers.pipelines.scorer_data import ScorerDataConfig
    from workers.pipelines.scorer_training import ScorerTrainConfig, train_scorer

    data_root = (data_dir or get_settings().data_dir).resolve()
    data = ScorerDataConfig(data_dir=str(data_root), cache_dir=str(run_dir.resolve() / "cache"))
    data = dataclasses.replace(data, preprocess=dataclasses.replace(data.preprocess, size=image_size))
    model = ScorerConfig(image_size=image_size, base_width=base_width, conditional=conditional)
    config = ScorerTrainConfig(detector=detector, model=model, data=data, gan_steps=gan_steps,
                               encoder_steps=encoder_steps, batch_size=batch_size, seed=seed)  # fmt: skip
    checkpoint = train_scorer(config, run_dir, resume=not fresh)
    console.print(f"final checkpoint: {checkpoint}")
    if register or promote:
        _register("scorer", checkpoint, promote)


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
    from workers.pipelines.segmenter_data import SegmenterDataConfig
    from workers.pipelines.segmenter_training import SegmenterTrainConfig, train_segmenter

    data_root = (data_dir or get_settings().data_dir).resolve()
    data = SegmenterDataConfig(data_dir=str(data_root), cache_dir=str(run_dir.resolve() / "cache"))
    config = SegmenterTrainConfig(data=data, steps=steps, batch_size=batch_size, seed=seed)
    checkpoint = train_segmenter(config, run_dir, resume=not fresh)
    console.print(f"final checkpoint: {checkpoint}")
    if register or promote:
        _register("segmenter", checkpoint, promote)


def evaluate_scorer_cmd(
    checkpoint: list[str] = typer.Option(..., help="LABEL=PATH, repeatable: the conditioned model and its baselines."),
    data_dir: Path = typer.Option(None, help="Real CT (MANIFEST split); default GATEKEEPER_DATA_DIR."),
    out: Path = typer.Option(Path("reports/scorer"), help="REPORT.md, metrics.json and PNG plots go here."),
    max_pairs: int = typer.Option(240, help="Position-matched lesion pairs."),
) -> None:
    """Position-matched lesion test, synthetic anomalies, pixel and slice AUROC beside position-only, FPR."""
    from workers.pipelines.scorer_eval import evaluate_scorer

    pairs = dict(item.split("=", 1) for item in checkpoint)
    evaluate_scorer({k: Path(v) for k, v in pairs.items()}, (data_dir or get_settings().data_dir).resolve(), out,
                    max_pairs=max_pairs)  # fmt: skip
    console.print(f"report: {out / 'REPORT.md'}")

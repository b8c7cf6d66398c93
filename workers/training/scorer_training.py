"""Train the f-AnoGAN scorer: WGAN-GP (stage 1), izi_f encoder (stage 2), calibration.

``train_scorer(config, run_dir)`` is what the CLI calls. The run folder holds
config.json, metrics.jsonl, samples/*.png and checkpoints/ (latest.pt written
atomically every ``checkpoint_every`` steps; final.pt at the end). Calling
again with ``resume=True`` continues from latest.pt (same phase, step,
optimiser and RNG states). Progress bar: rich.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from app.core.plotting import pyplot
from app.services.storage import file_sha256
from models.scorer import (
    ConvAutoencoder,
    FAnoGAN,
    ScorerConfig,
    calibrate_by_position,
    calibrate_series_threshold,
    calibrate_threshold,
    false_positive_rate,
)
from models.scorer.steps import autoencoder_step, critic_step, encoder_step, freeze_for_encoder, generator_step
from workers.inference.checkpoint import save_checkpoint
from workers.inference.engine import bf16_is_native
from workers.inference.liver_roi import ROI_KEY, LiverRoi, roi_valid
from workers.inference.scorer import load_scorer, predict_slices
from workers.training.model_card import write_card
from workers.training.scorer_data import (
    ScorerDataConfig,
    SliceSet,
    build_slice_set,
    describe,
    load_case_volume,
    selected_indices,
)

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
DETECTORS = ("fanogan", "autoencoder")


@dataclass(frozen=True)
class ScorerTrainConfig:
    detector: str = "fanogan"  # "fanogan", or "autoencoder" (the non-GAN baseline)
    model: ScorerConfig = field(default_factory=ScorerConfig)
    data: ScorerDataConfig = field(default_factory=ScorerDataConfig)
    batch_size: int = 32
    gan_steps: int = 20_000  # generator steps (each after model.n_critic critic steps)
    encoder_steps: int = 5_000  # izi_f encoder steps; for the autoencoder baseline, its steps
    lr_gan: float = 1e-4  # Adam, betas (0, 0.9) as in WGAN-GP / f-AnoGAN
    lr_encoder: float = 5e-5  # RMSProp as in f-AnoGAN
    lr_autoencoder: float = 1e-3  # Adam
    checkpoint_every: int = 50
    sample_every: int = 250
    log_every: int = 10
    seed: int = 0
    device: str = "auto"  # "auto": cuda if available, else cpu
    bf16: bool = True  # autocast, but only where the device has native bf16 (bf16_is_native)
    channels_last: bool = True
    num_threads: int = 1  # CPU threads for torch
    target_fpr: float = 0.05
    series_top_k: int = 3  # series score = mean of the top-k slice scores (score_volume's default)
    series_slices: int = 100  # typical series length assumed by the bootstrap series threshold

    def __post_init__(self) -> None:
        positive = (
            "batch_size",
            "checkpoint_every",
            "sample_every",
            "log_every",
            "num_threads",
            "series_top_k",
            "series_slices",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.gan_steps < 0 or self.encoder_steps < 0:
            raise ValueError("gan_steps and encoder_steps must be >= 0")
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if not 0 < self.target_fpr < 1:
            raise ValueError(f"target_fpr must be in (0, 1), got {self.target_fpr}")

    def as_json(self) -> dict:
        return {**asdict(self), "model": self.model.as_json(), "data": self.data.as_json()}

    @classmethod
    def from_json(cls, d: dict) -> ScorerTrainConfig:
        rest = {k: v for k, v in d.items() if k not in ("model", "data")}
        return cls(model=ScorerConfig(**d["model"]), data=ScorerDataConfig.from_json(d["data"]), **rest)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TrainState:
    model: FAnoGAN | ConvAutoencoder
    opt_d: torch.optim.Optimizer | None  # None for the autoencoder baseline
    opt_g: torch.optim.Optimizer | None
    opt_e: torch.optim.Optimizer  # izi_f encoder, or the whole autoencoder
    sampler: torch.Generator
    gan_step: int = 0
    encoder_step: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d else None,
            "opt_g": self.opt_g.state_dict() if self.opt_g else None,
            "opt_e": self.opt_e.state_dict(),
            "sampler": self.sampler.get_state(),
            "torch_rng": torch.get_rng_state(),
            "gan_step": self.gan_step,
            "encoder_step": self.encoder_step,
        }

    def load(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        for opt, key in ((self.opt_d, "opt_d"), (self.opt_g, "opt_g")):
            if opt is not None:
                opt.load_state_dict(ckpt[key])
        self.opt_e.load_state_dict(ckpt["opt_e"])
        self.sampler.set_state(ckpt["sampler"])
        torch.set_rng_state(ckpt["torch_rng"])
        self.gan_step, self.encoder_step = int(ckpt["gan_step"]), int(ckpt["encoder_step"])


def new_state(config: ScorerTrainConfig, device: torch.device) -> TrainState:
    torch.manual_seed(config.seed)
    sampler = torch.Generator().manual_seed(config.seed)
    if config.detector == "autoencoder":
        ae = ConvAutoencoder(config.model).to(device)
        if config.channels_last:
            ae = ae.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return TrainState(ae, None, None, torch.optim.Adam(ae.parameters(), lr=config.lr_autoencoder), sampler)
    model = FAnoGAN(config.model).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    betas = (0.0, 0.9)
    return TrainState(
        model=model,
        opt_d=torch.optim.Adam(model.critic.parameters(), lr=config.lr_gan, betas=betas),
        opt_g=torch.optim.Adam(model.generator.parameters(), lr=config.lr_gan, betas=betas),
        opt_e=torch.optim.RMSprop(model.encoder.parameters(), lr=config.lr_encoder),
        sampler=sampler,
    )


def _batch(data: SliceSet, state: TrainState, config: ScorerTrainConfig, device: torch.device):
    idx = torch.randint(len(data), (config.batch_size,), generator=state.sampler)
    x = data.images[idx].to(device)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, data.positions[idx].to(device)


def uses_bf16(config: ScorerTrainConfig, device: torch.device) -> bool:
    """bf16 was asked for and the device runs it natively (emulated bf16 is slower than fp32)."""
    return config.bf16 and bf16_is_native(device)


def _autocast(config: ScorerTrainConfig, device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(config, device))


def gan_iteration(state: TrainState, data: SliceSet, config: ScorerTrainConfig, device: torch.device) -> dict:
    """model.n_critic critic steps then one generator step."""
    assert isinstance(state.model, FAnoGAN) and state.opt_d is not None and state.opt_g is not None
    stats: dict[str, float] = {}
    with _autocast(config, device):
        for _ in range(config.model.n_critic):
            x, pos = _batch(data, state, config, device)
            stats = critic_step(state.model, state.opt_d, x, pos)
        stats |= generator_step(state.model, state.opt_g, pos, config.batch_size)
    state.gan_step += 1
    return stats


def encoder_iteration(state: TrainState, data: SliceSet, config: ScorerTrainConfig, device: torch.device) -> dict:
    x, pos = _batch(data, state, config, device)
    with _autocast(config, device):
        if isinstance(state.model, ConvAutoencoder):
            stats = autoencoder_step(state.model, state.opt_e, x)
        else:
            stats = encoder_step(state.model, state.opt_e, x, pos)
    state.encoder_step += 1
    return stats


def save_sample_grid(
    model: FAnoGAN | ConvAutoencoder, data: SliceSet, path: Path, phase: str, seed: int, n: int = 8
) -> None:
    """PNG: generated samples along the position range (gan) or real | G(E(x)) pairs (encoder)."""
    plt = pyplot()

    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    idx = torch.linspace(0, len(data) - 1, n).long()
    x, pos = data.images[idx].to(device), data.positions[idx].to(device)
    with torch.no_grad():
        if isinstance(model, ConvAutoencoder):
            rows = [x, model.reconstruct(x)]
        elif phase == "gan":
            z = torch.randn(n, model.config.latent_dim, generator=gen).to(device)
            rows = [model.generator(z, pos if model.config.conditional else None)]
        else:
            rows = [x, model.reconstruct(x, pos).x_rec]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.7 * len(rows)), squeeze=False)
    for r, images in enumerate(rows):
        for c in range(n):
            axes[r, c].imshow(images[c, 1].float().cpu().numpy(), cmap="gray", vmin=-1, vmax=1)
            axes[r, c].set_title(f"p={float(pos[c]):.2f}", fontsize=7)
            axes[r, c].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


class TrainingStopped(Exception):
    """``should_stop`` said stop (a cancelled job): the latest checkpoint was saved, nothing final was written."""


class RunFolder:
    """config.json, metrics.jsonl, samples/, checkpoints/ of one training run."""

    def __init__(self, run_dir: Path) -> None:
        self.root = run_dir
        self.checkpoints = run_dir / "checkpoints"
        self.samples = run_dir / "samples"
        for d in (self.root, self.checkpoints, self.samples):
            d.mkdir(parents=True, exist_ok=True)
        self.latest = self.checkpoints / "latest.pt"
        self.final = self.checkpoints / "final.pt"

    def log_metrics(self, record: dict) -> None:
        with (self.root / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")

    def write_config(self, config: ScorerTrainConfig) -> None:
        path = self.root / "config.json"
        text = json.dumps(config.as_json(), indent=2)
        if path.exists() and json.loads(path.read_text()) != json.loads(text):  # tuples come back as lists
            log.warning(
                "run folder %s has a different config.json; keeping the old one as config.prev.json",
                self.root,
            )
            path.replace(self.root / "config.prev.json")
        path.write_text(text)


def _metadata(config: ScorerTrainConfig, state: TrainState, data: SliceSet, phase: str) -> dict:
    return {
        "config": config.as_json(),
        "gan_step": state.gan_step,
        "encoder_step": state.encoder_step,
        "phase": phase,
        "data": describe(data),
        "licence_note": "research weights: trained on data that forbids commercial use and redistribution",
    }


def _run_phase(phase: str, total: int, state: TrainState, data: SliceSet, config: ScorerTrainConfig,
               folder: RunFolder, device: torch.device,
               should_stop: Callable[[], bool] | None = None) -> None:  # fmt: skip
    step_of = (lambda: state.gan_step) if phase == "gan" else (lambda: state.encoder_step)
    iterate = gan_iteration if phase == "gan" else encoder_iteration
    columns = [TextColumn(f"[bold]{phase}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[rate]:.2f} it/s {task.fields[info]}")]  # fmt: skip
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(phase, total=total, completed=step_of(), rate=0.0, info="")
        t0, s0 = time.perf_counter(), step_of()
        while step_of() < total:
            if should_stop is not None and should_stop():
                save_checkpoint(folder.latest, state.state_dict(), _metadata(config, state, data, phase))
                raise TrainingStopped(f"stopped at {phase} step {step_of()} of {total}")
            stats = iterate(state, data, config, device)
            step = step_of()
            rate = (step - s0) / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, completed=step, rate=rate, info=" ".join(f"{k}={v:.3g}" for k, v in stats.items()))
            if step % config.log_every == 0 or step == total:
                folder.log_metrics({"phase": phase, "step": step, "it_per_s": rate, "time": time.time(), **stats})
                if not bar.console.is_terminal:  # a background run: the bar only renders at the end
                    log.info("%s %d/%d %.3f it/s %s", phase, step, total, rate, stats)
            if step % config.sample_every == 0 or step == total:
                save_sample_grid(state.model, data, folder.samples / f"{phase}-{step:07d}.png", phase, config.seed)
            if step % config.checkpoint_every == 0 or step == total:
                save_checkpoint(folder.latest, state.state_dict(), _metadata(config, state, data, phase))


def calibrate(
    model: FAnoGAN | ConvAutoencoder, heldout: SliceSet, config: ScorerTrainConfig, device: torch.device
) -> dict:
    """Slice threshold at the target false-positive rate on held-out normal slices."""
    scores = predict_slices(model, heldout.images, heldout.positions, heldout.valid, device=device).slice_scores
    threshold = calibrate_threshold(scores, config.target_fpr)
    edges = [-0.5, -0.25, 0.0, 0.25, 0.5]  # normalised position from the lung base (x 300 mm)
    by_position = calibrate_by_position(scores, heldout.positions, edges, config.target_fpr)
    n_series = int(config.series_slices)
    return {
        "fpr": false_positive_rate(scores, threshold),  # achieved on the calibration slices
        "series_threshold": calibrate_series_threshold(scores, n_series, config.series_top_k, config.target_fpr),
        "series_threshold_method": f"bootstrap of held-out slice scores, series of {n_series} slices, "
        f"mean of top {config.series_top_k}; assumes independent slices (one held-out patient)",
        "by_position": {"bin_edges": edges, "thresholds": by_position, "min_per_bin": 20},
        "threshold": threshold,
        "target_fpr": config.target_fpr,
        "level": "slice",
        "heldout": describe(heldout),
        "heldout_score_quantiles": [float(q) for q in scores.quantile(torch.tensor([0.05, 0.5, 0.95]))],
    }


def train_scorer(config: ScorerTrainConfig, run_dir: Path, resume: bool = True,
                 should_stop: Callable[[], bool] | None = None) -> Path:  # fmt: skip
    """Train (or resume) a scorer in ``run_dir``; returns the final checkpoint's path. ``should_stop`` is
    asked before every step: True saves the latest checkpoint and raises ``TrainingStopped``."""
    torch.set_num_threads(config.num_threads)
    device = pick_device(config.device)
    folder = RunFolder(run_dir)
    folder.write_config(config)
    train = build_slice_set(config.data, "train", REPO_ROOT)
    state = new_state(config, device)
    precision = "bf16 autocast" if uses_bf16(config, device) else "fp32"
    if config.bf16 and precision == "fp32":
        precision += " (bf16 asked for, but this device has no native bf16: emulated bf16 is slower)"
    log.info("training on %s, %s", device, precision)
    if resume and folder.latest.exists():
        state.load(torch.load(folder.latest, map_location=device, weights_only=False)["state"])
        log.info(
            "resumed from %s at gan step %d, encoder step %d",
            folder.latest,
            state.gan_step,
            state.encoder_step,
        )
    if isinstance(state.model, FAnoGAN):
        _run_phase("gan", config.gan_steps, state, train, config, folder, device, should_stop)
        freeze_for_encoder(state.model)
    _run_phase("encoder", config.encoder_steps, state, train, config, folder, device, should_stop)
    heldout = build_slice_set(config.data, "heldout", REPO_ROOT)
    metadata = _metadata(config, state, train, "done") | {
        "calibration": calibrate(state.model, heldout, config, device)
    }
    folder.log_metrics({"phase": "calibration", **metadata["calibration"]})
    save_checkpoint(folder.final, state.state_dict(), metadata)
    write_card(folder.final)  # <name>.card.md beside the weights: data, licences, config, metrics
    return folder.final


def heldout_liver_roi(config: ScorerTrainConfig, segmenter: Path, roi: LiverRoi) -> torch.Tensor:
    """(N, 1, S, S) region of the held-out slices, in ``build_slice_set`` order: each held-out series
    segmented by ``segmenter`` as the worker does (``segment_mask``), then ``roi_valid``."""
    from workers.inference.segmenter import load_segmenter, segment_mask

    net, _ = load_segmenter(segmenter)
    parts = []
    for spec in config.data.heldout:
        volume = load_case_volume((REPO_ROOT / config.data.data_dir / spec.path).resolve())
        liver = segment_mask(net, volume.hu, volume.pixel_spacing_mm, volume.positions_mm)
        indices = selected_indices(spec, volume.hu.shape[0])
        parts.append(roi_valid(roi, liver, volume.hu, volume.pixel_spacing_mm, config.data.preprocess, indices))
    return torch.cat(parts)


def calibrate_checkpoint(
    checkpoint: Path,
    out: Path | None = None,
    device: str = "auto",
    segmenter: Path | None = None,
    erosion_mm: float = 3.0,
) -> Path:
    """Calibrate any checkpoint (e.g. an intermediate latest.pt) on the held-out normal split of
    its own data config; writes ``out`` (default: <name>-calibrated.pt beside it) and returns it.

    ``segmenter``: score inside that segmenter's liver (``liver_roi``); the region is stored with the
    threshold, and the worker then scores with the segmenter a series is pinned to. Without it the
    score looks at the whole view again (any stored region is dropped)."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    config = ScorerTrainConfig.from_json(ckpt["metadata"]["config"])
    model, metadata = load_scorer(checkpoint, device=pick_device(device))
    metadata = {k: v for k, v in metadata.items() if k != ROI_KEY}
    heldout = build_slice_set(config.data, "heldout", REPO_ROOT)
    if segmenter is not None:
        roi = LiverRoi(erosion_mm, file_sha256(segmenter))
        region = heldout.valid & heldout_liver_roi(config, segmenter, roi)
        # slices without liver always score 0 and can never be flagged: counting them would make the
        # false-positive rate look lower than it is on the slices that are really judged
        keep = region.flatten(1).any(1)
        if not bool(keep.any()):
            raise ValueError("the segmenter finds no liver in any held-out slice: nothing to calibrate on")
        heldout = SliceSet(heldout.images[keep], region[keep], heldout.positions[keep],
                           [c for c, k in zip(heldout.cases, keep.tolist(), strict=True) if k],
                           [i for i, k in zip(heldout.slice_indices, keep.tolist(), strict=True) if k])  # fmt: skip
        metadata[ROI_KEY] = roi.as_json()
    metadata = metadata | {"calibration": calibrate(model, heldout, config, next(model.parameters()).device)}
    target = out or checkpoint.with_name(f"{checkpoint.stem}-calibrated.pt")
    save_checkpoint(target, ckpt["state"], metadata)
    write_card(target)
    return target

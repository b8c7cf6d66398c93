"""Train the 2.5D liver segmenter; evaluate Dice on the held-out patient.

``train_segmenter(config, run_dir)`` is what the CLI calls. The run folder
holds config.json, metrics.jsonl, samples/*.png (held-out slices with the
reference contour in green and the prediction in red) and checkpoints/
(latest.pt written atomically every ``checkpoint_every`` steps, final.pt at
the end). ``resume=True`` continues from latest.pt (step, optimiser, schedule
and RNG states). Evaluation runs ``segment_volume`` on the held-out series'
own grid: Dice per slice (slices whose reference holds liver) and per series.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from app.core.plotting import pyplot
from models.input_checks import TRAINING_LIVER_HU_KEY
from models.metrics import dice
from models.segmenter import LiverSegmenter, SegmenterConfig
from workers.inference.checkpoint import save_checkpoint
from workers.inference.segmenter import segment_mask
from workers.training.feature_density import density_on
from workers.training.model_card import licence_of, write_card
from workers.training.scorer_training import RunFolder, TrainingStopped, pick_device
from workers.training.segmenter_data import (
    AugmentConfig,
    MaskedVolume,
    SegmenterDataConfig,
    SegmenterSlices,
    augment,
    build_training_slices,
    describe,
    load_masked_volume,
    training_liver_hu,
)

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SegmenterTrainConfig:
    model: SegmenterConfig = field(default_factory=SegmenterConfig)
    data: SegmenterDataConfig = field(default_factory=SegmenterDataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    batch_size: int = 16
    steps: int = 4000
    lr: float = 2e-3  # AdamW, cosine decay after a linear warm-up
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    liver_fraction: float = 0.7  # share of each batch drawn from slices that hold liver
    checkpoint_every: int = 50
    eval_every: int = 250
    log_every: int = 10
    seed: int = 0
    device: str = "auto"  # "auto": cuda if available, else cpu
    bf16: bool = False  # autocast for training steps; evaluation stays fp32
    channels_last: bool = True
    num_threads: int = 1

    def __post_init__(self) -> None:
        for name in ("batch_size", "steps", "checkpoint_every", "eval_every", "log_every", "num_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError(f"lr must be > 0 and warmup_steps >= 0, got {self.lr}, {self.warmup_steps}")
        if not 0 <= self.liver_fraction <= 1:
            raise ValueError(f"liver_fraction must be in [0, 1], got {self.liver_fraction}")

    def as_json(self) -> dict:
        return {**asdict(self), "model": self.model.as_json(), "data": self.data.as_json()}

    @classmethod
    def from_json(cls, d: dict) -> SegmenterTrainConfig:
        rest = {k: v for k, v in d.items() if k not in ("model", "data", "augment")}
        aug: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d["augment"].items()}
        return cls(
            model=SegmenterConfig.from_json(d["model"]),
            data=SegmenterDataConfig.from_json(d["data"]),
            augment=AugmentConfig(**aug),
            **rest,
        )


@dataclass
class TrainState:
    model: LiverSegmenter
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    sampler: torch.Generator
    step: int = 0
    last_eval: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "sampler": self.sampler.get_state(),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "last_eval": self.last_eval,
        }

    def load(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["opt"])
        self.sched.load_state_dict(ckpt["sched"])
        self.sampler.set_state(ckpt["sampler"])
        torch.set_rng_state(ckpt["torch_rng"])
        self.step, self.last_eval = int(ckpt["step"]), dict(ckpt.get("last_eval", {}))


def new_state(config: SegmenterTrainConfig, device: torch.device) -> TrainState:
    torch.manual_seed(config.seed)
    model = LiverSegmenter(config.model).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def schedule(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1 + float(np.cos(np.pi * min(progress, 1.0))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    return TrainState(model, opt, sched, torch.Generator().manual_seed(config.seed))


def sample_batch(data: SegmenterSlices, liver_idx: torch.Tensor, config: SegmenterTrainConfig,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(B, C, S, S) images and (B, 1, S, S) masks; ``liver_fraction`` of them from slices with liver."""
    n_liver = int(round(config.batch_size * config.liver_fraction)) if len(liver_idx) else 0
    idx = torch.cat([
        liver_idx[torch.randint(len(liver_idx), (n_liver,), generator=gen)],
        torch.randint(len(data), (config.batch_size - n_liver,), generator=gen),
    ])  # fmt: skip
    x, y = augment(data.images[idx], data.masks[idx], config.augment, gen)
    return x, y


def train_step(state: TrainState, x: torch.Tensor, y: torch.Tensor, loss_fn: DiceCELoss,
               config: SegmenterTrainConfig, device: torch.device) -> float:  # fmt: skip
    x, y = x.to(device), y.to(device)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    state.model.train()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
        logits = state.model(x)  # (B, 1, S, S)
    loss = loss_fn(logits.float(), y)
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    state.opt.step()
    state.sched.step()
    state.step += 1
    return loss.item()


def evaluate(model: LiverSegmenter, volume: MaskedVolume, name: str) -> tuple[dict[str, Any], np.ndarray]:
    """Dice per slice (reference holds liver) and per series on the series' own grid; also the mask.

    ``dice_dome``: the series Dice over the upper fifth of the reference liver's extent along the slice normal
    (the dome for an axial series; ``models.quality``'s ``fraction`` takes the same direction as cranial)."""
    t0 = time.perf_counter()
    was_training = model.training
    pred = segment_mask(model, volume.hu, volume.pixel_spacing_mm, volume.positions_mm)
    model.train(was_training)
    per_slice = dice(pred, volume.mask, axis=(1, 2))  # (Z,), NaN where both empty
    liver = np.asarray(volume.mask.reshape(len(pred), -1).any(1), dtype=bool)
    empty_pred_voxels = pred[~liver].sum()
    dome = dome_slices(np.asarray(volume.positions_mm, dtype=np.float64), liver)
    metrics = {
        "case": name,
        "dice_series": float(dice(pred, volume.mask)),
        "dice_per_slice_mean": float(np.mean(per_slice[liver])),
        "dice_per_slice_median": float(np.median(per_slice[liver])),
        "n_liver_slices": int(liver.sum()),
        "dice_dome": float(dice(pred[dome], volume.mask[dome])) if dome.any() else float("nan"),
        "false_positive_voxels_off_liver_slices": int(empty_pred_voxels),
        "eval_seconds": time.perf_counter() - t0,
    }
    return metrics, pred


def dome_slices(positions_mm: np.ndarray, liver: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """(Z,) bool: the slices with liver in the top ``fraction`` of the liver's extent along the normal."""
    if not liver.any():
        return np.zeros_like(liver)
    lo, hi = positions_mm[liver].min(), positions_mm[liver].max()
    return liver & (positions_mm >= hi - fraction * (hi - lo))


def save_overlay(volume: MaskedVolume, pred: np.ndarray, path: Path, n: int = 6) -> None:
    """PNG of ``n`` held-out slices across the liver: reference contour green, prediction red."""
    plt = pyplot()

    with_liver = np.flatnonzero(volume.mask.reshape(len(pred), -1).any(1))
    picks = with_liver[np.linspace(0, len(with_liver) - 1, n).astype(int)] if len(with_liver) else np.arange(n)
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.6))
    for ax, k in zip(np.atleast_1d(axes), picks, strict=False):
        ax.imshow(np.clip(volume.hu[k], -160, 240), cmap="gray")
        if volume.mask[k].any():
            ax.contour(volume.mask[k], levels=[0.5], colors="lime", linewidths=0.7)
        if pred[k].any():
            ax.contour(pred[k], levels=[0.5], colors="red", linewidths=0.7)
        ax.set_title(f"z={k} d={float(np.nan_to_num(dice(pred[k], volume.mask[k]))):.2f}", fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def licence_note(data: SegmenterDataConfig) -> str:
    """What the training cases' licences allow for the weights (the held-out case does not shape them: the
    final checkpoint is the last step's, never selected on its Dice)."""
    barred = sorted(c.name for c in data.train if not licence_of(c.name)[1])
    if barred:
        return f"research weights: trained on data that forbids redistribution ({', '.join(barred)})"
    return "trained only on data whose licence allows shipping the weights"


def _metadata(config: SegmenterTrainConfig, state: TrainState, data: SegmenterSlices) -> dict:
    return {
        "kind": "liver-segmenter",
        "config": config.as_json(),
        "step": state.step,
        "metrics": state.last_eval,
        "data": describe(data),
        "licence_note": licence_note(config.data),
    }


def _eval_and_log(state: TrainState, heldout: MaskedVolume, config: SegmenterTrainConfig, folder: RunFolder) -> None:
    metrics, pred = evaluate(state.model, heldout, config.data.heldout.name)
    state.last_eval = {**metrics, "step": state.step}
    folder.log_metrics({"kind": "eval", "step": state.step, "time": time.time(), **metrics})
    save_overlay(heldout, pred, folder.samples / f"heldout-{state.step:07d}.png")


def train_segmenter(config: SegmenterTrainConfig, run_dir: Path, resume: bool = True,
                    should_stop: Callable[[], bool] | None = None) -> Path:  # fmt: skip
    """Train (or resume) a segmenter in ``run_dir``; returns the final checkpoint's path. ``should_stop`` is
    asked before every step: True saves the latest checkpoint and raises ``TrainingStopped``."""
    torch.set_num_threads(config.num_threads)
    device = pick_device(config.device)
    folder = RunFolder(run_dir)
    folder.write_config(config)  # type: ignore[arg-type]  # duck-typed: needs as_json()
    data = build_training_slices(config.model, config.data, REPO_ROOT)
    heldout = load_masked_volume(config.data.heldout, (REPO_ROOT / config.data.data_dir).resolve())
    state = new_state(config, device)
    if resume and folder.latest.exists():
        state.load(torch.load(folder.latest, map_location=device, weights_only=False)["state"])
        log.info("resumed %s at step %d", folder.latest, state.step)
    liver_idx = torch.nonzero(data.masks.flatten(1).amax(1) > 0)[:, 0]
    loss_fn = DiceCELoss(sigmoid=True, batch=True)
    columns = [TextColumn("[bold]segmenter"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[rate]:.2f} it/s {task.fields[info]}")]  # fmt: skip
    with Progress(*columns) as bar:
        task = bar.add_task("train", total=config.steps, completed=state.step, rate=0.0, info="")
        t0, s0 = time.perf_counter(), state.step
        while state.step < config.steps:
            if should_stop is not None and should_stop():
                save_checkpoint(folder.latest, state.state_dict(), _metadata(config, state, data))
                raise TrainingStopped(f"stopped at step {state.step} of {config.steps}")
            x, y = sample_batch(data, liver_idx, config, state.sampler)
            loss = train_step(state, x, y, loss_fn, config, device)
            rate = (state.step - s0) / max(time.perf_counter() - t0, 1e-9)
            dice_now = state.last_eval.get("dice_series", float("nan"))
            bar.update(task, completed=state.step, rate=rate, info=f"loss={loss:.3f} heldout dice={dice_now:.3f}")
            if state.step % config.log_every == 0:
                lr = state.sched.get_last_lr()[0]
                folder.log_metrics({"kind": "train", "step": state.step, "loss": loss, "lr": lr, "it_per_s": rate,
                                    "time": time.time()})  # fmt: skip
                if not bar.console.is_terminal:  # a background run: the bar only renders at the end
                    log.info("segmenter %d/%d %.3f it/s loss=%.4f heldout dice=%.3f", state.step, config.steps, rate,
                             loss, dice_now)  # fmt: skip
            if state.step % config.eval_every == 0 or state.step == config.steps:
                _eval_and_log(state, heldout, config, folder)
            if state.step % config.checkpoint_every == 0 or state.step == config.steps:
                save_checkpoint(folder.latest, state.state_dict(), _metadata(config, state, data))
    metadata = _metadata(config, state, data)
    metadata[TRAINING_LIVER_HU_KEY] = training_liver_hu(config.data, REPO_ROOT)
    try:  # the gate's feature-distance signal (models.feature_density): the training slices' features
        metadata["feature_density"] = density_on(state.model, data).as_json()
    except ValueError as exc:
        log.warning("no feature density: %s", exc)
    save_checkpoint(folder.final, {"model": state.model.state_dict()}, metadata)
    write_card(folder.final)  # <name>.card.md beside the weights: data, licences, config, metrics
    return folder.final


def main(argv: list[str] | None = None) -> None:
    """``python -m workers.training.segmenter_training --run-dir runs/segmenter/NAME`` (resumes by default)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=None, help="override the config's steps")
    parser.add_argument("--fresh", action="store_true", help="ignore latest.pt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    config_path = args.run_dir / "config.json"
    config = SegmenterTrainConfig.from_json(json.loads(config_path.read_text())) if config_path.exists() else None
    config = config or SegmenterTrainConfig()
    if args.steps is not None:
        config = SegmenterTrainConfig.from_json({**config.as_json(), "steps": args.steps})
    print(train_segmenter(config, args.run_dir, resume=not args.fresh))


if __name__ == "__main__":
    main()

"""Train a patch scorer in the background: progress, checkpoints every few hundred steps, resume.

    .venv/bin/python -m workers.training.patch_training --run-dir runs/patch/fanogan-ship \
        --train totalseg-s0009 totalseg-example

Phases: f-AnoGAN ``gan`` (``gan_steps`` generator steps) then ``encoder`` (izi_f, G and D frozen, the
EMA generator in place of the live one); inpainting ``inpaint``; autoencoder ``ae``. ``run_dir`` holds
``config.json``, ``progress.jsonl`` (one line per ``log_every`` steps: step, rate, losses, ETA),
``checkpoints/latest.pt`` (everything needed to resume: a rerun of the same command continues) and,
when done, ``scorer.pt`` (the model as the worker loads it, kind ``patch-scorer``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.patch_gan import PatchGANConfig, build_patch_scorer
from models.patch_gan.grid import GridConfig
from models.patch_gan.steps import (
    autoencoder_step,
    ema_update,
    encoder_step,
    freeze_for_encoder,
    gan_step,
    inpaint_step,
)
from workers.inference.checkpoint import read_checkpoint, save_checkpoint
from workers.inference.patch_scorer import PATCH_KIND, ScoringConfig
from workers.training.patch_data import NORMAL_CASES, SHIPPABLE, PatchSampler, prepare_case

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PatchTrainConfig:
    model: PatchGANConfig = field(default_factory=PatchGANConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    train: tuple[str, ...] = SHIPPABLE  # names in patch_data.NORMAL_CASES
    data_dir: str = "../shared/data"
    gan_steps: int = 10_000  # generator steps (f-AnoGAN), or updates (inpainting, autoencoder)
    encoder_steps: int = 4_000
    batch_size: int = 64
    lr: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.9)
    ema_decay: float = 0.999
    augment: bool = True
    seed: int = 0
    threads: int = 2
    device: str = "auto"  # auto: CUDA when present, else the CPU
    log_every: int = 100
    checkpoint_every: int = 500

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"], d["grid"], d["scoring"] = self.model.as_json(), self.grid.as_json(), self.scoring.as_json()
        return d

    def phases(self) -> list[tuple[str, int]]:
        if self.model.detector == "fanogan":
            return [("gan", self.gan_steps), ("encoder", self.encoder_steps)]
        return [("inpaint" if self.model.detector == "inpaint" else "ae", self.gan_steps)]


class Trainer:
    """Model, EMA generator, optimisers and counters; ``state_dict`` is the resume checkpoint."""

    def __init__(self, config: PatchTrainConfig) -> None:
        torch.manual_seed(config.seed)
        self.config = config
        self.device = pick_device(config.device)
        self.model = build_patch_scorer(config.model).to(self.device)
        self.ema = copy.deepcopy(getattr(self.model, "generator", self.model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        lr, betas = config.lr, config.betas
        if config.model.detector == "autoencoder":
            self.opt_g = torch.optim.Adam(self.model.parameters(), lr * 5, betas=(0.9, 0.999))
            self.opt_d = None
        else:
            self.opt_g = torch.optim.Adam(self.model.generator.parameters(), lr, betas=betas)  # type: ignore[union-attr]
            self.opt_d = torch.optim.Adam(self.model.critic.parameters(), lr * 2, betas=betas)  # type: ignore[union-attr]
        self.opt_e = (
            torch.optim.Adam(self.model.encoder.parameters(), lr * 5, betas=(0.5, 0.999))  # type: ignore[union-attr]
            if config.model.detector == "fanogan"
            else None
        )
        self.steps = {name: 0 for name, _ in config.phases()}
        self.seconds = 0.0

    def state_dict(self) -> dict[str, Any]:
        opts = {
            k: o.state_dict() for k, o in (("g", self.opt_g), ("d", self.opt_d), ("e", self.opt_e)) if o is not None
        }
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opts": opts,
                "steps": self.steps, "seconds": self.seconds, "rng": torch.get_rng_state()}  # fmt: skip

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        for k, o in (("g", self.opt_g), ("d", self.opt_d), ("e", self.opt_e)):
            if o is not None:
                o.load_state_dict(state["opts"][k])
        self.steps, self.seconds = dict(state["steps"]), float(state["seconds"])
        torch.set_rng_state(state["rng"])

    def begin_encoder(self) -> None:
        """izi_f uses the averaged generator: copy it in, then freeze G and D."""
        self.model.generator.load_state_dict(self.ema.state_dict())  # type: ignore[union-attr]
        freeze_for_encoder(self.model)  # type: ignore[arg-type]

    def _batch(self, sampler: PatchSampler) -> tuple[torch.Tensor, torch.Tensor]:
        x, c = sampler.sample(self.config.batch_size)
        return x.to(self.device, non_blocking=True), c.to(self.device, non_blocking=True)

    def step(self, phase: str, sampler: PatchSampler) -> dict[str, float]:
        cfg = self.config
        m = self.model
        if phase == "gan":
            batches = [self._batch(sampler) for _ in range(cfg.model.n_critic)]
            stats = gan_step(m, self.opt_g, self.opt_d, batches, cfg.augment)  # type: ignore[arg-type]
            ema_update(self.ema, m.generator, cfg.ema_decay)  # type: ignore[union-attr,arg-type]
        elif phase == "encoder":
            stats = encoder_step(m, self.opt_e, *self._batch(sampler))  # type: ignore[arg-type]
        elif phase == "inpaint":
            stats = inpaint_step(m, self.opt_g, self.opt_d, *self._batch(sampler))  # type: ignore[arg-type]
            ema_update(self.ema, m.generator, cfg.ema_decay)  # type: ignore[union-attr,arg-type]
        else:
            stats = autoencoder_step(m, self.opt_g, self._batch(sampler)[0])  # type: ignore[arg-type]
            ema_update(self.ema, m, cfg.ema_decay)
        self.steps[phase] += 1
        return stats

    def scoring_model(self) -> torch.nn.Module:
        """The model the worker uses: the EMA generator (or EMA autoencoder) in place of the live one."""
        out = copy.deepcopy(self.model)
        if self.config.model.detector == "autoencoder":
            out.load_state_dict(self.ema.state_dict())
        else:
            out.generator.load_state_dict(self.ema.state_dict())  # type: ignore[union-attr]
        return out.eval()


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when present (the same command, larger settings: ``--width 32 --batch-size 256``), else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
    return torch.device(name)


def _metadata(config: PatchTrainConfig, trainer: Trainer, data: dict, phase: str) -> dict[str, Any]:
    names = set(config.train)
    shippable = names <= {*SHIPPABLE, "sample"}
    return {
        "kind": PATCH_KIND,
        "config": config.as_json(),
        "steps": dict(trainer.steps),
        "train_minutes": trainer.seconds / 60,
        "device": str(trainer.device),
        "phase": phase,
        "data": data,
        "licences": {n: NORMAL_CASES[n].licence for n in sorted(names)},
        "licence_note": "trained only on data whose licence allows shipping the weights"
        if shippable
        else "research weights: trained on data that forbids commercial use and redistribution; never commit",
    }


def train(config: PatchTrainConfig, run_dir: Path) -> Path:
    """Run (or resume) every phase; returns the path of ``scorer.pt``."""
    torch.set_num_threads(config.threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    latest, final = ckpt_dir / "latest.pt", run_dir / "scorer.pt"
    (run_dir / "config.json").write_text(json.dumps(config.as_json(), indent=2))
    cases = [prepare_case(NORMAL_CASES[n], Path(config.data_dir), config.grid) for n in config.train]
    sampler = PatchSampler(cases, config.model.patch_size, config.seed)
    trainer = Trainer(config)
    if latest.exists():
        trainer.load(read_checkpoint(latest)["state"])
        log.info("resumed from %s at %s", latest, trainer.steps)
    data = sampler.describe()
    with (run_dir / "progress.jsonl").open("a") as progress:
        for phase, total in config.phases():
            if phase == "encoder":
                trainer.begin_encoder()
            t0, s0 = time.perf_counter(), trainer.steps[phase]
            while trainer.steps[phase] < total:
                t_step = time.perf_counter()
                stats = trainer.step(phase, sampler)
                trainer.seconds += time.perf_counter() - t_step
                step = trainer.steps[phase]
                if step % config.log_every == 0 or step == total:
                    rate = (step - s0) / max(time.perf_counter() - t0, 1e-9)
                    eta = round((total - step) / max(rate, 1e-9))
                    losses = {k: round(v, 4) for k, v in stats.items()}
                    record = {"phase": phase, "step": step, "of": total, "steps_per_s": round(rate, 2), "eta_s": eta,
                              **losses}  # fmt: skip
                    progress.write(json.dumps(record) + "\n")
                    progress.flush()
                    log.info("%s", record)
                if step % config.checkpoint_every == 0 or step == total:
                    save_checkpoint(latest, trainer.state_dict(), _metadata(config, trainer, data, phase))
    save_checkpoint(final, {"model": trainer.scoring_model().state_dict()}, _metadata(config, trainer, data, "done"))
    return final


def config_from_args(args: argparse.Namespace) -> PatchTrainConfig:
    model = PatchGANConfig(detector=args.detector, conditional=not args.unconditioned, width=args.width)
    if args.wgan_gp:
        model = dataclasses.replace(model, adversarial_loss="wgan", spectral_norm=False, n_critic=5, gp_weight=10.0)
    batch, device = getattr(args, "batch_size", 64), getattr(args, "device", "auto")
    return PatchTrainConfig(model=model, train=tuple(args.train), data_dir=args.data_dir, gan_steps=args.steps,
                            encoder_steps=args.encoder_steps, seed=args.seed, threads=args.threads,
                            batch_size=batch, device=device)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--train", nargs="+", default=list(SHIPPABLE), choices=sorted(NORMAL_CASES))
    p.add_argument("--detector", default="fanogan", choices=("fanogan", "inpaint", "autoencoder"))
    p.add_argument("--unconditioned", action="store_true", help="the ablation: no position conditioning")
    p.add_argument("--wgan-gp", action="store_true", help="WGAN-GP as Schlegl et al. (5 critic steps, penalty 10)")
    p.add_argument("--width", type=int, default=PatchGANConfig.width)
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--encoder-steps", type=int, default=4_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--data-dir", default="../shared/data")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    print(train(config_from_args(args), args.run_dir))


if __name__ == "__main__":
    main()

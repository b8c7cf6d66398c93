"""The active-learning claim, simulated with the masks we have (issue #14 item 7).

The product's loop: the gate sends the slices it distrusts to a radiologist, whose contours retrain the
segmenter. Simulated here, per held-out test patient:

- **seed**: a segmenter trained on the TotalSegmentator sample only (``segmenter_folds.ALWAYS_TRAIN``);
- **pool**: the other patients with a liver mask, unlabelled until a slice is picked (its reference mask is
  then revealed, as a radiologist's contour would be);
- each round, a **strategy** spends ``budget`` slices among the pool slices where the current model finds
  liver (the slices the gate judges): ``gate`` (the highest fused failure risk, ``models.risk.FailureRisk``
  fit on the gate's leave-one-out tables of the pool patients only, never the test patient), ``uncertainty``
  (the highest boundary uncertainty, one signal) or ``random``;
- the model is fine-tuned on seed + labelled slices (half of each batch from the labelled ones), and its
  Dice on the test patient (never labelled, never picked from) is recorded after every round.

Every strategy starts from the same seed model and runs with several training seeds: the curve's noise.
``active_learning_report`` turns ``results.jsonl`` into the report.

    python -m workers.evaluation.active_learning --out runs/active-learning --test ircadb-01
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss

from models.metrics import dice
from models.risk import FEATURES, FailureRisk, FailureRule
from models.segmenter import LiverSegmenter
from workers.inference.checkpoint import read_checkpoint
from workers.inference.engine import bf16_is_native
from workers.inference.quality import segment_with_quality
from workers.inference.segmenter import segment_mask
from workers.training.risk_fit import fit_failure_risk, pool
from workers.training.scorer_training import pick_device
from workers.training.segmenter_data import (
    MaskedVolume,
    SegmenterDataConfig,
    SegmenterSlices,
    augment,
    build_training_slices,
    load_masked_volume,
    prepare_masked_case,
)
from workers.training.segmenter_folds import ALWAYS_TRAIN, PATIENTS, fold_config
from workers.training.segmenter_training import (
    SegmenterTrainConfig,
    TrainState,
    new_state,
    train_segmenter,
    train_step,
)

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
STRATEGIES = ("gate", "uncertainty", "random")
# The gate's features without the anomaly score and the feature distance: the simulation re-scores the pool
# every round with a seed model that has no feature density, and the anomaly signal carried the least
# (reports/gate: AUROC 0.56 alone).
GATE_FEATURES = tuple(f for f in FEATURES if f not in ("anomaly", "feature_distance"))


@dataclass(frozen=True)
class SimulationConfig:
    test: str = "ircadb-01"
    rounds: int = 4
    budget: int = 16  # slices labelled per round
    seed_steps: int = 2000  # the seed model, TotalSegmentator sample only
    round_steps: int = 400  # fine-tuning after each round
    seeds: tuple[int, ...] = (0, 1, 2)
    strategies: tuple[str, ...] = STRATEGIES
    risk_tables: str = "runs/gate-lopo"  # the gate's leave-one-out tables: the risk model's training data
    data_dir: str = "../shared/data"

    def __post_init__(self) -> None:
        if self.test not in PATIENTS:
            raise ValueError(f"unknown test patient {self.test!r}; one of {sorted(PATIENTS)}")
        unknown = set(self.strategies) - set(STRATEGIES)
        if unknown:
            raise ValueError(f"unknown strategies {sorted(unknown)}; known: {STRATEGIES}")
        if min(self.rounds, self.budget, self.seed_steps, self.round_steps) < 1 or not self.seeds:
            raise ValueError("rounds, budget, seed_steps and round_steps must be >= 1, and seeds non-empty")

    @property
    def pool_patients(self) -> tuple[str, ...]:
        return tuple(p for p in PATIENTS if p != self.test)


@dataclass
class PoolCase:
    name: str
    volume: MaskedVolume  # series grid: for the quality pass
    images: torch.Tensor  # (Z, C, S, S) model grid: for training
    masks: torch.Tensor  # (Z, 1, S, S)


def train_config(config: SimulationConfig, steps: int, seed: int, bf16: bool) -> SegmenterTrainConfig:
    """The folds' model and schedule; data: the TotalSegmentator sample only."""
    base = fold_config(config.test, steps=steps, data_dir=config.data_dir, bf16=bf16)
    data = SegmenterDataConfig(data_dir=config.data_dir, cache_dir=base.data.cache_dir, train=ALWAYS_TRAIN,
                               heldout=PATIENTS[config.test])  # fmt: skip
    return replace(base, data=data, seed=seed)


def gate_risk(config: SimulationConfig, rule: FailureRule) -> FailureRisk:
    """The fused risk fit on the pool patients' leave-one-out tables (the test patient's is never read)."""
    tables = {}
    for name in config.pool_patients:
        path = REPO / config.risk_tables / f"{name}.npz"
        if not path.exists():
            raise FileNotFoundError(f"{path}: run `gatekeeper evaluate-failure-gate` first (the gate's tables)")
        with np.load(path) as z:
            tables[name] = {k: z[k] for k in z.files}
    signals, failed = pool(tables, rule)
    return fit_failure_risk(signals, failed, names=GATE_FEATURES)


def pick(strategy: str, scores: dict[str, np.ndarray], candidates: dict[str, np.ndarray], budget: int,
         rng: np.random.Generator) -> list[tuple[str, int]]:  # fmt: skip
    """``budget`` (case, slice) pairs among ``candidates`` (case -> bool (Z,)), highest score first."""
    pairs = [(c, int(z)) for c, m in candidates.items() for z in np.flatnonzero(m)]
    if strategy == "random" or not pairs:
        order = rng.permutation(len(pairs))
    else:
        values = np.array([scores[c][z] for c, z in pairs])
        order = np.argsort(-values, kind="stable")
    return [pairs[i] for i in order[:budget]]


def fine_tune(state: TrainState, seed_data: SegmenterSlices, labelled: SegmenterSlices, steps: int,
              config: SegmenterTrainConfig, device: torch.device) -> None:  # fmt: skip
    """``steps`` steps at a constant learning rate (a tenth of the folds' peak): half of each batch from the
    labelled slices, half from the seed data (70 % of those with liver)."""
    state.sched = torch.optim.lr_scheduler.LambdaLR(state.opt, lambda _step: 0.1)
    loss_fn = DiceCELoss(sigmoid=True, batch=True)
    seed_liver = torch.nonzero(seed_data.masks.flatten(1).amax(1) > 0)[:, 0]
    half = config.batch_size // 2
    for _ in range(steps):
        i_lab = torch.randint(len(labelled), (half,), generator=state.sampler)
        i_seed = seed_liver[torch.randint(len(seed_liver), (config.batch_size - half,), generator=state.sampler)]
        x = torch.cat([labelled.images[i_lab], seed_data.images[i_seed]])
        y = torch.cat([labelled.masks[i_lab], seed_data.masks[i_seed]])
        x, y = augment(x, y, config.augment, state.sampler)
        train_step(state, x, y, loss_fn, config, device)


def test_dice(model: LiverSegmenter, volume: MaskedVolume) -> dict[str, float]:
    model.eval()
    pred = segment_mask(model, volume.hu, volume.pixel_spacing_mm, volume.positions_mm)
    ref = volume.mask.astype(bool)
    per_slice = dice(pred, ref, axis=(1, 2))
    liver = ref.reshape(len(ref), -1).any(1)
    return {"series_dice": float(dice(pred, ref)), "slice_dice_median": float(np.median(per_slice[liver])),
            "slice_dice_mean": float(np.mean(per_slice[liver]))}  # fmt: skip


def pool_scores(model: LiverSegmenter, cases: dict[str, PoolCase],
                risk: FailureRisk | None) -> tuple[dict, dict, dict]:  # fmt: skip
    """Per pool case: the candidates (slices with predicted liver), gate risk (if a model), boundary uncertainty."""
    model.eval()
    candidates, gate, uncertain = {}, {}, {}
    with torch.inference_mode():
        for name, case in cases.items():
            v = case.volume
            q = segment_with_quality(model, v.hu, v.pixel_spacing_mm, v.positions_mm)
            found = q.signals["area_cm2"] > 0
            # no liver found at all: the gate sends the whole series to a radiologist, every slice a candidate
            candidates[name] = found if found.any() else np.ones_like(found)
            if risk is not None:
                gate[name] = risk.predict(q.signals)
            uncertain[name] = np.asarray(q.signals["uncertain_ratio"], dtype=np.float64)
    return candidates, gate, uncertain


def labelled_slices(cases: dict[str, PoolCase], picked: list[tuple[str, int]]) -> SegmenterSlices:
    return SegmenterSlices(
        images=torch.stack([cases[c].images[z] for c, z in picked]),
        masks=torch.stack([cases[c].masks[z] for c, z in picked]),
        cases=[c for c, _ in picked],
        slice_indices=[z for _, z in picked],
    )


def load_pool(config: SimulationConfig, seg: SegmenterTrainConfig) -> dict[str, PoolCase]:
    data_dir = (REPO / config.data_dir).resolve()
    cases = {}
    for name in config.pool_patients:
        case = PATIENTS[name]
        arrays = prepare_masked_case(case, seg.model, seg.data, REPO)  # every slice, in order
        if not np.array_equal(arrays["slice_indices"], np.arange(len(arrays["slice_indices"]))):
            raise ValueError(f"{name}: expected every slice on the model grid")
        images, masks = torch.from_numpy(arrays["images"]).float(), torch.from_numpy(arrays["masks"]).float()
        cases[name] = PoolCase(name, load_masked_volume(case, data_dir), images, masks)
    return cases


def seed_model(config: SimulationConfig, out: Path, bf16: bool) -> tuple[dict, SegmenterSlices]:
    """Train (or resume, or load) the seed segmenter with the project's training loop: the TotalSegmentator
    sample only, the folds' model and schedule; its run folder is ``out/seed``."""
    seg = train_config(config, config.seed_steps, 0, bf16)
    final = out / "seed" / "checkpoints" / "final.pt"
    if not final.exists():
        final = train_segmenter(seg, out / "seed")
    return read_checkpoint(final)["state"]["model"], build_training_slices(seg.model, seg.data, REPO)


def done_runs(results: Path) -> set[tuple[str, int]]:
    if not results.exists():
        return set()
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {(r["strategy"], r["seed"]) for r in rows if r.get("final")}


def simulate(config: SimulationConfig, out: Path) -> Path:
    """Every strategy x seed, resumable by (strategy, seed): a finished run is skipped. Returns results.jsonl."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))
    device = pick_device("auto")
    bf16 = bf16_is_native(device)
    torch.set_num_threads(1)
    seed_weights, seed_data = seed_model(config, out, bf16)
    rule = FailureRule()
    risk = gate_risk(config, rule) if "gate" in config.strategies else None
    seg = train_config(config, config.round_steps, 0, bf16)
    cases = load_pool(config, seg)
    test_volume = load_masked_volume(PATIENTS[config.test], (REPO / config.data_dir).resolve())
    results = out / "results.jsonl"
    finished = done_runs(results)
    for seed in config.seeds:
        for strategy in config.strategies:
            if (strategy, seed) in finished:
                continue
            run_one(strategy, seed, config, seg, seed_weights, seed_data, cases, risk, test_volume, device, results)
    return results


def run_one(strategy: str, seed: int, config: SimulationConfig, seg: SegmenterTrainConfig, seed_weights: dict,
            seed_data: SegmenterSlices, cases: dict[str, PoolCase], risk: FailureRisk | None, test_volume: MaskedVolume,
            device: torch.device, results: Path) -> None:  # fmt: skip
    """One strategy, one training seed: rounds of pick, reveal, fine-tune, measure; a line per round."""
    seg = replace(seg, seed=seed)
    state = new_state(seg, device)
    state.model.load_state_dict(seed_weights)
    rng = np.random.default_rng(seed)
    picked: list[tuple[str, int]] = []
    rows = []
    for rnd in range(config.rounds + 1):
        t0 = time.perf_counter()
        if rnd > 0:
            candidates, gate, uncertain = pool_scores(state.model, cases, risk)
            for name, taken in ((c, z) for c, z in picked):
                candidates[name][taken] = False
            scores = gate if strategy == "gate" else uncertain
            new = pick(strategy, scores, candidates, config.budget, rng)
            picked += new
            if picked:
                labelled = labelled_slices(cases, picked)
                fine_tune(state, seed_data, labelled, config.round_steps, seg, device)
        metrics = test_dice(state.model, test_volume)
        row = {"strategy": strategy, "seed": seed, "round": rnd, "labelled": len(picked), **metrics,
               "picked_per_case": {c: sum(1 for p, _ in picked if p == c) for c in cases},
               "seconds": time.perf_counter() - t0, "final": rnd == config.rounds}  # fmt: skip
        rows.append(row)
        log.info("%s seed %d round %d: %d labelled, test series Dice %.3f", strategy, seed, rnd, len(picked),
                 metrics["series_dice"])  # fmt: skip
    with results.open("a") as f:  # whole runs only: a crash mid-run leaves no partial curve to resume into
        for row in rows:
            f.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Simulate the active-learning loop for one test patient (resumes finished strategy x seed runs)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/active-learning"))
    parser.add_argument("--test", default=SimulationConfig.test, choices=sorted(PATIENTS))
    parser.add_argument("--rounds", type=int, default=SimulationConfig.rounds)
    parser.add_argument("--budget", type=int, default=SimulationConfig.budget)
    parser.add_argument("--seed-steps", type=int, default=SimulationConfig.seed_steps)
    parser.add_argument("--round-steps", type=int, default=SimulationConfig.round_steps)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SimulationConfig.seeds))
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = SimulationConfig(test=args.test, rounds=args.rounds, budget=args.budget, seed_steps=args.seed_steps,
                              round_steps=args.round_steps, seeds=tuple(args.seeds),
                              strategies=tuple(args.strategies))  # fmt: skip
    print(simulate(config, args.out / args.test))


if __name__ == "__main__":
    main()

"""Leave-one-normal-patient-out evaluation of the patch scorers against the baselines, on real CT.

For each fold, one normal-liver patient is held out of training (``runs/patch/<fold>-<detector>``):
- **position-matched lesions**: real tumours of other patients (``ircadb-01``, ``ircadb-17``) cut
  along their masks and transplanted into the held-out patient's normal liver at the same distance
  from the lung base (``workers.evaluation.cases.make_lesion_edits``), each scored against the same
  slice without the lesion (pair AUROC), and per pixel inside the liver (pixel AUROC);
- **synthetic anomalies** in the same liver: Gaussian blobs (+-100 HU), local elastic deformations,
  metal discs (``make_synthetic_edits``);
- **normal slices** of the held-out patient, for the false-positive rate at a threshold calibrated on
  *other* patients (``calibration``).
The scorer looks inside the ground-truth liver here (the scorer's quality, apart from the segmenter's;
the gate evaluation pairs it with the segmenter's own mask).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.body_position import find_body_position
from models.patch_gan.grid import GridConfig, LiverGrid, grid_images, mask_to_grid
from models.patch_gan.score import scoring_region, slice_scores
from workers.evaluation.cases import Case, Edit, EvalConfig, make_lesion_edits, make_synthetic_edits
from workers.evaluation.patchcore_eval import PatchCoreMemory, build_memory, edits_heat, series_heat
from workers.inference.patch_scorer import ScoringConfig, heat_of_grid, load_patch_scorer
from workers.inference.segmenter import load_segmenter
from workers.training.patch_data import NORMAL_CASES, PatchCase, PreparedCase, prepare_case
from workers.training.scorer_data import load_nifti_volume

log = logging.getLogger(__name__)

# donor -> its tumour slice range (MANIFEST): lesions to transplant
DONORS = {"ircadb-01": (48, 123), "ircadb-17": (78, 113)}


@dataclass
class Detector:
    name: str
    model: torch.nn.Module | None  # None: the training-free deviation rule (or PatchCore, below)
    scoring: ScoringConfig
    patch: int = 32
    patchcore: PatchCoreMemory | None = None  # its maps come from HU through the segmenter, not the grid


@dataclass
class Host:
    """A held-out normal patient: the case (for edits), its grid and its normal slices."""

    case: Case
    grid: LiverGrid
    normal: np.ndarray  # (Z,) bool


@functools.lru_cache(maxsize=8)
def prepared_case(spec: PatchCase, data_dir: Path, grid_config: GridConfig) -> PreparedCase:
    """``prepare_case``, once per case in an evaluation: each fold reads its host, the donors and PatchCore's
    memory cases from the same few series (1-3 s each to read and grid). Callers treat the result as read-only."""
    return prepare_case(spec, data_dir, grid_config)


@functools.lru_cache(maxsize=8)
def load_eval_case(data_dir: Path, name: str) -> Case:
    """Any case of ``patch_data.NORMAL_CASES`` or a donor, with tumour masks where the data has them (cached
    like ``prepared_case``: read-only)."""
    spec = NORMAL_CASES[name]
    root = data_dir / "ct" / name / "masks"
    prepared = prepared_case(spec, data_dir, GridConfig())
    tumour_path = root / "tumor.nii.gz"
    tumour = load_nifti_volume(tumour_path).hu > 0.5 if tumour_path.exists() else np.zeros_like(prepared.liver_mask)
    labels_path = root / "labels.nii.gz"
    liver_only = (
        np.rint(load_nifti_volume(labels_path).hu) == 1 if labels_path.exists() else prepared.liver_mask & ~tumour
    )
    body = find_body_position(prepared.hu, prepared.spacing, prepared.positions_mm)
    return Case(
        name, prepared.hu, prepared.spacing, prepared.positions_mm, body, prepared.liver_mask, tumour, liver_only
    )


def load_host(data_dir: Path, name: str, grid_config: GridConfig) -> Host:
    prepared = prepared_case(NORMAL_CASES[name], data_dir, grid_config)
    return Host(load_eval_case(data_dir, name), prepared.grid, prepared.normal)


def edited_grid(host: Host, edits: list[Edit], config: GridConfig) -> tuple[LiverGrid, torch.Tensor]:
    """A pseudo-series of the edited centre slices (one per edit) on the host's grid, and their regions."""
    case, g = host.case, host.grid
    images, regions = [], []
    for e in edits:
        slab = e.slices(case)
        ks = sorted(slab)
        hu = np.stack([slab[k] for k in ks])
        images.append(
            grid_images(hu, case.positions_mm[ks], g.box, g.liver_median_hu, config, case.positions_mm[[e.index]])
        )
        regions.append(mask_to_grid(e.full_region(case), g.box) >= 0.5)
    idx = [e.index for e in edits]
    pseudo = LiverGrid(
        images=torch.cat(images),
        liver=g.liver[idx],
        conditions=g.conditions[idx],
        liver_median_hu=g.liver_median_hu,
        box=g.box,
        liver_slices=g.liver_slices[idx],
    )
    return pseudo, torch.stack(regions)


def slice_heat(
    detector: Detector, grid: LiverGrid, heat: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(heat, scoring region, slice scores) of a grid; ``heat`` given: that map (PatchCore's) is scored."""
    if heat is None:
        heat = heat_of_grid(detector.model, grid, detector.scoring, detector.patch)  # type: ignore[arg-type]
    region = scoring_region(grid.liver, int(round(detector.scoring.erosion_mm)))
    return heat, region, slice_scores(heat, region, detector.scoring.top_k).numpy()


def from_liver_dome(case: Case) -> Case:
    """The case with its position measured from its liver's dome (mm, cranial positive), for matching levels.

    The lung-base landmark (``models.body_position``) puts ``ircadb-07``'s liver 57-212 mm *above* the lung
    base (its large abdominal mass and bowel gas mislead it), so lesions cannot be matched by it there;
    the distance below the dome of the reference liver is anatomical in every case with a whole liver.
    """
    present = np.flatnonzero(case.liver.reshape(case.liver.shape[0], -1).any(1))
    dome_mm = float(case.positions_mm[present[-1]])
    body = dataclasses.replace(case.body, position_mm=np.asarray(case.positions_mm, dtype=np.float64) - dome_mm)
    return dataclasses.replace(case, body=body)


def make_tests(
    host: Host, data_dir: Path, cfg: EvalConfig, max_pairs: int, synthetic_slices: int
) -> dict[str, list[Edit]]:
    """Lesion edits from every donor that is not the host, and synthetic edits, on the host's normal slices."""
    normal_idx = [int(k) for k in np.flatnonzero(host.normal)]
    tests: dict[str, list[Edit]] = {"lesion": []}
    for donor_name, tumour_range in DONORS.items():
        if donor_name == host.case.name:
            continue
        donor, recipient = from_liver_dome(load_eval_case(data_dir, donor_name)), from_liver_dome(host.case)
        try:
            made = make_lesion_edits(
                donor, recipient, tumour_range, normal_idx, cfg.position_tolerance_mm, max_pairs, cfg, "lesion"
            )
            for e in made:
                e.info["donor"] = donor_name
            tests["lesion"] += made
        except ValueError as exc:  # slice spacings differ: the slab transplant cannot map slices
            log.warning("%s -> %s: no lesion transplant: %s", donor_name, host.case.name, exc)
    rng = np.random.default_rng(cfg.seed)
    chosen = sorted(rng.choice(normal_idx, size=min(synthetic_slices, len(normal_idx)), replace=False).tolist())
    for e in make_synthetic_edits(host.case, chosen, 1, cfg):
        tests.setdefault(e.test, []).append(e)
    return tests


def detectors_for(fold: str, runs: Path, detectors: list[str], scoring: ScoringConfig) -> list[Detector]:
    out = [Detector("deviation", None, scoring)]
    for name in detectors:
        path = runs / f"{fold}-{name}" / "scorer.pt"
        if not path.exists():
            log.warning("fold %s: %s not trained (%s missing): left out", fold, name, path)
            continue
        model, meta = load_patch_scorer(path)
        out.append(
            Detector(name, model, ScoringConfig(**meta["config"]["scoring"]), meta["config"]["model"]["patch_size"])
        )
    return out


def patchcore_detector(
    host_name: str, data_dir: Path, segmenter: Path, grid_config: GridConfig, levels: tuple[int, ...] = (1, 2),
    coreset_fraction: float = 0.1,
) -> Detector:  # fmt: skip
    """PatchCore on ``segmenter``'s encoder, its memory from every normal case of the MANIFEST but the host."""
    model, _ = load_segmenter(segmenter)
    others = [n for n in NORMAL_CASES if n not in (host_name, "sample")]
    cases = [prepared_case(NORMAL_CASES[n], data_dir, grid_config) for n in others]
    memory = build_memory(model, cases, levels, coreset_fraction=coreset_fraction)
    return Detector("patchcore", None, ScoringConfig(), patchcore=memory)


def evaluate_fold(host: Host, tests: dict[str, list[Edit]], detectors: list[Detector], grid_config: GridConfig) -> dict:
    """Per detector: base slice scores of every liver slice, and per test the scores and pixel maps."""
    out: dict = {
        "host": host.case.name,
        "normal_slices": [int(k) for k in np.flatnonzero(host.normal)],
        "detectors": {},
    }
    pseudo = {t: edited_grid(host, edits, grid_config) for t, edits in tests.items() if edits}
    examples: dict = {}  # a few edited slices with each detector's heat, for the report's figure
    for t, (grid, lesion) in pseudo.items():
        big = [i for i, e in enumerate(tests[t]) if e.info.get("bin", ">=15") == ">=15"][:1]
        if big:
            examples[t] = {"image": grid.images[big[0], 1].numpy(), "region": lesion[big[0]].numpy(),
                           "liver": grid.liver[big[0]].numpy(), "heat": {}}  # fmt: skip
    for det in detectors:
        pc = det.patchcore
        if pc is not None:
            host_heat, seg_box, shift = series_heat(pc, host.case, host.grid.box)
        heat, region, base = slice_heat(det, host.grid, host_heat if pc else None)
        rec: dict = {"base_scores": base.tolist(), "tests": {}}
        if pc is not None:
            rec["memory"] = pc.fitted_on
        for t, (grid, lesion) in pseudo.items():
            edits = tests[t]
            edited = edits_heat(pc, host.case, edits, host.grid.box, seg_box, shift) if pc else None
            h, r, mod = slice_heat(det, grid, edited)
            if t in examples:
                first = next(i for i, e in enumerate(edits) if e.info.get("bin", ">=15") == ">=15")
                examples[t]["heat"][det.name] = h[first].numpy()
            idx = [e.index for e in edits]
            inside = r.numpy()
            rec["tests"][t] = {
                "modified": mod.tolist(),
                "base": base[idx].tolist(),
                "bins": [e.info.get("bin", "") for e in edits],
                # bootstrap groups: one donor tumour (lesions) or one host slice (synthetic)
                "groups": [
                    f"{e.info['donor']}:{e.info['component']}" if "donor" in e.info else f"slice:{e.index}"
                    for e in edits
                ],
                # pixel AUROC inputs: heat inside the scoring region, lesion pixels positive
                "pixel_heat": h.numpy()[inside].astype(np.float32),
                "pixel_positive": lesion.numpy()[inside],
                "pixel_base_heat": heat.numpy()[idx][inside].astype(np.float32),
            }
        out["detectors"][det.name] = rec
        log.info("%s on %s: done", det.name, host.case.name)
    out["examples"] = examples
    return out

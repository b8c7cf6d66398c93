"""The PatchCore baseline on the committed sample study (Apache-2.0 CT) through the shipped segmenter's encoder.

A memory built from the sample's own normal slices (no coreset thinning) must give a map of zero inside
its liver, since every feature there is in the memory; a bright disc of metal placed in the liver must raise
the map there and nowhere far from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli.demo_models import SAMPLE_DIR, shipped
from models.patch_gan.grid import GridConfig, mask_to_grid
from models.patch_gan.score import scoring_region
from workers.evaluation.cases import EvalConfig, make_synthetic_edits
from workers.evaluation.patch_eval import load_host
from workers.evaluation.patchcore_eval import build_memory, edits_heat, series_heat
from workers.inference.segmenter import load_segmenter
from workers.training.patch_data import NORMAL_CASES, prepare_case


@pytest.fixture(scope="module")
def sample():
    model, _ = load_segmenter(shipped("segmenter"))
    host = load_host(Path(SAMPLE_DIR), "sample", GridConfig())
    prepared = prepare_case(NORMAL_CASES["sample"], Path(SAMPLE_DIR), GridConfig())
    return model, host, prepared


def test_memorised_liver_scores_zero_and_metal_raises_the_map(sample) -> None:
    model, host, prepared = sample
    memory = build_memory(model, [prepared], coreset_fraction=1.0)
    assert memory.bank.shape[1] == 32 + 64  # levels 1 and 2 of the shipped encoder
    heat, box, shift = series_heat(memory, host.case, host.grid.box)
    assert heat.shape == host.grid.liver.shape
    inside = scoring_region(host.grid.liver, 3) & torch.as_tensor(prepared.normal)[:, None, None]
    assert inside.any()
    assert float(heat[inside].abs().max()) < 1e-2 * float(memory.bank.norm(dim=1).median())  # measured 0.006 / 5.6

    k = int(np.flatnonzero(prepared.normal)[len(np.flatnonzero(prepared.normal)) // 2])
    edits = [e for e in make_synthetic_edits(host.case, [k], 1, EvalConfig(metal_radius_mm=12.0)) if e.test == "metal"]
    assert edits, "no room for the metal disc in the sample's liver"
    edited = edits_heat(memory, host.case, edits, host.grid.box, box, shift)[0]
    disc = mask_to_grid(edits[0].full_region(host.case), host.grid.box) >= 0.5
    assert disc.any()
    assert float(edited[disc].mean()) > 0.1 * float(memory.bank.norm(dim=1).median())
    far = inside[k] & ~disc  # the rest of that slice's liver (measured: 1.05 against 6.7 in the disc)
    assert float(edited[disc].mean()) > 3 * float(edited[far].mean())

"""Fit a segmenter's feature density (``models.feature_density``) on its own training slices.

``train_segmenter`` does this at the end of every training, so the final checkpoint carries
``metadata["feature_density"]``; for a checkpoint trained before that existed:

    python -m workers.training.feature_density runs/segmenter-lopo/ircadb-01/checkpoints/final.pt

rewrites the checkpoint in place (atomically) with the density fitted on the slices its configuration names
(those holding liver: the distribution the gate compares judged slices with). Its sha256 changes: a new
version for the registry.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from models.feature_density import FeatureDensity, fit_feature_density
from models.segmenter import LiverSegmenter
from workers.inference.checkpoint import read_checkpoint, save_checkpoint
from workers.inference.segmenter import load_segmenter, model_grid_probabilities_and_features
from workers.training.model_card import write_card
from workers.training.segmenter_data import SegmenterDataConfig, SegmenterSlices, build_training_slices

REPO_ROOT = Path(__file__).resolve().parents[2]


def density_on(model: LiverSegmenter, data: SegmenterSlices) -> FeatureDensity:
    """The density of the bottleneck features of the training slices that hold liver."""
    liver = (data.masks.flatten(1).amax(1) > 0).numpy()
    if liver.sum() < 3:
        raise ValueError(f"need at least 3 training slices with liver for a feature density, got {int(liver.sum())}")
    _, feats = model_grid_probabilities_and_features(model, data.images[liver])
    density = fit_feature_density(feats)
    cases = sorted(set(np.asarray(data.cases)[liver].tolist()))
    return FeatureDensity(density.mean, density.components, density.variances, {**density.fitted_on, "cases": cases})


def add_feature_density(checkpoint: Path) -> FeatureDensity:
    model, metadata = load_segmenter(checkpoint)
    data = SegmenterDataConfig.from_json(metadata["config"]["data"])
    density = density_on(model, build_training_slices(model.config, data, REPO_ROOT))
    ckpt = read_checkpoint(checkpoint)
    save_checkpoint(checkpoint, ckpt["state"], {**ckpt["metadata"], "feature_density": density.as_json()})
    write_card(checkpoint)  # the card names the file's sha256, which just changed
    return density


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    args = parser.parse_args(argv)
    for path in args.checkpoints:
        density = add_feature_density(path)
        print(f"{path}: feature density on {density.fitted_on['slices']} slices, {len(density.variances)} components")


if __name__ == "__main__":
    main()

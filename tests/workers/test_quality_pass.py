"""segment_with_quality: the feature-distance signal appears exactly when the segmenter carries a density."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.feature_density import fit_feature_density
from models.segmenter import LiverSegmenter, SegmenterConfig, to_model_grid
from models.transforms import PreprocessConfig
from workers.inference.quality import density_of, rolled_channels_last, segment_with_quality
from workers.inference.segmenter import model_grid_probabilities_and_features


def tiny_case(seed: int, hu_sd: float) -> tuple[LiverSegmenter, SegmenterConfig, np.ndarray, np.ndarray]:
    """An untrained tiny segmenter and a 6-slice random series (3 mm apart)."""
    torch.manual_seed(seed)
    config = SegmenterConfig(preprocess=PreprocessConfig(size=32, pixel_mm=4.0), channels=(4, 8), strides=(2,),
                             head_channels=2, context=1, prior=0.5)  # fmt: skip
    hu = np.random.default_rng(seed).normal(40, hu_sd, size=(6, 64, 64)).astype(np.float32)
    return LiverSegmenter(config).eval(), config, hu, np.arange(6) * 3.0


def test_feature_distance_with_a_density_only() -> None:
    model, config, hu, positions = tiny_case(0, 30.0)
    plain = segment_with_quality(model, hu, (2.0, 2.0), positions)
    assert "feature_distance" not in plain.signals
    images, _ = to_model_grid(hu, (2.0, 2.0), positions, config)
    _, feats = model_grid_probabilities_and_features(model, images)
    density = fit_feature_density(feats, n_components=4)
    assert density_of({"feature_density": density.as_json()}) == density and density_of({}) is None
    with_density = segment_with_quality(model, hu, (2.0, 2.0), positions, density=density)
    distance = with_density.signals["feature_distance"]
    assert distance.shape == (6,) and np.isfinite(distance).all()
    np.testing.assert_array_equal(with_density.mask, plain.mask)


def test_the_ensemble_mask_is_the_mean_of_the_passes_and_the_plain_one_without_passes() -> None:
    from models.quality import keep_liver
    from models.segmenter import mask_on_series_grid
    from workers.inference.quality import TTA_INTENSITY, TTA_SHIFTS
    from workers.inference.segmenter import model_grid_probabilities

    model, config, hu, positions = tiny_case(1, 60.0)
    alone = segment_with_quality(model, hu, (2.0, 2.0), positions, shifts=(), intensity=None, ensemble_mask=True)
    plain = segment_with_quality(model, hu, (2.0, 2.0), positions, shifts=(), intensity=None, ensemble_mask=False)
    np.testing.assert_array_equal(alone.mask, plain.mask)
    # with the passes: the mean of the plain pass and each augmented one (all found liver on every slice here)
    images, box = to_model_grid(hu, (2.0, 2.0), positions, config)
    probs = [model_grid_probabilities(model, images)]
    for dy, dx in TTA_SHIFTS:
        moved = model_grid_probabilities(model, torch.roll(images, shifts=(dy, dx), dims=(2, 3)))
        probs.append(np.roll(moved, shift=(-dy, -dx), axis=(1, 2)))
    if TTA_INTENSITY is not None:
        probs.append(model_grid_probabilities(model, (images + TTA_INTENSITY).clamp(-1.0, 1.0)))
    assert (probs[0] > 0.5).reshape(6, -1).any(1).all()  # the window is the whole series
    expected = mask_on_series_grid(torch.from_numpy(keep_liver(np.mean(probs, 0), 0.5)), box, 0.5).numpy()
    ensemble = segment_with_quality(model, hu, (2.0, 2.0), positions)  # the default
    np.testing.assert_array_equal(ensemble.mask, expected)
    only_plain = segment_with_quality(model, hu, (2.0, 2.0), positions, ensemble_mask=False)
    assert not np.array_equal(ensemble.mask, only_plain.mask)


@pytest.mark.parametrize("shift", [(4, 4), (-4, -4), (0, 3), (5, 0), (-23, 7)])
def test_the_shifted_pass_input_is_torch_roll_in_channels_last(shift: tuple[int, int]) -> None:
    images = torch.randn(6, 5, 20, 18)
    for source in (images, images.contiguous(memory_format=torch.channels_last)[1:5]):  # a window of the series
        moved = rolled_channels_last(source, *shift)
        assert torch.equal(moved, torch.roll(source, shifts=shift, dims=(2, 3)))
        assert moved.is_contiguous(memory_format=torch.channels_last)


def test_a_risk_model_gets_the_passes_it_was_fitted_with() -> None:
    """A risk threshold holds for the signal it was calibrated on: the worker runs the recorded passes, and a
    risk model fitted before they were recorded gets the four passes every such fit used."""
    from workers.inference.quality import LEGACY_PASSES, TTA_INTENSITY, TTA_SHIFTS, passes_of, passes_record

    assert TTA_INTENSITY is None and len(TTA_SHIFTS) == 2  # the default since 2026-12-03: plain + two shifts
    assert passes_of({}) == {"shifts": ((4, 4), (-4, -4)), "intensity": 0.1} == LEGACY_PASSES
    assert passes_of({"quality_passes": passes_record()}) == {"shifts": TTA_SHIFTS, "intensity": None}
    recorded = json.loads(json.dumps({"quality_passes": passes_record(((2, -3),), 0.05)}))  # as stored in JSON
    assert passes_of(recorded) == {"shifts": ((2, -3),), "intensity": 0.05}
    model, _, hu, positions = tiny_case(1, 60.0)
    new = segment_with_quality(model, hu, (2.0, 2.0), positions, **passes_of({"quality_passes": passes_record()}))
    old = segment_with_quality(model, hu, (2.0, 2.0), positions, **passes_of({}))
    assert not np.array_equal(new.signals["tta_dice"], old.signals["tta_dice"])  # the extra pass counts


def test_another_member_of_an_ensemble_joins_the_mean_and_the_disagreement() -> None:
    from models.quality import keep_liver
    from models.segmenter import mask_on_series_grid
    from workers.inference.segmenter import model_grid_probabilities

    model, config, hu, positions = tiny_case(1, 60.0)
    other, _, _, _ = tiny_case(2, 60.0)  # the same architecture, another initialisation
    got = segment_with_quality(model, hu, (2.0, 2.0), positions, shifts=(), intensity=None, others=(other,))
    images, box = to_model_grid(hu, (2.0, 2.0), positions, config)
    a, b = model_grid_probabilities(model, images), model_grid_probabilities(other, images)
    assert (a > 0.5).reshape(6, -1).any(1).all()  # the window is the whole series
    expected = mask_on_series_grid(torch.from_numpy(keep_liver((a + b) / 2, 0.5)), box, 0.5).numpy()
    np.testing.assert_array_equal(got.mask, expected)
    alone = segment_with_quality(model, hu, (2.0, 2.0), positions, shifts=(), intensity=None)
    assert (alone.signals["tta_dice"] == 1.0).all()  # nothing to disagree with
    assert (got.signals["tta_dice"] < 1.0).any()  # two initialisations disagree somewhere
    wider = SegmenterConfig(preprocess=PreprocessConfig(size=32, pixel_mm=4.0), channels=(4, 8), strides=(2,),
                            head_channels=2, context=2, prior=0.5)  # fmt: skip
    with pytest.raises(ValueError, match="same input grid"):
        segment_with_quality(model, hu, (2.0, 2.0), positions, others=(LiverSegmenter(wider).eval(),))

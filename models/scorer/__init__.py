"""Slice-position-conditioned f-AnoGAN anomaly scorer (pure torch)."""

from models.scorer.calibration import (
    calibrate_by_position,
    calibrate_series_threshold,
    calibrate_threshold,
    false_positive_rate,
)
from models.scorer.config import ScorerConfig
from models.scorer.score import aggregate_series, anomaly_map, reduce_map
from models.scorer.torch_model import ConvAutoencoder, FAnoGAN, ReconstructionOutput, ScorerPrediction

__all__ = [
    "ConvAutoencoder",
    "FAnoGAN",
    "ReconstructionOutput",
    "ScorerConfig",
    "ScorerPrediction",
    "aggregate_series",
    "anomaly_map",
    "calibrate_by_position",
    "calibrate_series_threshold",
    "calibrate_threshold",
    "false_positive_rate",
    "reduce_map",
]

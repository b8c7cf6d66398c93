"""How far a slice's segmenter features lie from the segmenter's training slices (a gate quality signal).

Woodland et al. ("Dimensionality reduction for improving out-of-distribution detection in medical image
segmentation", UNSURE 2023; liver MRI: AUROC 0.92 for failed segmentations): the global average of the
UNet's bottleneck features per slice, reduced by PCA fitted on the training slices, and the Mahalanobis
distance to the training slices in that space. Here PCA keeps ``n_components`` directions and a floor on
each variance (``variance_floor`` of the largest) so that a direction the training slices never varied in
cannot blow the distance up. Pure numpy: fitting takes the training features, serving the stored numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class FeatureDensity:
    mean: tuple[float, ...]  # (C,)
    components: tuple[tuple[float, ...], ...]  # (K, C) orthonormal rows
    variances: tuple[float, ...]  # (K,)
    fitted_on: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.components) != len(self.variances) or any(len(c) != len(self.mean) for c in self.components):
            raise ValueError("components must be (K, C) with one variance per row and C = len(mean)")
        if any(v <= 0 for v in self.variances):
            raise ValueError("variances must be > 0")

    def distance(self, features: np.ndarray) -> np.ndarray:
        """(N, C) pooled features -> (N,) Mahalanobis distance in the PCA space, divided by sqrt(K) (so that a
        training-like slice sits near 1 whatever K is)."""
        x = np.asarray(features, dtype=np.float64) - np.asarray(self.mean)
        projected = x @ np.asarray(self.components).T  # (N, K)
        k = len(self.variances)
        return np.sqrt((projected**2 / np.asarray(self.variances)).sum(1) / k)

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> FeatureDensity:
        return cls(mean=tuple(d["mean"]), components=tuple(tuple(r) for r in d["components"]),
                   variances=tuple(d["variances"]), fitted_on=dict(d.get("fitted_on", {})))  # fmt: skip


def fit_feature_density(features: np.ndarray, n_components: int = 32, variance_floor: float = 1e-3) -> FeatureDensity:
    """(N, C) training features -> the density (PCA by SVD of the centred features)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f"need (N >= 3, C) features, got {x.shape}")
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = min(n_components, len(s))
    variances = s[:k] ** 2 / (len(x) - 1)
    variances = np.maximum(variances, variances[0] * variance_floor)
    return FeatureDensity(mean=tuple(map(float, mean)), components=tuple(tuple(map(float, r)) for r in vt[:k]),
                          variances=tuple(map(float, variances)), fitted_on={"slices": int(len(x))})  # fmt: skip

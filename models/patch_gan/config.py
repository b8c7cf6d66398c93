"""Configuration of the patch-level, position-conditioned scorers (f-AnoGAN, inpainting GAN, autoencoder).

Sizes chosen by measurement on 2 CPU cores (bench/bench_gan_step.py, BENCHMARKS.md): 32 x 32 patches at
1 mm per pixel, width 32, batch 64. The original f-AnoGAN (Schlegl et al. 2019) trained on 64 x 64
patches at width 64 with WGAN-GP and 5 critic steps; on this CPU that is 1.2 generator steps/s, so
10^4 steps take 2.3 h. Hinge loss with spectral norm and one critic step makes 10^4 steps in minutes;
WGAN-GP (5 critic steps, gradient penalty 10) stays an option (``adversarial_loss="wgan"``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# "deviation": the training-free rule (no network), registrable and calibrated like the others
DETECTORS = ("fanogan", "inpaint", "autoencoder", "deviation")
LOSSES = ("hinge", "wgan")
# What the conditioning vector holds, in order (NaN = unknown, each with its own learned vector):
CONDITIONS = ("body_position", "liver_fraction", "row_fraction", "col_fraction")


@dataclass(frozen=True)
class PatchGANConfig:
    """Hyper-parameters of one patch scorer (validated on creation)."""

    detector: str = "fanogan"
    patch_size: int = 32  # 32 or 64 pixels
    in_channels: int = 3  # slices at -3 mm, 0, +3 mm
    width: int = 16  # channels of the first conv; doubles at each halving (16: bench_gan_step, BENCHMARKS.md)
    latent_dim: int = 64
    conditional: bool = True
    n_conditions: int = len(CONDITIONS)
    n_fourier: int = 4  # Fourier frequencies per condition
    embed_dim: int = 32
    adversarial_loss: str = "hinge"
    spectral_norm: bool = True  # critic; required by hinge here, optional with WGAN-GP
    n_critic: int = 1  # 5 for WGAN-GP as Schlegl et al.
    gp_weight: float = 0.0  # 10 for WGAN-GP
    kappa: float = 1.0  # weight of the critic-feature residual (score and izi_f loss)
    hole: int = 16  # inpainting: side of the hidden square (pixels)
    l1_weight: float = 1.0  # inpainting: L1 weight (adversarial weight 1 / 100 of it)

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.patch_size not in (32, 64):
            raise ValueError(f"patch_size must be 32 or 64, got {self.patch_size}")
        if self.adversarial_loss not in LOSSES:
            raise ValueError(f"adversarial_loss must be one of {LOSSES}, got {self.adversarial_loss!r}")
        for name in ("in_channels", "width", "latent_dim", "n_conditions", "n_fourier", "embed_dim", "n_critic"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.gp_weight < 0 or self.kappa < 0 or self.l1_weight <= 0:
            raise ValueError("gp_weight and kappa must be >= 0 and l1_weight > 0")
        if not 0 < self.hole < self.patch_size or self.hole % 4:
            raise ValueError(f"hole must be a multiple of 4 inside the patch, got {self.hole}")

    @property
    def n_down(self) -> int:
        """Halvings from patch_size to the 4 x 4 feature map (32: 3, 64: 4)."""
        return {32: 3, 64: 4}[self.patch_size]

    def channels(self) -> list[int]:
        """Channels at each level, patch_size / 2 down to 4 x 4 (32 px, width 32: 32, 64, 128)."""
        return [self.width * 2**i for i in range(self.n_down)]

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> PatchGANConfig:
        return cls(**d)

"""Configuration of the slice-position-conditioned f-AnoGAN scorer."""

from __future__ import annotations

from dataclasses import asdict, dataclass

ADVERSARIAL_LOSSES = ("wgan", "hinge", "ls")


@dataclass(frozen=True)
class ScorerConfig:
    """Hyper-parameters of generator, critic and encoder (validated on creation).

    Defaults follow Schlegl et al. 2019 (f-AnoGAN): z of 128, base width 64,
    gradient penalty 10, 5 critic steps per generator step, kappa 1.
    """

    image_size: int = 64  # 64 or 128
    in_channels: int = 3  # neighbouring slices (k - d, k, k + d)
    latent_dim: int = 128
    base_width: int = 64  # channels of the first critic block; G and E mirror it
    conditional: bool = True  # condition G, D and E on the slice position
    n_fourier: int = 8  # Fourier frequencies of the scalar position
    embed_dim: int = 32  # position embedding width
    adversarial_loss: str = "wgan"  # "wgan" (WGAN-GP), "hinge" or "ls"
    gp_weight: float = 10.0
    n_critic: int = 5
    kappa: float = 1.0  # weight of the critic-feature residual in loss and score
    top_k_fraction: float | None = None  # None: mean of the heat-map; else mean of its top fraction

    def __post_init__(self) -> None:
        if self.image_size not in (64, 128):
            raise ValueError(f"image_size must be 64 or 128, got {self.image_size}")
        for name in ("in_channels", "latent_dim", "base_width", "n_fourier", "embed_dim", "n_critic"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.adversarial_loss not in ADVERSARIAL_LOSSES:
            raise ValueError(f"adversarial_loss must be one of {ADVERSARIAL_LOSSES}, got {self.adversarial_loss!r}")
        if self.gp_weight < 0 or self.kappa < 0:
            raise ValueError(f"gp_weight and kappa must be >= 0, got {self.gp_weight}, {self.kappa}")
        if self.top_k_fraction is not None and not 0 < self.top_k_fraction <= 1:
            raise ValueError(f"top_k_fraction must be in (0, 1] or None, got {self.top_k_fraction}")

    @property
    def n_down(self) -> int:
        """Resolution halvings from image_size down to the 4 x 4 feature map."""
        return {64: 4, 128: 5}[self.image_size]

    def as_json(self) -> dict:
        return asdict(self)

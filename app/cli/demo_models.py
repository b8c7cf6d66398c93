"""The models ``make run`` registers: the committed scorer and segmenter (``models/weights``, each with its
model card and sha256), trained or calibrated only on data whose licence allows shipping them.

``train_sample_scorer`` / ``train_sample_segmenter`` train small models on the Apache-2.0 sample (20
slices) in seconds: the tests' tiny models. Research models come from ``gatekeeper train-scorer`` and
``gatekeeper train-segmenter`` (or ``scripts/train-segmenter-folds.sh``) on the data in ``../shared/data``.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from app.core.config import get_settings
from app.core.db import session_scope
from app.db import model_versions
from app.services import registry
from workers.training.model_card import checked_card

ROOT = Path(__file__).resolve().parents[2]  # the repository (app/cli/ is two below it)
SAMPLE_DIR = ROOT / "samples"
CT, MASK = "totalseg-example/ct-dicom", "totalseg-example/masks/liver-on-ct-dicom.nii.gz"
# The default scorer is the detector that ranked best over all anomaly types on held-out patients
# (reports/scorer/REPORT.md): the training-free deviation rule, calibrated on the Apache-2.0 case. The patch
# f-AnoGAN beside it (patch-fanogan.pt, trained on the CC BY 4.0 case) is registrable the same way.
SHIPPED_SCORER = ROOT / "models" / "weights" / "deviation.pt"
# The default segmenter: the leave-one-out folds' recipe on the CC BY 4.0 case and the Apache-2.0 sample only
# (python -m workers.training.segmenter_folds --shippable); held-out Dice on 3D-IRCADb on its model card.
SHIPPED_SEGMENTER = ROOT / "models" / "weights" / "segmenter.pt"
SHIPPED_CARDS = {
    "scorer": {"purpose": "default scorer; calibrated on one Apache-2.0 patient, so a site should recalibrate on its "
               "own normal series (gatekeeper calibrate-patch-scorer)"},
    "segmenter": {"purpose": "default segmenter; trained on two redistributable patients only, so a site should "
                  "retrain on its own contours (POST /training-jobs) and fit its failure risk (fit-failure-risk)"},
}  # fmt: skip


def train_sample_scorer(run_dir: Path, *, width: int = 8, latent: int = 32, steps: int = 40, batch: int = 8,
                        resume: bool = True) -> Path:  # fmt: skip
    """An f-AnoGAN trained on the sample only (the demo; tests pass tiny sizes)."""
    from models.scorer import ScorerConfig
    from models.transforms import PreprocessConfig
    from workers.training.scorer_data import CaseSpec, ScorerDataConfig
    from workers.training.scorer_training import ScorerTrainConfig, train_scorer

    case = CaseSpec("sample", CT)
    data = ScorerDataConfig(data_dir=str(SAMPLE_DIR), cache_dir=str(run_dir / "cache"),
                            preprocess=PreprocessConfig(size=64), train=(case,), heldout=(case,))  # fmt: skip
    model = ScorerConfig(base_width=width, latent_dim=latent, embed_dim=8, n_fourier=4, n_critic=1)
    config = ScorerTrainConfig(model=model, data=data, batch_size=batch, gan_steps=steps, encoder_steps=steps,
                               checkpoint_every=max(1, steps // 2), num_threads=2)  # fmt: skip
    return train_scorer(config, run_dir, resume=resume)


def train_sample_segmenter(run_dir: Path, *, width: int = 8, steps: int = 40, batch: int = 8,
                           resume: bool = True) -> Path:  # fmt: skip
    """A liver UNet trained on the sample and its (predicted) liver mask only."""
    from models.segmenter import SegmenterConfig
    from workers.training.segmenter_data import MaskedCase, SegmenterDataConfig
    from workers.training.segmenter_training import SegmenterTrainConfig, train_segmenter

    case = MaskedCase("sample", CT, MASK)
    data = SegmenterDataConfig(data_dir=str(SAMPLE_DIR), cache_dir=str(run_dir / "cache"), train=(case,), heldout=case)
    model = SegmenterConfig(channels=tuple(width * 2**i for i in range(5)))
    config = SegmenterTrainConfig(model=model, data=data, steps=steps, batch_size=batch,
                                  checkpoint_every=max(1, steps // 2), eval_every=steps, num_threads=2)  # fmt: skip
    return train_segmenter(config, run_dir, resume=resume)


def shipped(kind: str) -> Path:
    """The committed default model of ``kind`` (``models/weights``; see its model card)."""
    path = SHIPPED_SCORER if kind == "scorer" else SHIPPED_SEGMENTER
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the checkout is incomplete")
    return path


def ensure_demo_models(console: Console) -> None:
    """Register and promote the shipped scorer and segmenter where none of that kind is promoted yet."""
    settings = get_settings()
    for kind in ("scorer", "segmenter"):
        with session_scope() as session:
            if model_versions.promoted(session, kind) is not None:
                continue
        checkpoint = shipped(kind)
        card = checked_card(checkpoint, kind, **SHIPPED_CARDS[kind])
        with session_scope() as session:
            row = registry.register(session=session, models_dir=settings.models_dir, kind=kind, source=checkpoint,
                                    metrics={}, card=card, actor="demo")  # fmt: skip
            registry.promote(session=session, model_id=row.id, actor="demo")
        console.print(f"  {kind} v{row.version} registered and promoted (sha256 {row.sha256[:12]}…)")

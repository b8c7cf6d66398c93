"""Small demo models for ``make run``, trained on the committed sample at first run (about a minute).

They are trained only on the Apache-2.0 sample (20 slices), so they may be
registered anywhere, and they mean nothing clinically: the demo shows the
path a series takes, not a gate worth trusting. Real models come from
``gatekeeper train-scorer`` and ``gatekeeper train-segmenter`` on real data.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from app.core.config import get_settings
from app.core.db import session_scope
from app.db import models as q
from app.services import registry

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = ROOT / "samples"
CT, MASK = "totalseg-example/ct-dicom", "totalseg-example/masks/liver-on-ct-dicom.nii.gz"
CARD = {"data": "samples/totalseg-example (Apache-2.0, 20 slices)", "purpose": "demo only, not clinical"}


def _scorer(run_dir: Path) -> Path:
    from models.scorer import ScorerConfig
    from models.transforms import PreprocessConfig
    from workers.pipelines.scorer_data import CaseSpec, ScorerDataConfig
    from workers.pipelines.scorer_training import ScorerTrainConfig, train_scorer

    case = CaseSpec("sample", CT)
    data = ScorerDataConfig(data_dir=str(SAMPLE_DIR), cache_dir=str(run_dir / "cache"),
                            preprocess=PreprocessConfig(size=64), train=(case,), heldout=(case,))  # fmt: skip
    config = ScorerTrainConfig(model=ScorerConfig(base_width=8, latent_dim=32, n_critic=1), data=data, batch_size=8,
                               gan_steps=40, encoder_steps=40, checkpoint_every=20, num_threads=2)  # fmt: skip
    return train_scorer(config, run_dir, resume=True)


def _segmenter(run_dir: Path) -> Path:
    from models.segmenter import SegmenterConfig
    from workers.pipelines.segmenter_data import MaskedCase, SegmenterDataConfig
    from workers.pipelines.segmenter_training import SegmenterTrainConfig, train_segmenter

    case = MaskedCase("sample", CT, MASK)
    data = SegmenterDataConfig(data_dir=str(SAMPLE_DIR), cache_dir=str(run_dir / "cache"), train=(case,), heldout=case)
    config = SegmenterTrainConfig(model=SegmenterConfig(channels=(8, 16, 32, 64, 128)), data=data, steps=40,
                                  batch_size=8, checkpoint_every=20, eval_every=40, num_threads=2)  # fmt: skip
    return train_segmenter(config, run_dir, resume=True)


def ensure_demo_models(console: Console) -> None:
    """Train, register and promote a scorer and a segmenter if none is promoted yet."""
    settings = get_settings()
    runs = settings.storage_dir.resolve().parent / "demo-runs"
    for kind, train in (("scorer", _scorer), ("segmenter", _segmenter)):
        with session_scope() as session:
            if q.promoted(session, kind) is not None:
                continue
        console.print(f"no promoted {kind}: training a demo {kind} on the sample study (first run only)...")
        checkpoint = train(runs / kind)
        with session_scope() as session:
            row = registry.register(session=session, models_dir=settings.models_dir, kind=kind, source=checkpoint,
                                    metrics={}, card=CARD, actor="demo")  # fmt: skip
            registry.promote(session=session, model_id=row.id, actor="demo")
        console.print(f"  {kind} v{row.version} registered and promoted (sha256 {row.sha256[:12]}…)")

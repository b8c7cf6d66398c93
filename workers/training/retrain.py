"""Retraining jobs: build the training set from the registry's frozen splits, train, register, maybe promote.

The segmenter learns from accepted manual contours (cases in the train and
validation splits) beside the base cases of the data directory; it is measured
on the frozen test split (test-split contours and the base held-out patient).
The scorer's normal set grows from series confirmed normal (decided AUTO, or a
case rejected as normal) beside the base normal cases; it is measured by its
false-positive rate on held-out normals. Each job's data folder is a tree of
symbolic links (nothing is copied).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.core.config import Settings, get_settings
from app.core.db import session_scope
from app.db import model_versions
from app.db.states import CaseStatus, TrainingJobStatus
from app.db.tables import Case, Instance, ModelVersion, PatientSplit, Series, Study, TrainingJob
from app.services import audit, registry, splits, training
from workers.training.model_card import checked_card

log = logging.getLogger(__name__)


@dataclass
class Labelled:
    name: str
    series_id: int
    split: str
    contour: str | None  # relative to storage_dir


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        os.symlink(target.resolve(), link)


def _series_folder(settings: Settings, data_root: Path, series_id: int) -> str:
    """ct/series-<id>/ with a link per instance; the path relative to data_root."""
    with session_scope() as session:
        paths = list(session.scalars(select(Instance.storage_path).where(Instance.series_id == series_id)))
    for i, relative in enumerate(sorted(paths)):
        _link(settings.storage_dir / relative, data_root / "ct" / f"series-{series_id}" / f"{i:05d}.dcm")
    return f"ct/series-{series_id}"


def _split_of(session, series: Series) -> str:  # type: ignore[no-untyped-def]
    study = session.get(Study, series.study_id)
    key = splits.patient_key(study)
    return session.scalar(select(PatientSplit.split).where(PatientSplit.patient_key == key)) or splits.choose(key)


def labelled_contours() -> list[Labelled]:
    with session_scope() as session:
        rows = session.execute(
            select(Case, Series).join(Series, Series.id == Case.series_id)
            .where(Case.status == CaseStatus.SUBMITTED, Case.contour_path.is_not(None))
        ).all()  # fmt: skip
        return [Labelled(f"case-{c.id}", s.id, _split_of(session, s), c.contour_path) for c, s in rows]


def confirmed_normal() -> list[Labelled]:
    """Series the gate accepted, and cases a radiologist rejected as normal."""
    with session_scope() as session:
        auto = session.scalars(select(Series).where(Series.status == "auto")).all()
        rejected = session.execute(
            select(Case, Series).join(Series, Series.id == Case.series_id)
            .where(Case.status == CaseStatus.REJECTED, Case.reject_reason.like("normal%"))
        ).all()  # fmt: skip
        items = [Labelled(f"series-{s.id}", s.id, _split_of(session, s), None) for s in auto]
        items += [Labelled(f"series-{s.id}", s.id, _split_of(session, s), None) for _, s in rejected]
        return items


def _base_link(settings: Settings, data_root: Path, params: dict[str, Any]) -> bool:
    if params.get("include_base_data", True) and settings.data_dir.is_dir():
        _link(settings.data_dir, data_root / "base")
        return True
    return False


StopCheck = Callable[[], bool]
CANCEL_CHECK_S = 2.0  # how often a running job asks the database whether it was cancelled


def cancel_check(job_id: int, every_s: float = CANCEL_CHECK_S) -> StopCheck:
    """A ``should_stop`` for the training loops: True once the job was cancelled (read at most every ``every_s``)."""
    last, cancelled = 0.0, False

    def should_stop() -> bool:
        nonlocal last, cancelled
        if not cancelled and time.monotonic() - last >= every_s:
            last = time.monotonic()
            with session_scope() as session:
                cancelled = training.is_cancelled(session, job_id=job_id)
        return cancelled

    return should_stop


def train_segmenter_job(settings: Settings, job_dir: Path, params: dict[str, Any],
                        should_stop: StopCheck | None = None) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    from models.segmenter import SegmenterConfig
    from workers.inference.segmenter import load_segmenter
    from workers.training.segmenter_data import MaskedCase, SegmenterDataConfig, load_masked_volume
    from workers.training.segmenter_training import SegmenterTrainConfig, evaluate, train_segmenter

    data_root = job_dir / "data"
    default = SegmenterDataConfig()
    train, test = [], []
    if _base_link(settings, data_root, params):
        train += [replace(c, ct=f"base/{c.ct}", mask=f"base/{c.mask}") for c in default.train]
        test.append(replace(default.heldout, ct=f"base/{default.heldout.ct}", mask=f"base/{default.heldout.mask}"))
    for item in labelled_contours():
        _link(settings.storage_dir / item.contour, data_root / "labels" / f"{item.name}.nii.gz")  # type: ignore[operator]
        case = MaskedCase(item.name, _series_folder(settings, data_root, item.series_id), f"labels/{item.name}.nii.gz")
        (test if item.split == "test" else train).append(case)
    if not train:
        raise ValueError("no training data: no accepted contours in the train split and no base data")
    width = int(params.get("base_width", 16))
    model = SegmenterConfig(channels=tuple(width * 2**i for i in range(5)))
    data = SegmenterDataConfig(data_dir=str(data_root), cache_dir=str(job_dir / "cache"), train=tuple(train),
                               heldout=test[0] if test else train[0])  # fmt: skip
    steps = int(params.get("steps", 2000))
    config = SegmenterTrainConfig(model=model, data=data, steps=steps, batch_size=int(params.get("batch_size", 16)),
                                  seed=int(params.get("seed", 0)), checkpoint_every=max(1, steps // 4),
                                  eval_every=steps)  # fmt: skip
    checkpoint = train_segmenter(config, job_dir / "run", resume=True, should_stop=should_stop)
    net, _ = load_segmenter(checkpoint)
    results = [evaluate(net, load_masked_volume(c, data_root), c.name)[0] for c in test]
    metrics: dict[str, Any] = {"n_train_cases": len(train), "n_test_cases": len(test), "steps": steps}
    if results:
        metrics["test_dice_per_slice"] = sum(r["dice_per_slice_mean"] for r in results) / len(results)
        metrics["test_dice_series"] = sum(r["dice_series"] for r in results) / len(results)
        metrics["test_cases"] = [r["case"] for r in results]
    return checkpoint, metrics


def _promoted_path(kind: str) -> Path | None:
    settings = get_settings()
    with session_scope() as session:
        row = model_versions.promoted(session, kind)
        path = None if row is None else settings.models_dir / row.path
    return path if path is not None and path.is_file() else None


def _promoted_scorer() -> tuple[Any, Any]:
    """The promoted scorer's training config (view, widths, score reduction) and scoring region, so a
    retrain keeps what serves today; (None, None) when no scorer is promoted or its file cannot be read."""
    import torch

    from workers.inference.liver_roi import roi_of
    from workers.training.scorer_training import ScorerTrainConfig

    path = _promoted_path("scorer")
    if path is None:
        return None, None
    try:
        metadata = torch.load(path, map_location="cpu", weights_only=False)["metadata"]
        return ScorerTrainConfig.from_json(metadata["config"]), roi_of(metadata)
    except Exception:  # noqa: BLE001 - a broken promoted file must not block retraining: fall back to defaults
        log.warning("promoted scorer %s unreadable; retraining with the default configuration", path.name)
        return None, None


def train_scorer_job(settings: Settings, job_dir: Path, params: dict[str, Any],
                     should_stop: StopCheck | None = None) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    from models.scorer import ScorerConfig
    from workers.training.scorer_data import CaseSpec, ScorerDataConfig
    from workers.training.scorer_training import ScorerTrainConfig, train_scorer

    data_root = job_dir / "data"
    default = ScorerDataConfig()
    train, heldout = [], []
    if _base_link(settings, data_root, params):
        train += [replace(c, path=f"base/{c.path}") for c in default.train]
        heldout += [replace(c, path=f"base/{c.path}") for c in default.heldout]
    for item in confirmed_normal():
        spec = CaseSpec(item.name, _series_folder(settings, data_root, item.series_id))
        (heldout if item.split == "test" else train).append(spec)
    if not train:
        raise ValueError("no training data: no confirmed-normal series and no base data")
    promoted, roi = _promoted_scorer()
    base = promoted or ScorerTrainConfig()
    data = replace(base.data, data_dir=str(data_root), cache_dir=str(job_dir / "cache"), train=tuple(train),
                   heldout=tuple(heldout or train))  # fmt: skip
    model: ScorerConfig = replace(
        base.model, **{k: int(params[k]) for k in ("base_width", "latent_dim") if k in params}
    )
    config = replace(base, model=model, data=data, gan_steps=int(params.get("steps", 2000)),
                     encoder_steps=int(params.get("encoder_steps", 1000)),
                     batch_size=int(params.get("batch_size", 16)), seed=int(params.get("seed", 0)))  # fmt: skip
    checkpoint = train_scorer(config, job_dir / "run", resume=True, should_stop=should_stop)
    if roi is not None:  # the promoted scorer looks inside the liver: so does its successor, calibrated there
        from workers.training.scorer_training import calibrate_checkpoint

        segmenter = _promoted_path("segmenter")
        if segmenter is None:
            raise ValueError("the promoted scorer scores inside the liver, but no segmenter is promoted")
        checkpoint = calibrate_checkpoint(checkpoint, job_dir / "in-liver.pt", segmenter=segmenter,
                                          erosion_mm=roi.erosion_mm)  # fmt: skip
    from workers.inference.scorer import load_scorer

    _, metadata = load_scorer(checkpoint)
    calibration = metadata.get("calibration", {})
    metrics = {"n_train_cases": len(train), "n_heldout_cases": len(heldout),
               "test_fpr_at_threshold": calibration.get("fpr"), "threshold": calibration.get("threshold")}  # fmt: skip
    return checkpoint, metrics


def _finish(job_id: int, task_id: str, kind: str, auto: bool, checkpoint: Path, metrics: dict[str, Any]) -> None:
    settings = get_settings()
    card = checked_card(checkpoint, kind, training_job_id=job_id, data="frozen splits")
    with session_scope() as session:
        if training.is_cancelled(session, job_id=job_id):  # cancelled after its last step: nothing registered
            log.info("training job %d was cancelled; its checkpoint is not registered", job_id)
            return
        row = registry.register(session=session, models_dir=settings.models_dir, kind=kind, source=checkpoint,
                                metrics=metrics, card=card,
                                actor=f"training_job:{job_id}", training_job_id=job_id)  # fmt: skip
        promoted, verdict = False, "auto-promotion not asked for"
        if auto:
            floors = {"segmenter": settings.promote_min_test_dice, "scorer": settings.promote_max_test_fpr}
            promoted, verdict = registry.gate_verdict(row, model_versions.promoted(session, kind), floors)
        if promoted:
            registry.promote(session=session, model_id=row.id, actor=f"training_job:{job_id}",
                             action="model.auto_promoted")  # fmt: skip
        training.finish_job(
            session, job_id=job_id, task_id=task_id, status=TrainingJobStatus.SUCCEEDED, model_version_id=row.id
        )
        audit.record(session, actor=f"training_job:{job_id}", action="training.finished", entity_type="training_job",
                     entity_id=job_id, model_version_id=row.id, promoted=promoted, verdict=verdict)  # fmt: skip


def train_model_impl(*, job_id: int, task_id: str) -> str:
    settings = get_settings()
    with session_scope() as session:
        if not training.claim_job(session, job_id=job_id, task_id=task_id):
            return "skipped"
        job = session.get(TrainingJob, job_id)
        assert job is not None
        kind, params, auto = job.kind, dict(job.params), job.auto_promote
        done = session.scalar(select(ModelVersion.id).where(ModelVersion.training_job_id == job_id))
        if done is not None:  # registered before a crash: finish, do not train twice
            training.finish_job(
                session, job_id=job_id, task_id=task_id, status=TrainingJobStatus.SUCCEEDED, model_version_id=done
            )
            return "succeeded"
        audit.record(session, actor=f"training_job:{job_id}", action="training.started", entity_type="training_job",
                     entity_id=job_id, kind=kind)  # fmt: skip
    job_dir = training.job_dir(settings, job_id)
    from workers.training.scorer_training import TrainingStopped

    try:
        trainer = train_segmenter_job if kind == "segmenter" else train_scorer_job
        checkpoint, metrics = trainer(settings, job_dir, params, cancel_check(job_id))
    except TrainingStopped as stopped:
        log.info("training job %d cancelled: %s", job_id, stopped)
        with session_scope() as session:
            audit.record(session, actor=f"training_job:{job_id}", action="training.stopped",
                         entity_type="training_job", entity_id=job_id, detail=str(stopped))  # fmt: skip
        return "cancelled"
    except Exception as exc:  # noqa: BLE001 - recorded on the job; no PHI in a type name and our own messages
        log.warning("training job %d failed: %s", job_id, type(exc).__name__)
        with session_scope() as session:
            training.finish_job(session, job_id=job_id, task_id=task_id, status=TrainingJobStatus.FAILED,
                                error=f"{type(exc).__name__}: {str(exc)[:300]}")  # fmt: skip
        return "failed"
    _finish(job_id, task_id, kind, auto, checkpoint, metrics)
    return "succeeded"

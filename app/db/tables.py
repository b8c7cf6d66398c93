"""ORM tables. The schema itself is created and changed only by Alembic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.db.states import CaseStatus, DeliveryStatus, ModelStatus, SeriesStatus, TrainingJobStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on every database.

    PostgreSQL's timestamptz returns aware values, but SQLite has no time zones and returns naive ones, so
    comparing a loaded lease with ``datetime.now(UTC)`` raised TypeError on the embedded default. Values are
    stored as UTC (SQLite keeps the wall time only) and read back as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UtcDateTime()}


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the secret
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    # one identity per name: unique among unrevoked tokens (migration 0005)
    __table_args__ = (
        Index("uq_api_tokens_active_name", "name", unique=True,
              postgresql_where=text("revoked_at IS NULL"), sqlite_where=text("revoked_at IS NULL")),
    )  # fmt: skip


class UiSession(Base):
    """A browser session (``/ui/login``): only the sha256 of its cookie is stored. Every request re-reads it
    with its token, so revoking or expiring the token ends its sessions at once."""

    __tablename__ = "ui_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))  # per session: hidden form field / X-CSRF-Token header
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]  # logout


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    # Study-level attributes kept for QIDO-RS. They are PHI: never logged.
    patient_id: Mapped[str | None] = mapped_column(String(64), index=True)
    issuer_of_patient_id: Mapped[str | None] = mapped_column(String(64))  # with patient_id, the study's patient
    study_date: Mapped[str | None] = mapped_column(String(8), index=True)  # YYYYMMDD
    accession_number: Mapped[str | None] = mapped_column(String(16), index=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)  # DICOM JSON
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Series(Base):
    __tablename__ = "series"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    frame_of_reference_uid: Mapped[str | None] = mapped_column(String(64))  # one per series (identity rules)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)  # DICOM JSON
    status: Mapped[str] = mapped_column(String(16), default=SeriesStatus.RECEIVING, index=True)
    # revision grows each time a late instance re-opens the series; a job is for
    # one (series, revision) and a job for an older revision does nothing.
    revision: Mapped[int] = mapped_column(default=0)
    attempts: Mapped[int] = mapped_column(default=0)  # also the fencing token of the holder
    instance_count: Mapped[int] = mapped_column(default=0)
    last_instance_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    completed_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(155))  # Celery task id of the holder
    # Versions pinned when scoring starts: a series in flight keeps them across a promotion.
    scorer_version_id: Mapped[int | None]
    segmenter_version_id: Mapped[int | None]
    geometry: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Instance(Base):
    __tablename__ = "instances"
    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None]
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    storage_path: Mapped[str] = mapped_column(String(255), unique=True)  # relative to storage_dir
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxEvent(Base):
    """A job to publish, written in the same transaction as the state it follows from."""

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("topic", "series_id", "revision", name="uq_outbox_job"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    topic: Mapped[str] = mapped_column(String(64))
    series_id: Mapped[int | None] = mapped_column(ForeignKey("series.id"), index=True)  # score jobs
    training_job_id: Mapped[int | None] = mapped_column(ForeignKey("training_jobs.id"))  # train jobs
    revision: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(index=True)
    publish_count: Mapped[int] = mapped_column(default=0)


class AuditEvent(Base):
    """Append-only (a database trigger refuses UPDATE and DELETE). No PHI in detail."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ModelVersion(Base):
    """A trained network file with its metrics; exactly one promoted version per kind."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("kind", "version", name="uq_model_kind_version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # scorer | segmenter
    version: Mapped[int]
    path: Mapped[str] = mapped_column(String(255))  # relative to models_dir
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=ModelStatus.CANDIDATE)  # ModelStatus
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    card: Mapped[dict[str, Any]] = mapped_column(default=dict)
    training_job_id: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    promoted_at: Mapped[datetime | None]


class SeriesDecision(Base):
    """Scores and the routing decision for one (series, revision, scorer version)."""

    __tablename__ = "series_decisions"
    __table_args__ = (UniqueConstraint("series_id", "revision", "scorer_key", name="uq_decision"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    revision: Mapped[int]
    scorer_key: Mapped[str] = mapped_column(String(80))  # "<version id>:<sha256>" or "none"
    scorer_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    segmenter_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    decision: Mapped[str] = mapped_column(String(16))  # Route
    reason: Mapped[str] = mapped_column(String(64))  # DecisionReason
    series_score: Mapped[float | None]
    threshold: Mapped[float | None]
    slice_scores: Mapped[list[float] | None] = mapped_column(JSON)
    evidence_path: Mapped[str | None] = mapped_column(String(255))
    scoring_s: Mapped[float | None]  # the scorer's time on this series (the metrics read it)
    completion_to_decision_s: Mapped[float | None]  # from the series' completion (its outbox row) to this row
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Segmentation(Base):
    __tablename__ = "segmentations"
    __table_args__ = (UniqueConstraint("series_id", "revision", "segmenter_version_id", name="uq_segmentation"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    revision: Mapped[int]
    segmenter_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    source: Mapped[str] = mapped_column(String(16))  # model | manual
    seg_series_uid: Mapped[str | None] = mapped_column(String(64))
    seg_sop_uid: Mapped[str | None] = mapped_column(String(64), unique=True)
    seg_path: Mapped[str | None] = mapped_column(String(255))
    nifti_path: Mapped[str] = mapped_column(String(255))
    duration_s: Mapped[float | None]  # the segmenter's time, for a model segmentation (the metrics read it)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Case(Base):
    """A series in the manual contouring queue."""

    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("series_id", "revision", name="uq_case"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    revision: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default=CaseStatus.OPEN, index=True)  # CaseStatus
    reason: Mapped[str] = mapped_column(String(64))  # DecisionReason
    priority: Mapped[float] = mapped_column(default=0.0)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None]
    # +1 at every new claim; a contour is stored only if the claim it was checked under still holds
    claim_version: Mapped[int] = mapped_column(default=0, server_default="0")
    contour_path: Mapped[str | None] = mapped_column(String(255))
    reject_reason: Mapped[str | None] = mapped_column(Text)  # why it closed without a contour (rejected, superseded)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TrainingJob(Base):
    __tablename__ = "training_jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=TrainingJobStatus.QUEUED, index=True)  # TrainingJobStatus
    requested_by: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    auto_promote: Mapped[bool] = mapped_column(default=False)
    claimed_by: Mapped[str | None] = mapped_column(String(155))  # Celery task id of the holder
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class PatientSplit(Base):
    """Train/validation/test by patient, assigned once and never changed."""

    __tablename__ = "patient_splits"
    patient_key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256, not the PatientID itself
    split: Mapped[str] = mapped_column(String(8))
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)


class Delivery(Base):
    """A SEG to send to the PACS (the results outbox), written in the transaction that accepted the result."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("kind", "series_id", "revision", name="uq_delivery"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # DeliveryKind
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)  # the source series
    revision: Mapped[int]
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))  # a contour's case
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING, index=True)  # DeliveryStatus
    seg_path: Mapped[str | None] = mapped_column(String(255))  # the SEG file (a contour's: once written)
    seg_sop_uid: Mapped[str | None] = mapped_column(String(64))
    destination: Mapped[str] = mapped_column(String(255))  # base URL, never credentials
    attempts: Mapped[int] = mapped_column(default=0)  # also the fencing token of the holder
    schedule_start: Mapped[int] = mapped_column(default=0)  # attempts before an admin's send-again
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    published_at: Mapped[datetime | None]
    publish_count: Mapped[int] = mapped_column(default=0)
    lease_until: Mapped[datetime | None]
    last_http_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)  # no PHI: a status, an exception type, a reason
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]

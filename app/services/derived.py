"""Store an object this service produced (a DICOM SEG) so QIDO-RS and WADO-RS serve it like any instance."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.states import SeriesStatus
from app.db.tables import Instance, Series
from app.services.storage import InstanceStore


def write_object(store: InstanceStore, blob: bytes) -> tuple[str, str, int]:
    """(relative path, sha256, size) of a durable new file."""
    writer = store.new_temp(len(blob) + 1)
    writer.write(blob)
    received = writer.finish(store.fsync)
    relative = store.promote(received, group="derived")
    store.sync_dirs([relative])
    return relative, received.sha256, received.size


def add_derived_instance(
    session: Session, *, study_id: int, series_uid: str, sop_uid: str, sop_class_uid: str, modality: str,
    relative: str, sha256: str, size: int, transfer_syntax_uid: str, attributes: dict | None = None,
) -> int:  # fmt: skip
    """Insert the derived series (status DERIVED, never scored) and its one instance; return the instance id.
    ``attributes``: the series' DICOM JSON for QIDO-RS (SeriesDescription, SeriesNumber...), from the object."""
    series_id = session.scalar(select(Series.id).where(Series.series_uid == series_uid))
    if series_id is None:
        series = Series(study_id=study_id, series_uid=series_uid, modality=modality, status=SeriesStatus.DERIVED,
                        attributes={**(attributes or {}), "0020000E": {"vr": "UI", "Value": [series_uid]},
                                    "00080060": {"vr": "CS", "Value": [modality]}})  # fmt: skip
        session.add(series)
        session.flush()
        series_id = series.id
    instance = Instance(series_id=series_id, sop_instance_uid=sop_uid, sop_class_uid=sop_class_uid,
                        transfer_syntax_uid=transfer_syntax_uid, instance_number=1, sha256=sha256, size_bytes=size,
                        storage_path=relative, received_at=datetime.now(UTC))  # fmt: skip
    session.add(instance)
    session.execute(update(Series).where(Series.id == series_id).values(instance_count=Series.instance_count + 1))
    session.flush()
    return instance.id

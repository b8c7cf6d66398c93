"""The PHI canary through the paths the first canary test never reached (issue #12, item 3): a real scorer
and segmenter, SEG writing (highdicom warns with the patient's name when it has no caret), a database error,
and the broker's messages decoded rather than searched as base64."""

from __future__ import annotations

import base64
import io
import json
import logging

import pydicom
import pytest
import redis
from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError

from app.client import read_files, stow
from app.core.db import make_engine
from app.core.logging import PhiSafeFormatter, configure_logging
from app.db.tables import Study
from testkit.servers import Stack, register_model
from testkit.tiny_models import ALL_AUTO, SAMPLE_DIR, train_tiny_scorer, train_tiny_segmenter, with_series_threshold

pytestmark = pytest.mark.integration
# A name without a caret: highdicom's person-name check quotes it in a warning.
CANARIES = {"name": "Canaryzebulon", "id": "PID-CANARY-4417", "acc": "ACC-CAN-3318"}


def _canary_sample() -> tuple[str, list[bytes]]:
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    blobs = []
    for blob in read_files(SAMPLE_DIR / "totalseg-example" / "ct-dicom"):
        ds = pydicom.dcmread(io.BytesIO(blob))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID, ds.AccessionNumber = CANARIES["name"], CANARIES["id"], CANARIES["acc"]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        blobs.append(buf.getvalue())
    return series, blobs


def decoded_messages(stack: Stack, queue: str) -> str:
    """The broker's messages with their bodies decoded (kombu base64-encodes the JSON body)."""
    out = []
    for raw in redis.Redis.from_url(stack.service.env["GATEKEEPER_BROKER_URL"]).lrange(queue, 0, -1):
        message = json.loads(raw)
        out.append(json.dumps(message))
        out.append(base64.b64decode(message["body"]).decode("utf-8", errors="replace"))
    return "\n".join(out)


def test_canary_never_leaks_on_the_auto_path(stack_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(worker=False, GATEKEEPER_MODELS_DIR=str(tmp_path / "registry"))
    register_model(
        stack.service.env,
        "scorer",
        with_series_threshold(train_tiny_scorer(tmp_path / "s"), ALL_AUTO, tmp_path / "a.pt"),
    )
    register_model(stack.service.env, "segmenter", train_tiny_segmenter(tmp_path / "g"))
    series, blobs = _canary_sample()
    with stack.client() as c:
        body = stow(c, blobs).text
        c.post(f"/series/{series}/complete")
    stack.wait_published()
    broker = decoded_messages(stack, "scoring")
    assert "gatekeeper.score_series" in broker, "expected the scoring job in the broker"
    stack.service.start_worker()
    state = stack.wait_status(series, {"auto"}, timeout_s=120)
    assert stack.scalar("SELECT count(*) FROM segmentations WHERE series_id=:i AND seg_path IS NOT NULL",
                        i=state["id"]) == 1  # fmt: skip  # the SEG was written
    stack.service.stop()
    logs = "".join(p.read_text(errors="replace") for p in stack.service.log_dir.glob("*.log"))
    assert "series" in logs  # the worker did log
    for value in CANARIES.values():
        for where, text in [("logs", logs), ("broker", broker), ("body", body)]:
            assert value not in text, f"{value} found in {where}"


def test_a_database_error_quotes_no_value(stack, caplog) -> None:  # type: ignore[no-untyped-def]
    """A PostgreSQL error on a too-long AccessionNumber: neither the exception nor its log line holds it."""
    engine = make_engine(stack.database_url)
    configure_logging("INFO")
    canary = "ACC-CANARY-TOO-LONG-5521"  # 24 > 16 characters
    with pytest.raises(DBAPIError) as err, engine.begin() as conn:
        conn.execute(insert(Study).values(study_uid="1.2.3.999", accession_number=canary, attributes={}))
    engine.dispose()
    assert canary not in str(err.value)
    record = logging.LogRecord("app", logging.ERROR, __file__, 1, "db failed", (), (err.type, err.value, err.tb))
    assert canary not in PhiSafeFormatter().format(record)

"""A mask that stops short of the liver's end reaches a radiologist through the whole stack (STOW-RS over HTTP,
PostgreSQL, Redis, a Celery worker): the shipped segmenter on ircadb-01, a patient it never saw, leaves out the
top of the liver (slices 120-124, 119 cm² of reference liver: reports/gate-shipped), where every test-time pass
agrees on nothing, and thins out before the caudal tip does (3 cm² a slice where the reference has 20-30). The
scorer accepts every series, so only the look at the mask's ends (``models.liver_ends``) can send it to a
radiologist. Skipped without ../shared/data (the series is CC BY-NC-ND: read, never committed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.client import stow
from testkit.servers import Stack
from testkit.tiny_models import ALL_AUTO, train_tiny_patch_scorer, with_patch_calibration
from tests.integration.test_input_checks_stack import DATA, _revisit
from tests.integration.test_loop_e2e import register

pytestmark = pytest.mark.integration
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "weights" / "segmenter.pt"


@pytest.fixture(scope="module")
def gate(stack_factory, tmp_path_factory) -> tuple[Stack, int]:  # type: ignore[no-untyped-def]
    if not (DATA / "ct" / "ircadb-01").is_dir():
        pytest.skip(f"real CT data not found at {DATA} (set GATEKEEPER_DATA_DIR to run these tests)")
    tmp = tmp_path_factory.mktemp("liver-ends")
    stack = stack_factory(GATEKEEPER_MODELS_DIR=str(tmp / "registry"))
    segmenter = register(stack, "segmenter", SHIPPED)
    register(stack, "scorer", with_patch_calibration(train_tiny_patch_scorer(tmp / "patch"), ALL_AUTO, tmp / "a.pt"))
    return stack, segmenter


def test_a_mask_that_stops_short_of_the_dome_goes_to_a_radiologist_with_the_slices(gate) -> None:  # type: ignore[no-untyped-def]
    stack, segmenter = gate
    series, blobs = _revisit(DATA / "ct" / "ircadb-01" / "ct-dicom")
    with stack.client("pacs") as c:
        for start in range(0, len(blobs), 32):  # 129 slices of 512 KB: more than one request may carry
            assert stow(c, blobs[start : start + 32]).status_code == 200
        c.post(f"/series/{series}/complete")
    state = stack.wait_status(series, {"auto", "manual", "failed"}, timeout_s=240)
    assert state["status"] == "manual", state
    (row,) = stack.rows("SELECT reason, segmenter_version_id, series_score FROM series_decisions "
                        "WHERE series_id=:i", i=state["id"])  # fmt: skip
    assert row[:2] == ("liver_beyond_mask", segmenter) and row[2] is not None  # scored, accepted, then stopped
    with stack.client("radiologist") as reader:
        case = next(c for c in reader.get("/queue").json() if c["series_uid"] == series)
        assert case["reason"] == "liver_beyond_mask"
        evidence = reader.get(f"/queue/{case['id']}").json()["evidence"]
    assert evidence["detail"].startswith("the mask stops short of the liver's ")
    for side in ("caudal", "cranial"):  # both ends, each with its slices
        assert f"the liver's {side} end: " in evidence["detail"]
    assert "beside or past it are left out over slices " in evidence["detail"]

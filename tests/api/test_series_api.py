"""GET /series/{uid} shows what the worker decided for the current revision (issue #12, item 13)."""

from __future__ import annotations

import httpx
import pytest

from app.client import stow
from testkit.dicom_factory import make_series
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def test_a_manual_decision_is_shown_and_a_reopened_series_hides_the_old_one(stack: Stack, pacs: httpx.Client) -> None:
    spec, blobs = make_series(4)
    assert stow(pacs, blobs[:3]).status_code == 200
    pacs.post(f"/series/{spec.series_uid}/complete")
    state = stack.wait_status(spec.series_uid, {"manual", "auto"})
    ((decision, reason, score, threshold, scorer, segmenter),) = stack.rows(
        "SELECT decision, reason, series_score, threshold, scorer_version_id, segmenter_version_id"
        " FROM series_decisions WHERE series_id=:i AND revision=0", i=state["id"]
    )  # fmt: skip
    shown = pacs.get(f"/series/{spec.series_uid}").json()
    assert shown["study_uid"] == spec.study_uid
    assert shown["decision"]["decision"] == decision == state["status"]
    assert shown["decision"]["reason"] == reason
    assert (shown["decision"]["series_score"], shown["decision"]["threshold"]) == (score, threshold)
    assert (shown["decision"]["scorer_version_id"], shown["decision"]["segmenter_version_id"]) == (scorer, segmenter)
    assert shown["decision"]["revision"] == 0 and shown["decision"]["decided_at"]
    if decision == "manual":
        assert shown["segmentation"] is None
    # a late instance opens revision 1: revision 0's decision no longer describes the series
    assert stow(pacs, blobs[3:]).status_code == 200
    reopened = pacs.get(f"/series/{spec.series_uid}").json()
    assert reopened["revision"] == 1 and reopened["decision"] is None and reopened["segmentation"] is None

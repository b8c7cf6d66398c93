"""A patch scorer gates real series through the whole stack: HTTP, the database (PostgreSQL and SQLite),
Redis or the filesystem broker, and Celery workers; the committed default scorer loads and scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli.demo_models import SHIPPED_SCORER
from testkit.tiny_models import (
    ALL_AUTO,
    ALL_MANUAL,
    train_tiny_patch_scorer,
    train_tiny_segmenter,
    with_patch_calibration,
)
from tests.integration.test_loop_e2e import push_and_route, register

pytestmark = pytest.mark.integration


def segmenter_with_bias(tmp: Path, name: str, bias: float) -> Path:
    """The tiny segmenter with its output bias set: 20 calls the whole body crop liver, -20 finds none."""
    ckpt = torch.load(train_tiny_segmenter(tmp / f"run-{name}"), weights_only=False)
    ckpt["state"]["model"]["head.bias"].fill_(bias)
    torch.save(ckpt, out := tmp / f"{name}.pt")
    return out


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def patch_stack(stack_factory, tmp_path_factory, request):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("patch-models")
    # the sample is a 40 mm slab through the liver (liver on all 20 slices): cut by the field of view, which would
    # send it to a radiologist before any score; this module tests the scorer's routing, so partial coverage is
    # accepted here (tests/integration/test_input_checks_stack.py tests the refusal)
    stack = stack_factory(database=request.param, GATEKEEPER_MODELS_DIR=str(tmp / "registry"),
                          GATEKEEPER_PARTIAL_LIVER_COVERAGE="accept")  # fmt: skip
    return stack, tmp


def test_patch_scorer_routes_and_records_its_version(patch_stack) -> None:  # type: ignore[no-untyped-def]
    stack, tmp = patch_stack
    scorer = train_tiny_patch_scorer(tmp / "patch")
    register(stack, "segmenter", segmenter_with_bias(tmp, "everywhere", 20.0))
    auto_id = register(stack, "scorer", with_patch_calibration(scorer, ALL_AUTO, tmp / "p-auto.pt"))
    _, _, state = push_and_route(stack, {"auto", "manual"})
    sql = "SELECT decision, reason, scorer_version_id, series_score FROM series_decisions WHERE series_id=:i"
    (row,) = stack.rows(sql,
                        i=state["id"])  # fmt: skip
    assert row[:3] == ("auto", "in_distribution", auto_id)
    assert np.isfinite(row[3]) and row[3] > 0  # scored inside the segmenter's liver

    manual_id = register(stack, "scorer", with_patch_calibration(scorer, ALL_MANUAL, tmp / "p-manual.pt"))
    _, series, state = push_and_route(stack, {"auto", "manual"})
    assert state["status"] == "manual"
    (row,) = stack.rows("SELECT reason, scorer_version_id FROM series_decisions WHERE series_id=:i", i=state["id"])
    assert row == ("anomalous", manual_id)
    with stack.client("radiologist") as reader:
        case = next(c for c in reader.get("/queue").json() if c["series_uid"] == series)
        evidence = reader.get(f"/queue/{case['id']}").json()["evidence"]
        assert len(evidence["slice_scores"]) == 20 and max(evidence["slice_scores"]) > 0
        png = reader.get(f"/queue/{case['id']}/evidence.png")
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"

    # registered before calibration: it scores, and the missing threshold sends the series to a radiologist
    uncalibrated_id = register(stack, "scorer", scorer)
    _, _, state = push_and_route(stack, {"auto", "manual", "failed"})
    assert state["status"] == "manual"
    (row,) = stack.rows("SELECT reason, scorer_version_id FROM series_decisions WHERE series_id=:i", i=state["id"])
    assert row == ("scorer_uncalibrated", uncalibrated_id)

    # a segmenter that finds no liver: nothing to score in, so nothing is accepted on a score of 0
    register(stack, "scorer", with_patch_calibration(scorer, ALL_AUTO, tmp / "p-auto-2.pt"))
    register(stack, "segmenter", segmenter_with_bias(tmp, "nowhere", -20.0))
    _, _, state = push_and_route(stack, {"auto", "manual"})
    assert state["status"] == "manual"
    assert stack.scalar("SELECT reason FROM series_decisions WHERE series_id=:i", i=state["id"]) == "no_liver_found"


def test_the_committed_default_scorer_is_calibrated_and_gates(patch_stack) -> None:  # type: ignore[no-untyped-def]
    stack, tmp = patch_stack
    if not SHIPPED_SCORER.exists():
        pytest.fail(f"{SHIPPED_SCORER} is missing: the default scorer must be committed")
    register(stack, "segmenter", segmenter_with_bias(tmp, "everywhere-default", 20.0))
    default_id = register(stack, "scorer", SHIPPED_SCORER)
    _, _, state = push_and_route(stack, {"auto", "manual"})
    (row,) = stack.rows("SELECT reason, scorer_version_id, threshold FROM series_decisions WHERE series_id=:i",
                        i=state["id"])  # fmt: skip
    assert row[1] == default_id
    assert row[2] is not None and row[0] in ("in_distribution", "anomalous")

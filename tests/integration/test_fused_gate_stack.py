"""The fused gate through the whole stack (HTTP STOW push, PostgreSQL and SQLite, Redis or the filesystem
broker, a Celery worker): a segmenter that carries a failure-risk model (``gatekeeper fit-failure-risk``)
has its risk computed by the worker on every series, and a series the anomaly score accepts still goes to
a radiologist when the risk flags slices of the liver's core, with the evidence and the versions recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.risk import FailureRisk
from testkit.tiny_models import ALL_AUTO, train_tiny_patch_scorer, with_patch_calibration
from tests.api.test_pages_access import browser
from tests.integration.test_loop_e2e import push_and_route, register
from tests.integration.test_patch_scorer_stack import segmenter_with_bias

pytestmark = pytest.mark.integration


def with_risk(segmenter: Path, intercept: float, out: Path, *, scorer_sha256: str | None = None) -> Path:
    """The segmenter's checkpoint carrying a one-feature risk model: risk = sigmoid(intercept) on every slice
    (coefficient 0), threshold 0.01; with ``scorer_sha256`` it also fuses the anomaly score of that scorer."""
    names = ("log_area", "anomaly") if scorer_sha256 else ("log_area",)
    risk = FailureRisk(features=names, mean=(0.0,) * len(names), scale=(1.0,) * len(names),
                       coef=(0.0,) * len(names), intercept=intercept, threshold=0.01, alpha=0.01,
                       fitted_on={"scorer_sha256": scorer_sha256})  # fmt: skip
    ckpt = torch.load(segmenter, weights_only=False)
    ckpt["metadata"]["failure_risk"] = risk.as_json()
    torch.save(ckpt, out)
    return out


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def fused_stack(stack_factory, tmp_path_factory, request):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("fused-models")
    # the sample is a 40 mm slab through the liver, which the input checks refuse (liver_cut_by_fov) before any
    # score; this module tests the fused risk, so partial coverage is accepted (test_input_checks_stack: the refusal)
    stack = stack_factory(database=request.param, GATEKEEPER_MODELS_DIR=str(tmp / "registry"),
                          GATEKEEPER_PARTIAL_LIVER_COVERAGE="accept")  # fmt: skip
    scorer = with_patch_calibration(train_tiny_patch_scorer(tmp / "patch"), ALL_AUTO, tmp / "p-auto.pt")
    return stack, tmp, scorer


def test_the_risk_flags_a_series_the_anomaly_score_accepts(fused_stack) -> None:  # type: ignore[no-untyped-def]
    stack, tmp, scorer = fused_stack
    register(stack, "scorer", scorer)
    everywhere = segmenter_with_bias(tmp, "everywhere", 20.0)
    risky_id = register(stack, "segmenter", with_risk(everywhere, 10.0, tmp / "risky.pt"))
    _, series, state = push_and_route(stack, {"auto", "manual"})
    assert state["status"] == "manual"
    (row,) = stack.rows("SELECT reason, segmenter_version_id FROM series_decisions WHERE series_id=:i",
                        i=state["id"])  # fmt: skip
    assert row == ("segmentation_risk", risky_id)
    with stack.client("radiologist") as reader:
        case = next(c for c in reader.get("/queue").json() if c["series_uid"] == series)
        assert case["reason"] == "segmentation_risk"
        evidence = reader.get(f"/queue/{case['id']}").json()["evidence"]
    assert evidence["segmenter_version_id"] == risky_id
    assert len(evidence["slice_risk"]) == 20 and min(evidence["slice_risk"]) > 0.99
    assert evidence["risk_threshold"] == pytest.approx(0.01)
    # the core of a 20-slice liver: fractions 0.2-0.8 of its extent
    assert evidence["risk_flagged_slices"] == list(range(4, 16))
    assert evidence["detail"].startswith("segmentation risk: 12 slices of the liver's core over the threshold 0.010")
    # the case page in a browser session draws the risk along the series and names the flagged slices
    page_client, _ = browser(stack, stack.tokens["radiologist"])
    try:
        page = page_client.get(f"/ui/cases/{case['id']}")
    finally:
        page_client.close()
    assert page.status_code == 200
    assert 'aria-label="segmentation failure risk along the series"' in page.text
    assert "over the risk threshold (dashed): 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15." in page.text


def test_a_low_risk_series_goes_auto_and_a_risk_model_of_another_scorer_is_not_used(fused_stack) -> None:  # type: ignore[no-untyped-def]
    stack, tmp, scorer = fused_stack
    register(stack, "scorer", scorer)
    everywhere = segmenter_with_bias(tmp, "everywhere-2", 20.0)
    safe_id = register(stack, "segmenter", with_risk(everywhere, -10.0, tmp / "safe.pt"))
    _, _, state = push_and_route(stack, {"auto", "manual"})
    assert state["status"] == "auto"
    (row,) = stack.rows("SELECT reason, segmenter_version_id FROM series_decisions WHERE series_id=:i",
                        i=state["id"])  # fmt: skip
    assert row == ("in_distribution", safe_id)
    # fit with another scorer's anomaly score: its coefficients mean nothing here, so the worker ignores it
    other = register(stack, "segmenter", with_risk(everywhere, 10.0, tmp / "other.pt", scorer_sha256="0" * 64))
    _, _, state = push_and_route(stack, {"auto", "manual"})
    (row,) = stack.rows("SELECT reason, segmenter_version_id FROM series_decisions WHERE series_id=:i",
                        i=state["id"])  # fmt: skip
    assert row == ("in_distribution", other)


def test_the_default_disagreement_risk_gates_through_the_worker(fused_stack) -> None:  # type: ignore[no-untyped-def]
    """The shipped kind of risk (``fit-failure-risk``'s default): the TTA disagreement, only its threshold fitted.
    A segmenter that calls the whole crop liver agrees with itself under every pass (disagreement 0): accepted;
    the same risk with no threshold that conformal risk control could grant accepts nothing."""
    from dataclasses import replace

    from models.risk import disagreement_risk

    stack, tmp, scorer = fused_stack
    register(stack, "scorer", scorer)
    everywhere = segmenter_with_bias(tmp, "everywhere-3", 20.0)
    for name, threshold, status in (("agree", 0.01, "auto"), ("no-threshold", None, "manual")):
        ckpt = torch.load(everywhere, weights_only=False)
        risk = replace(disagreement_risk(), threshold=threshold, alpha=0.01, fitted_on={"scorer_sha256": None})
        ckpt["metadata"]["failure_risk"] = risk.as_json()
        torch.save(ckpt, path := tmp / f"disagreement-{name}.pt")
        version = register(stack, "segmenter", path)
        _, _, state = push_and_route(stack, {"auto", "manual"})
        assert state["status"] == status, name
        (row,) = stack.rows("SELECT reason, segmenter_version_id FROM series_decisions WHERE series_id=:i",
                            i=state["id"])  # fmt: skip
        assert row == ("in_distribution" if status == "auto" else "segmentation_risk", version)

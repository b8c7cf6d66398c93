"""The role x route matrix, written by hand and checked cell by cell over HTTP.

The table is the product's intent, typed out independently of the code it checks: a route whose roles
drift (promotion opened to a PACS token) fails here, and a new route without a row fails until someone
decides who may use it.
"""

from __future__ import annotations

import pytest

from app.core.security import Role
from app.main import api_routes
from tests.conftest import Stack

pytestmark = pytest.mark.integration
SAMPLE_PATH = {"study_uid": "1.2.3", "series_uid": "1.2.4", "sop_uid": "1.2.5", "case_id": "999999",
               "model_id": "999999", "job_id": "999999", "token_id": "999999", "delivery_id": "999999",
               "frame_list": "1", "frame_number": "1", "tag_path": "7FE00010"}  # fmt: skip

PACS, RADIOLOGIST, ML_ENGINEER, ADMIN = Role.PACS, Role.RADIOLOGIST, Role.ML_ENGINEER, Role.ADMIN
OPEN = {("GET", "/healthz"), ("GET", "/readyz")}  # the probes: no token at all
INGEST = frozenset({PACS, ADMIN})
STOW = INGEST | {RADIOLOGIST}  # a radiologist's STOW stores contour SEGs only (app/services/contour_stow.py)
READERS = frozenset({PACS, RADIOLOGIST, ML_ENGINEER, ADMIN})
QUEUE = frozenset({RADIOLOGIST, ADMIN})
MODELS = frozenset({ML_ENGINEER, ADMIN})
MONITORING = Role.MONITORING
ADMINS = frozenset({ADMIN})

EXPECTED: dict[tuple[str, str], frozenset[Role]] = {
    # STOW-RS: a PACS writes images, a radiologist contours; Orthanc peer push: only a PACS
    ("POST", "/dicomweb/studies"): STOW,
    ("POST", "/dicomweb/studies/{study_uid}"): STOW,
    ("POST", "/instances"): INGEST,
    ("GET", "/system"): INGEST,
    # QIDO-RS and WADO-RS: every role that works with the images
    ("GET", "/dicomweb/studies"): READERS,
    ("GET", "/dicomweb/series"): READERS,
    ("GET", "/dicomweb/instances"): READERS,
    ("GET", "/dicomweb/studies/{study_uid}/series"): READERS,
    ("GET", "/dicomweb/studies/{study_uid}/instances"): READERS,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances"): READERS,
    ("GET", "/dicomweb/studies/{study_uid}"): READERS,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}"): READERS,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"): READERS,
    ("GET", "/dicomweb/studies/{study_uid}/metadata"): READERS,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/metadata"): READERS,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata"): READERS,
    # what a viewer reads: frames, bulk data, rendered frames
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame_list}"): READERS,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulkdata/{tag_path:path}"): READERS,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/rendered"): READERS,
    (
        "GET",
        "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame_number}/rendered",
    ): READERS,
    # a series' state is read by all; completing it early is the sender's call
    ("GET", "/series/{series_uid}"): READERS,
    ("POST", "/series/{series_uid}/complete"): INGEST,
    # the manual queue: radiologists only
    ("GET", "/queue"): QUEUE,
    ("GET", "/queue/{case_id}"): QUEUE,
    ("GET", "/queue/{case_id}/evidence.png"): QUEUE,
    ("POST", "/queue/next"): QUEUE,
    ("POST", "/queue/{case_id}/claim"): QUEUE,
    ("POST", "/queue/{case_id}/release"): QUEUE,
    ("POST", "/queue/{case_id}/reject"): QUEUE,
    ("POST", "/queue/{case_id}/contour"): QUEUE,
    # which model routes the next series, and retraining: ML engineers only
    ("GET", "/models"): MODELS,
    ("POST", "/models/{model_id}/promote"): MODELS,
    ("POST", "/models/rollback"): MODELS,
    ("POST", "/training-jobs"): MODELS,
    ("GET", "/training-jobs"): MODELS,
    ("GET", "/training-jobs/{job_id}"): MODELS,
    ("POST", "/training-jobs/{job_id}/cancel"): MODELS,
    # tokens: admins only; metrics: Prometheus' token (role monitoring) and admins
    ("GET", "/tokens"): ADMINS,
    ("POST", "/tokens/{token_id}/revoke"): ADMINS,
    ("GET", "/metrics"): frozenset({MONITORING, ADMIN}),
    # results on their way back to the PACS: admins only
    ("GET", "/admin/deliveries"): ADMINS,
    ("GET", "/admin/deliveries/{delivery_id}"): ADMINS,
    ("POST", "/admin/deliveries/{delivery_id}/retry"): ADMINS,
}


def test_the_table_has_a_row_for_every_route_and_no_other() -> None:
    served = {(method, route.path) for route in api_routes() for method in route.methods - {"HEAD"}}
    assert not EXPECTED.keys() & OPEN
    assert served - EXPECTED.keys() - OPEN == set(), "a route without a row: decide who may use it, add a row"
    assert (EXPECTED.keys() | OPEN) - served == set(), "a row for a route the API no longer serves"


@pytest.fixture(scope="module")
def quiet(stack_factory) -> Stack:  # type: ignore[no-untyped-def]
    return stack_factory(worker=False)


@pytest.mark.parametrize("role", list(Role))
def test_every_cell(quiet: Stack, role: Role) -> None:
    with quiet.client(role.value) as c:
        for (method, template), allowed in EXPECTED.items():
            path = template.replace(":path}", "}").format(**SAMPLE_PATH)
            r = c.request(method, path, content=b"{}", headers={"Content-Type": "application/json"})
            assert r.status_code < 500, (role, method, path, r.status_code, r.text[:200])
            if role in allowed:
                assert r.status_code not in (401, 403), (role, method, path, r.status_code)
            else:
                assert r.status_code == 403, (role, method, path, r.status_code)


def test_probes_need_no_token(quiet: Stack) -> None:
    with quiet.client(None) as c:
        for method, path in OPEN:
            assert c.request(method, path).status_code in (200, 503), path  # /readyz: 503 without a scorer


def test_extra_fields_are_refused(quiet: Stack) -> None:
    with quiet.client("ml_engineer") as c:
        r = c.post("/training-jobs", json={"kind": "segmenter", "surprise": 1})
        assert r.status_code == 422 and "surprise" in r.text
        r = c.post("/training-jobs", json={"kind": "segmenter", "params": {"steps": 5, "lr": 1}})
        assert r.status_code == 422

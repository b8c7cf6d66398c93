"""The role x route matrix, generated from the router and checked cell by cell over HTTP."""

from __future__ import annotations

import pytest

from app.core.security import Role
from app.main import api_routes
from tests.conftest import Stack

pytestmark = pytest.mark.integration
PROBES = {"/healthz", "/readyz"}
SAMPLE_PATH = {"study_uid": "1.2.3", "series_uid": "1.2.4", "sop_uid": "1.2.5", "case_id": "999999",
               "model_id": "999999", "job_id": "999999"}  # fmt: skip


def matrix() -> list[tuple[str, str, frozenset[Role]]]:
    cells = []
    for route in api_routes():
        if route.path in PROBES:
            continue
        allowed = next(d.call.allowed_roles for d in route.dependant.dependencies
                       if hasattr(d.call, "allowed_roles"))  # fmt: skip
        path = route.path.format(**SAMPLE_PATH)
        for method in route.methods - {"HEAD"}:
            cells.append((method, path, frozenset(allowed)))
    return cells


def test_matrix_covers_every_route_and_role() -> None:
    cells = matrix()
    assert len(cells) >= 25
    # the product's intent, spelled out: who may do what
    allowed = {(m, p): a for m, p, a in cells}
    assert allowed[("POST", "/dicomweb/studies")] == {Role.PACS, Role.ADMIN}
    assert allowed[("POST", "/queue/next")] == {Role.RADIOLOGIST, Role.ADMIN}
    assert allowed[("POST", "/training-jobs")] == {Role.ML_ENGINEER, Role.ADMIN}
    assert allowed[("POST", "/models/rollback")] == {Role.ML_ENGINEER, Role.ADMIN}
    assert Role.RADIOLOGIST in allowed[("GET", "/dicomweb/studies")]


@pytest.fixture(scope="module")
def quiet(stack_factory) -> Stack:  # type: ignore[no-untyped-def]
    return stack_factory(worker=False)


@pytest.mark.parametrize("role", list(Role))
def test_every_cell(quiet: Stack, role: Role) -> None:
    with quiet.client(role.value) as c:
        for method, path, allowed in matrix():
            r = c.request(method, path, content=b"{}", headers={"Content-Type": "application/json"})
            assert r.status_code < 500, (role, method, path, r.status_code, r.text[:200])
            if role in allowed:
                assert r.status_code not in (401, 403), (role, method, path, r.status_code)
            else:
                assert r.status_code == 403, (role, method, path, r.status_code)


def test_extra_fields_are_refused(quiet: Stack) -> None:
    with quiet.client("ml_engineer") as c:
        r = c.post("/training-jobs", json={"kind": "segmenter", "surprise": 1})
        assert r.status_code == 422 and "surprise" in r.text
        r = c.post("/training-jobs", json={"kind": "segmenter", "params": {"steps": 5, "lr": 1}})
        assert r.status_code == 422

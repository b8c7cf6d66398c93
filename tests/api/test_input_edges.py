"""Inputs schemathesis found reaching PostgreSQL and failing there as 500s (tests/api/test_schemathesis.py).

Row ids are PostgreSQL integers (a larger id in a path raised "integer out of range"); text cannot hold a
NUL byte ("PostgreSQL text fields cannot contain NUL"), so QIDO filters and a reject reason with one
failed too. Both are refused at the edge now: 422, like any other invalid parameter.
"""

from __future__ import annotations

import pytest

from tests.conftest import Stack

pytestmark = pytest.mark.integration
TOO_BIG = 2**31  # one past PostgreSQL's integer


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("post", f"/queue/{TOO_BIG}/release", "radiologist"),
        ("post", f"/queue/{TOO_BIG}/claim", "radiologist"),
        ("get", f"/queue/{TOO_BIG}", "radiologist"),
        ("post", f"/models/{TOO_BIG}/promote", "ml_engineer"),
        ("get", f"/training-jobs/{TOO_BIG}", "ml_engineer"),
        ("get", f"/training-jobs/{2**63}", "ml_engineer"),
    ],
)
def test_row_id_past_postgres_integer_is_422(stack: Stack, method: str, path: str, role: str) -> None:
    with stack.client(role) as c:
        assert getattr(c, method)(path).status_code == 422


@pytest.mark.parametrize(
    "query",
    [
        {"PatientID": "a\x00b"},
        {"AccessionNumber": "\x00"},
        {"ModalitiesInStudy": "C\x00T"},
    ],
)
def test_nul_in_a_study_filter_is_400(stack: Stack, query: dict[str, str]) -> None:
    with stack.client("pacs") as c:
        r = c.get("/dicomweb/studies", params=query)  # PS3.18: a bad query is 400, and says which key
        assert r.status_code == 400 and next(iter(query)) in r.json()["detail"]


@pytest.mark.parametrize("path", ["/dicomweb/series", "/dicomweb/studies/1.2.3/series"])
def test_nul_in_a_series_filter_is_400(stack: Stack, path: str) -> None:
    with stack.client("pacs") as c:
        assert c.get(path, params={"Modality": "C\x00T"}).status_code == 400


def test_huge_offset_is_not_a_500(stack: Stack) -> None:
    with stack.client("pacs") as c:
        assert c.get("/dicomweb/series", params={"offset": 2**63}).status_code < 500


def test_nul_in_a_reject_reason_is_422(stack: Stack) -> None:
    with stack.client("radiologist") as c:
        assert c.post("/queue/1/reject", json={"reason": "normal\x00"}).status_code == 422

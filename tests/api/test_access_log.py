"""The access log (issue #15, item 4): one line per request with method, route template, status and duration;
never a UID, a PatientID or a query. Text and JSON formats, over real HTTP."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from app.client import stow
from testkit.dicom_factory import make_series
from tests.api.test_tokens import extra_api
from tests.conftest import Stack

pytestmark = pytest.mark.integration
LINE = re.compile(r" INFO gatekeeper\.access: (?P<method>[A-Z]+) (?P<route>\S+) (?P<status>\d{3}) (?P<ms>[\d.]+) ms$")


def _requests(stack: Stack, url: str) -> tuple[list[str], set[str]]:
    """200, 400, 401 and 404 replies, each on a path or query that holds a UID or a PatientID; what to look for."""
    spec, blobs = make_series(1, patient_id="PID-ACCESS-77")
    with stack.client("pacs") as pacs:
        assert stow(pacs, blobs).status_code == 200
    unknown = generate_uid()
    secrets = {spec.series_uid, spec.study_uid, unknown, "PID-ACCESS-77"}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {stack.tokens['pacs']}"}) as c:
        assert c.get(f"/series/{spec.series_uid}").status_code == 200
        assert c.get(f"/series/{unknown}").status_code == 404
        assert c.get("/dicomweb/studies", params={"PatientID": "PID-ACCESS-77", "Nonsense": "1"}).status_code == 400
        assert c.get(f"/dicomweb/studies/{spec.study_uid}/metadata", headers={"Authorization": ""}).status_code == 401
        assert c.get(f"/no/such/route/{unknown}").status_code == 404
    return ["GET /series/{series_uid} 200", "GET /series/{series_uid} 404", "GET /dicomweb/studies 400",
            "GET /dicomweb/studies/{study_uid}/metadata 401", "GET (unmatched) 404"], secrets  # fmt: skip


def test_text_access_log(stack: Stack, tmp_path: Path) -> None:
    with extra_api(stack, tmp_path, GATEKEEPER_LOG_LEVEL="INFO") as api:
        expected, secrets = _requests(stack, api.url)
    text = (tmp_path / "api.log").read_text()
    lines = [m for m in map(LINE.search, text.splitlines()) if m]
    seen = [f"{m['method']} {m['route']} {m['status']}" for m in lines]
    for want in expected:
        assert want in seen, (want, seen)
    assert all(float(m["ms"]) >= 0 for m in lines)
    for secret in secrets:
        assert secret not in text, secret


def test_json_log(stack: Stack, tmp_path: Path) -> None:
    with extra_api(stack, tmp_path, GATEKEEPER_LOG_LEVEL="INFO", GATEKEEPER_LOG_FORMAT="json") as api:
        expected, secrets = _requests(stack, api.url)
    text = (tmp_path / "api.log").read_text()
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = [r for r in records if r["logger"] == "gatekeeper.access"]
    seen = [f"{r['method']} {r['route']} {r['status']}" for r in access]
    for want in expected:
        assert want in seen, (want, seen)
    assert all(isinstance(r["duration_ms"], float | int) and r["level"] == "INFO" and r["ts"] for r in access)
    assert len(records) == len([line for line in text.splitlines() if line.strip()])  # every line is JSON
    for secret in secrets:
        assert secret not in text, secret


def test_access_log_can_be_turned_off(stack: Stack, tmp_path: Path) -> None:
    with extra_api(stack, tmp_path, GATEKEEPER_LOG_LEVEL="INFO", GATEKEEPER_ACCESS_LOG="false") as api:
        assert httpx.get(f"{api.url}/healthz").status_code == 200
    assert "gatekeeper.access" not in (tmp_path / "api.log").read_text()

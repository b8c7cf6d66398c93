"""Orthanc peer push: POST /instances (plain and gzip) and GET /system."""

from __future__ import annotations

import gzip

import httpx
import pytest

from testkit.dicom_factory import make_series
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def test_push_plain_then_duplicate(stack: Stack, pacs: httpx.Client) -> None:
    spec, [blob] = make_series(1)
    r = pacs.post("/instances", content=blob, headers={"Content-Type": "application/dicom"})
    assert r.status_code == 200 and r.json()["Status"] == "Success"
    r = pacs.post("/instances", content=blob)
    assert r.status_code == 200 and r.json()["Status"] == "AlreadyStored"
    assert stack.scalar("SELECT count(*) FROM instances i JOIN series s ON s.id=i.series_id "
                        "WHERE s.series_uid=:u", u=spec.series_uid) == 1  # fmt: skip


def test_push_gzip(pacs: httpx.Client) -> None:
    _, [blob] = make_series(1)
    r = pacs.post("/instances", content=gzip.compress(blob), headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["Status"] == "Success"


def test_gzip_bomb_is_413(stack: Stack, pacs: httpx.Client) -> None:
    bomb = gzip.compress(b"\0" * (300 * 1024**2))  # 300 MiB of zeros in ~300 KiB, over the 256 MiB limit
    before = stack.scalar("SELECT count(*) FROM instances")
    r = pacs.post("/instances", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413
    assert stack.scalar("SELECT count(*) FROM instances") == before


def test_garbage_is_400_with_reason(pacs: httpx.Client) -> None:
    r = pacs.post("/instances", content=b"\x00" * 1000)
    assert r.status_code == 400
    assert r.json()["FailureReason"] == 0xC000 and "DICM" in r.json()["Message"]


def test_bad_gzip_is_400(pacs: httpx.Client) -> None:
    r = pacs.post("/instances", content=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400


def test_system(pacs: httpx.Client) -> None:
    r = pacs.get("/system")
    assert r.status_code == 200 and r.json()["Name"] == "gatekeeper"

"""STOW-RS through real HTTP, PostgreSQL and Redis: status codes, bodies, duplicates, conflicts."""

from __future__ import annotations

import io
import socket

import httpx
import pydicom
import pytest

from app.client import multipart_body, stow
from testkit.dicom_factory import ct_dataset, make_series, to_bytes, uid_of
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def _seq(body: dict, tag: str) -> list[dict]:
    return body.get(tag, {}).get("Value", [])


def _count(stack: Stack, series_uid: str) -> int:
    return int(stack.scalar("SELECT count(*) FROM instances i JOIN series s ON s.id = i.series_id "  # type: ignore[arg-type]
                            "WHERE s.series_uid = :u", u=series_uid))  # fmt: skip


def test_all_stored_is_200_with_retrieve_urls(stack: Stack, pacs: httpx.Client) -> None:
    spec, blobs = make_series(3)
    r = stow(pacs, blobs)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/dicom+json")
    items = _seq(r.json(), "00081199")
    assert len(items) == 3 and "00081198" not in r.json()
    assert {i["00081155"]["Value"][0] for i in items} == {uid_of(b) for b in blobs}
    url = items[0]["00081190"]["Value"][0]
    assert f"/dicomweb/studies/{spec.study_uid}/series/{spec.series_uid}/instances/" in url
    assert _count(stack, spec.series_uid) == 3


def test_content_length_body_is_accepted(stack: Stack, pacs: httpx.Client) -> None:
    spec, blobs = make_series(2)
    assert stow(pacs, blobs, chunked=False).status_code == 200
    assert _count(stack, spec.series_uid) == 2


def test_some_stored_is_202_with_failure_item(pacs: httpx.Client) -> None:
    _, blobs = make_series(2)
    r = stow(pacs, [blobs[0], b"not dicom at all", blobs[1]])
    assert r.status_code == 202
    failed = _seq(r.json(), "00081198")
    assert len(failed) == 1 and failed[0]["00081197"]["Value"] == [0xC000]
    assert "DICM" in failed[0]["00000902"]["Value"][0]
    assert len(_seq(r.json(), "00081199")) == 2


def test_none_stored_is_400(pacs: httpx.Client) -> None:
    r = stow(pacs, [b"garbage", b"\x00" * 200])
    assert r.status_code == 400
    assert [f["00081197"]["Value"][0] for f in _seq(r.json(), "00081198")] == [0xC000, 0xC000]


def test_study_uid_mismatch_is_409(stack: Stack, pacs: httpx.Client) -> None:
    spec, blobs = make_series(2)
    r = stow(pacs, blobs, study_uid="1.2.3.4.5")
    assert r.status_code == 409
    assert {f["00081197"]["Value"][0] for f in _seq(r.json(), "00081198")} == {0xC409}
    assert _count(stack, spec.series_uid) == 0


def test_study_in_url_matches(pacs: httpx.Client) -> None:
    spec, blobs = make_series(2)
    assert stow(pacs, blobs, study_uid=spec.study_uid).status_code == 200


def test_wrong_media_type_is_415(pacs: httpx.Client) -> None:
    r = pacs.post("/dicomweb/studies", content=b"x", headers={"Content-Type": "application/json"})
    assert r.status_code == 415
    r = pacs.post("/dicomweb/studies", content=b"x",
                  headers={"Content-Type": 'multipart/related; type="application/dicom+xml"; boundary=x'})  # fmt: skip
    assert r.status_code == 415


def test_same_bytes_twice_is_success_without_new_row(stack: Stack, pacs: httpx.Client) -> None:
    spec, blobs = make_series(2)
    assert stow(pacs, blobs).status_code == 200
    files_before = stack.scalar("SELECT count(*) FROM instances")
    r = stow(pacs, blobs)
    assert r.status_code == 200 and len(_seq(r.json(), "00081199")) == 2
    assert stack.scalar("SELECT count(*) FROM instances") == files_before
    assert _count(stack, spec.series_uid) == 2


def test_same_uid_other_bytes_is_refused_and_audited(stack: Stack, pacs: httpx.Client) -> None:
    spec, blobs = make_series(1)
    assert stow(pacs, blobs).status_code == 200
    ds = pydicom.dcmread(io.BytesIO(blobs[0]))
    ds.SeriesDescription = "changed"
    sha_before = stack.scalar("SELECT sha256 FROM instances WHERE sop_instance_uid = :u", u=ds.SOPInstanceUID)
    audits_before = stack.scalar("SELECT count(*) FROM audit_events WHERE action = 'instance.conflict'")
    r = stow(pacs, [to_bytes(ds)])
    assert r.status_code == 409
    assert _seq(r.json(), "00081198")[0]["00081197"]["Value"] == [0x0111]
    assert stack.scalar("SELECT sha256 FROM instances WHERE sop_instance_uid = :u", u=ds.SOPInstanceUID) == sha_before
    assert stack.scalar("SELECT count(*) FROM audit_events WHERE action = 'instance.conflict'") == audits_before + 1


def test_non_ct_modality_is_refused(pacs: httpx.Client) -> None:
    spec, _ = make_series(1)
    ds = ct_dataset(spec, 0)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    r = stow(pacs, [to_bytes(ds)])
    assert r.status_code == 400
    assert _seq(r.json(), "00081198")[0]["00081197"]["Value"] == [0x0122]


def test_declared_length_over_limit_is_413_before_reading(stack: Stack) -> None:
    # A raw socket: httpx will not send a Content-Length it cannot honour.
    host, port = stack.service.url.removeprefix("http://").split(":")
    head = (f"POST /dicomweb/studies HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {stack.tokens['pacs']}\r\n"
            'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
            f"Content-Length: {10 * 1024**3}\r\n\r\n")  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + b"--b\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:100]


def test_chunked_body_over_limit_is_413(stack: Stack, pacs: httpx.Client) -> None:
    chunk = b"\0" * (1024 * 1024)

    def body():  # type: ignore[no-untyped-def]
        yield b"--b\r\nContent-Type: application/dicom\r\n\r\n"
        for _ in range(80):  # 80 MiB > the 64 MiB limit of the test stack
            yield chunk

    headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    r = pacs.post("/dicomweb/studies", content=body(), headers=headers)
    assert r.status_code == 413


def test_missing_closing_boundary_is_400_and_stores_nothing(stack: Stack, pacs: httpx.Client) -> None:
    spec, blobs = make_series(1)
    body = b"".join(multipart_body(blobs, "bb"))[: -len("--bb--\r\n")]
    r = pacs.post("/dicomweb/studies", content=body,
                  headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=bb'})  # fmt: skip
    assert r.status_code == 400
    assert _count(stack, spec.series_uid) == 0

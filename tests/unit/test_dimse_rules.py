"""The DIMSE allow-list and the status table (app/services/dimse.py)."""

from __future__ import annotations

import pytest

from app.services.dimse import (
    STATUS_FOR_REASON,
    AllowListError,
    check_ae_title,
    parse_allowed_peers,
    peer_allowed,
    status_of,
)
from app.services.failures import FailureReason
from app.services.ingest import Outcome


def test_entries_match_title_and_host() -> None:
    rules = parse_allowed_peers(" ORTHANC@10.0.0.5, CT01@192.168.1.0/24 ,ANY@*, V6@::1")
    assert peer_allowed(rules, ae_title="ORTHANC", address="10.0.0.5")
    assert peer_allowed(rules, ae_title="ORTHANC ", address="::ffff:10.0.0.5")  # padded title, mapped IPv4
    assert not peer_allowed(rules, ae_title="ORTHANC", address="10.0.0.6")
    assert peer_allowed(rules, ae_title="CT01", address="192.168.1.77")
    assert not peer_allowed(rules, ae_title="CT01", address="192.168.2.1")
    assert peer_allowed(rules, ae_title="ANY", address="198.51.100.9")
    assert peer_allowed(rules, ae_title="V6", address="::1")
    assert not peer_allowed(rules, ae_title="orthanc", address="10.0.0.5")  # AE titles are case-sensitive
    assert not peer_allowed(rules, ae_title="ORTHANC", address="not-an-address")
    assert parse_allowed_peers("") == [] and not peer_allowed([], ae_title="ANY", address="127.0.0.1")


def test_host_names_resolve_at_parse() -> None:
    [rule] = parse_allowed_peers("LOCAL@localhost")
    assert peer_allowed([rule], ae_title="LOCAL", address="127.0.0.1")


@pytest.mark.parametrize(
    ("text", "message"),
    [("ORTHANC", "expected AE@host"), ("ORTHANC@", "expected AE@host"), ("@10.0.0.1", "not an AE title"),
     ("A" * 17 + "@*", "not an AE title"), ("BAD\\AE@*", "not an AE title"),
     ("OK@no-such-host.invalid", "not an address, a network or a known name")],
)  # fmt: skip
def test_malformed_entries_are_refused_with_the_entry(text: str, message: str) -> None:
    with pytest.raises(AllowListError, match=message):
        parse_allowed_peers(text)


def test_ae_title_checks() -> None:
    assert check_ae_title("GATEKEEPER", "x") == "GATEKEEPER"
    for bad in ("", "   ", "A" * 17, "É"):
        with pytest.raises(AllowListError):
            check_ae_title(bad, "x")


def test_every_failure_reason_has_a_dimse_status_in_its_class() -> None:
    assert set(STATUS_FOR_REASON) == set(FailureReason)
    for reason, status in STATUS_FOR_REASON.items():
        refused = Outcome("1.2", "1.2.3", reason=reason, message="m" * 100)
        result = status_of(refused)
        assert result.status == status and len(result.comment) <= 64  # ErrorComment is LO
        assert status != 0x0000 and not 0xB000 <= status <= 0xBFFF  # a refusal is never success or a warning
    assert status_of(Outcome("1.2", "1.2.3", duplicate=True)).status == 0x0000

"""Tokens (issue #15, item 5): list and revoke (CLI and API), revocation at once, names, the bootstrap token,
failed attempts limited per client. Over real HTTP on PostgreSQL and SQLite."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from app.processes import Service
from testkit.servers import ROOT
from tests.conftest import Stack, make_token

pytestmark = pytest.mark.integration
STRONG = "Zq8-vR2_kP5xW9mB3nT7yL4cH6jD1fGs"  # 32 characters, 31 distinct


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def gk(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / ".venv" / "bin" / "gatekeeper"), "token", *args], capture_output=True,
                          text=True, env={**os.environ, **stack.service.env})  # fmt: skip


def listed(stack: Stack) -> dict[int, dict]:
    out = gk(stack, "list", "--json")
    assert out.returncode == 0, out.stderr
    return {row["id"]: row for row in json.loads(out.stdout)}


@contextmanager
def extra_api(stack: Stack, folder: Path, **env: str) -> Iterator[Service]:
    """Another API process on the same database and broker, with its own settings."""
    service = Service(env={**stack.service.env, "GATEKEEPER_RUN_DISPATCHER": "false", **env}, log_dir=folder)
    try:
        service.start_api()
        yield service
    finally:
        service.stop()


def test_revoked_token_is_refused_on_its_very_next_request(any_stack: Stack) -> None:
    """A per-process cache once kept a revoked token working up to GATEKEEPER_TOKEN_CACHE_S (10 s)."""
    token = make_token(any_stack.service.env, "pacs")
    with httpx.Client(base_url=any_stack.service.url, headers=_bearer(token)) as c:
        assert c.get("/dicomweb/studies").status_code in (200, 204)
        assert c.get("/dicomweb/studies").status_code in (200, 204)  # a second use: a cache would hold it now
        any_stack.scalar("UPDATE api_tokens SET revoked_at = CURRENT_TIMESTAMP WHERE id = (SELECT max(id) FROM "
                         "api_tokens) RETURNING id")  # fmt: skip
        assert c.get("/dicomweb/studies").status_code == 401


def test_cli_create_list_revoke(any_stack: Stack) -> None:
    made = gk(any_stack, "create", "--role", "radiologist", "--name", "dr-a")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert "dr-a" in made.stderr and secret not in made.stderr
    token_id = int(made.stderr.split("token ")[1].split()[0])
    row = listed(any_stack)[token_id]
    assert (row["name"], row["role"], row["state"], row["revoked_at"]) == ("dr-a", "radiologist", "active", None)
    table = gk(any_stack, "list").stdout
    assert "dr-a" in table and secret not in table and secret not in json.dumps(listed(any_stack))
    with httpx.Client(base_url=any_stack.service.url, headers=_bearer(secret)) as c:
        assert c.get("/queue").status_code == 200
        out = gk(any_stack, "revoke", str(token_id))
        assert out.returncode == 0, out.stderr
        assert c.get("/queue").status_code == 401  # at once
    assert listed(any_stack)[token_id]["state"] == "revoked"
    again = gk(any_stack, "revoke", str(token_id))
    assert again.returncode == 1 and "already revoked" in again.stderr
    assert gk(any_stack, "revoke", "99999999").returncode == 1
    audit = any_stack.rows("SELECT actor, action, entity_id FROM audit_events WHERE entity_type = 'api_token' "
                           "AND entity_id = :i ORDER BY id", i=str(token_id))  # fmt: skip
    assert audit == [("cli", "token.created", str(token_id)), ("cli", "token.revoked", str(token_id))]
    # the name is free again once its token is revoked
    assert gk(any_stack, "create", "--role", "radiologist", "--name", "dr-a").returncode == 0


def test_names_are_required_unique_and_never_default(any_stack: Stack) -> None:
    assert gk(any_stack, "create", "--role", "pacs", "--name", "main-pacs").returncode == 0
    twice = gk(any_stack, "create", "--role", "radiologist", "--name", "main-pacs")
    assert twice.returncode == 2 and "already named 'main-pacs'" in twice.stderr
    default = gk(any_stack, "create", "--role", "pacs", "--name", "default")
    assert default.returncode == 2 and "reserved" in default.stderr
    bad = gk(any_stack, "create", "--role", "pacs", "--name", "Doe^John 1")
    assert bad.returncode == 2 and "letters, digits" in bad.stderr
    a, b = (gk(any_stack, "create", "--role", "radiologist") for _ in range(2))
    names = {row["name"] for row in listed(any_stack).values()}
    assert "default" not in names
    generated = [r.stderr.split()[2] for r in (a, b)]
    assert generated[0] != generated[1] and all(n.startswith("radiologist-") for n in generated)


def test_admin_api_lists_and_revokes(any_stack: Stack) -> None:
    token = make_token(any_stack.service.env, "ml_engineer")
    admin_name = next(r["name"] for r in listed(any_stack).values() if r["role"] == "admin" and r["state"] == "active")
    with any_stack.client("admin") as admin, httpx.Client(base_url=any_stack.service.url,
                                                          headers=_bearer(token)) as user:  # fmt: skip
        assert user.get("/models").status_code == 200
        rows = admin.get("/tokens").json()
        target = max(rows, key=lambda r: r["id"])
        assert target["role"] == "ml_engineer" and target["state"] == "active"
        assert not any(token in json.dumps(r) or "hash" in json.dumps(r) for r in rows)
        r = admin.post(f"/tokens/{target['id']}/revoke")
        assert r.status_code == 200 and r.json()["state"] == "revoked", r.text
        assert user.get("/models").status_code == 401  # its very next request
        assert admin.post(f"/tokens/{target['id']}/revoke").status_code == 409
        assert admin.post("/tokens/99999999/revoke").status_code == 404
        assert admin.post("/tokens/0/revoke").status_code == 422
        active = admin.get("/tokens", params={"include_revoked": "false"}).json()
        assert target["id"] not in {r["id"] for r in active}
    actor = any_stack.scalar("SELECT actor FROM audit_events WHERE action = 'token.revoked' AND entity_id = :i",
                             i=str(target["id"]))  # fmt: skip
    assert actor == f"admin:{admin_name}"
    with any_stack.client("radiologist") as other:
        assert other.get("/tokens").status_code == 403
        assert other.post(f"/tokens/{target['id']}/revoke").status_code == 403


def test_failed_attempts_are_limited_per_client(any_stack: Stack, tmp_path: Path) -> None:
    limited = {"GATEKEEPER_AUTH_MAX_FAILURES": "3", "GATEKEEPER_AUTH_FAILURE_WINDOW_S": "30"}
    with extra_api(any_stack, tmp_path, **limited) as s, httpx.Client(base_url=s.url) as c:
        good = _bearer(any_stack.tokens["pacs"])
        assert c.get("/dicomweb/studies", headers=good).status_code in (200, 204)
        for i in range(3):
            assert c.get("/dicomweb/studies", headers=_bearer(f"guess-{i}")).status_code == 401
        r = c.get("/dicomweb/studies", headers=_bearer("guess-3"))
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["retry-after"]) <= 30 and "too many invalid tokens" in r.json()["detail"]
        blocked = c.get("/dicomweb/studies", headers=good)  # even a valid token waits: guessing stops paying
        assert blocked.status_code == 429 and "retry-after" in blocked.headers
        assert c.get("/healthz").status_code == 200  # the probes need no token and are never limited


def test_failed_attempts_are_counted_across_api_processes(stack: Stack, tmp_path: Path) -> None:
    """Two API processes on one Redis broker share one count per client: with a count per process, an
    attacker got the limit once per process (``--workers N``: N times the guesses)."""
    limited = {"GATEKEEPER_AUTH_MAX_FAILURES": "4", "GATEKEEPER_AUTH_FAILURE_WINDOW_S": "30"}
    good = _bearer(stack.tokens["pacs"])
    with extra_api(stack, tmp_path / "a", **limited) as a, extra_api(stack, tmp_path / "b", **limited) as b, \
            httpx.Client(base_url=a.url) as one, httpx.Client(base_url=b.url) as other:  # fmt: skip
        for c in (one, other):
            assert c.get("/dicomweb/studies", headers=good).status_code in (200, 204)
        for i, c in enumerate((one, other, one, other)):  # two guesses on each: four in all
            assert c.get("/dicomweb/studies", headers=_bearer(f"spread-{i}")).status_code == 401
        for c in (one, other):
            r = c.get("/dicomweb/studies", headers=good)
            assert r.status_code == 429, r.text
            assert 1 <= int(r.headers["retry-after"]) <= 30 and "too many invalid tokens" in r.json()["detail"]


def test_bootstrap_token_strength_and_expiry(any_stack: Stack, tmp_path: Path) -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    for n, weak in enumerate(("letmein", "a" * 40)):
        with pytest.raises(RuntimeError, match="exited"), extra_api(
            any_stack, tmp_path / f"weak{n}", GATEKEEPER_BOOTSTRAP_ADMIN_TOKEN=weak,
            GATEKEEPER_BOOTSTRAP_ADMIN_TOKEN_EXPIRES=future,
        ):  # fmt: skip
            pass
        log = (tmp_path / f"weak{n}" / "api.log").read_text()
        assert "too weak" in log and weak not in log
    with pytest.raises(RuntimeError, match="exited"), extra_api(
        any_stack, tmp_path / "noexpiry", GATEKEEPER_BOOTSTRAP_ADMIN_TOKEN=STRONG
    ):  # fmt: skip
        pass
    assert "GATEKEEPER_BOOTSTRAP_ADMIN_TOKEN_EXPIRES" in (tmp_path / "noexpiry" / "api.log").read_text()
    env = {"GATEKEEPER_BOOTSTRAP_ADMIN_TOKEN": STRONG, "GATEKEEPER_BOOTSTRAP_ADMIN_TOKEN_EXPIRES": future}
    with extra_api(any_stack, tmp_path / "ok", **env) as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/tokens", headers=_bearer(STRONG)).status_code == 200
    env["GATEKEEPER_BOOTSTRAP_ADMIN_TOKEN_EXPIRES"] = past
    with extra_api(any_stack, tmp_path / "expired", **env) as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/tokens", headers=_bearer(STRONG)).status_code == 401

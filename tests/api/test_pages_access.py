"""Browser sessions and the pages' access control over real HTTP: cookie flags, the session on the API with
its CSRF header, a revoked token ending its sessions, each page's roles, another reader's claim, forms without
the CSRF token, the login limiter; and training jobs listed and cancelled (the worker skips a cancelled job)."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from app.client import stow
from testkit.dicom_factory import make_series
from testkit.servers import make_token
from tests.conftest import Stack

pytestmark = pytest.mark.integration
MAX_FAILURES = 3


@pytest.fixture(scope="module")
def site(stack_factory) -> Stack:  # type: ignore[no-untyped-def]
    """No worker at first (a training job stays queued until the first test starts one); no scorer, so every
    series is a radiologist's case."""
    return stack_factory(worker=False, GATEKEEPER_AUTH_MAX_FAILURES=str(MAX_FAILURES))


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def browser(stack: Stack, token: str) -> tuple[httpx.Client, str]:
    """A logged-in client (cookies kept) and its session's CSRF token."""
    c = httpx.Client(base_url=stack.service.url, timeout=30)
    form = c.get("/ui/login")
    r = c.post("/ui/login", data={"token": token, "csrf": _csrf(form.text), "next": ""})
    assert r.status_code == 303, r.text[:300]
    home = c.get(r.headers["location"])
    return c, _csrf(home.text)


def _case(stack: Stack) -> int:
    spec, blobs = make_series(4)
    with stack.client("pacs") as c:
        assert stow(c, blobs).status_code == 200
        c.post(f"/series/{spec.series_uid}/complete")
    state = stack.wait_status(spec.series_uid, {"manual"})
    return int(stack.scalar("SELECT id FROM cases WHERE series_id=:i", i=state["id"]))  # type: ignore[arg-type]


def test_training_jobs_are_listed_and_cancelled_and_the_worker_skips_a_cancelled_one(site: Stack) -> None:
    job = {"kind": "segmenter", "params": {"steps": 2, "base_width": 4, "batch_size": 2, "include_base_data": False}}
    with site.client("ml_engineer") as eng, site.client("radiologist") as reader:
        job_id = eng.post("/training-jobs", json=job).json()["id"]
        assert reader.post(f"/training-jobs/{job_id}/cancel").status_code == 403
        listed = eng.get("/training-jobs").json()
        assert [j["id"] for j in listed] == [job_id] and listed[0]["progress"]["fraction"] == 0
        r = eng.post(f"/training-jobs/{job_id}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        again = eng.post(f"/training-jobs/{job_id}/cancel")
        assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
        assert eng.post("/training-jobs/999999/cancel").status_code == 404
        site.wait_published()
        site.service.start_worker()
        log = site.service.log_dir / "worker.log"
        deadline = time.monotonic() + 60
        while "'skipped'" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, "the worker never took the cancelled job's message"
            time.sleep(0.2)
        assert eng.get(f"/training-jobs/{job_id}").json()["status"] == "cancelled"
    assert site.scalar("SELECT count(*) FROM model_versions WHERE training_job_id=:i", i=job_id) == 0


def test_login_sets_a_session_cookie_the_api_accepts_with_its_csrf_header(site: Stack) -> None:
    c = httpx.Client(base_url=site.service.url, timeout=30)
    nonce = _csrf(c.get("/ui/login").text)
    assert c.post("/ui/login", data={"token": site.tokens["radiologist"], "csrf": "forged"}).status_code == 403
    assert c.post("/ui/login", data={"token": "gk_wrong", "csrf": nonce}).status_code in (401, 403)
    nonce = _csrf(c.get("/ui/login").text)
    r = c.post("/ui/login", data={"token": site.tokens["radiologist"], "csrf": nonce, "next": "https://evil.test/"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/queue"  # never a redirect to another site
    flags = r.headers["set-cookie"].lower()
    assert "gk_session=" in flags and "httponly" in flags and "samesite=lax" in flags and "max-age=" in flags
    assert "secure" not in flags  # http here; Secure when GATEKEEPER_PUBLIC_BASE_URL is https
    assert c.get("/queue").status_code == 200  # the session in place of a bearer token
    refused = c.post("/queue/next")
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
    csrf = _csrf(c.get("/ui/queue").text)
    info = c.get("/ui/session").json()  # what the viewer's scripts read before they store a SEG
    assert info["csrf_token"] == csrf and info["role"] == "radiologist" and info["csrf_header"] == "X-CSRF-Token"
    assert c.post("/queue/next", headers={"X-CSRF-Token": csrf}).status_code == 404  # allowed: the queue is empty
    with site.client("radiologist") as bearer:
        assert bearer.get("/queue").status_code == 200  # the bearer path is unchanged
    c.close()


def test_a_revoked_token_ends_its_sessions_at_once(site: Stack) -> None:
    secret = make_token(site.service.env, "radiologist")
    c, _ = browser(site, secret)
    assert c.get("/ui/queue").status_code == 200
    token_id = site.scalar("SELECT token_id FROM ui_sessions ORDER BY id DESC LIMIT 1")
    with site.client("admin") as admin:
        assert admin.post(f"/tokens/{token_id}/revoke").status_code == 200
    page = c.get("/ui/queue")
    assert page.status_code == 303 and page.headers["location"].startswith("/ui/login")
    assert c.get("/queue").status_code == 401
    c.close()


@pytest.mark.parametrize(("role", "allowed", "refused"), [
    ("radiologist", ["/ui/queue", "/ui/series"], ["/ui/models", "/ui/training"]),
    ("ml_engineer", ["/ui/models", "/ui/training", "/ui/series"], ["/ui/queue", "/ui/cases/1"]),
    ("pacs", ["/ui/series"], ["/ui/queue", "/ui/models", "/ui/training"]),
    ("monitoring", [], ["/ui/series", "/ui/queue", "/ui/models"]),
    ("admin", ["/ui/queue", "/ui/models", "/ui/training", "/ui/series"], []),
])  # fmt: skip
def test_each_page_lets_in_the_roles_the_api_does(site: Stack, role: str, allowed: list[str],
                                                  refused: list[str]) -> None:  # fmt: skip
    c, _ = browser(site, site.tokens[role])
    for path in allowed:
        assert c.get(path).status_code == 200, (role, path)
    for path in refused:
        r = c.get(path)
        assert r.status_code == 403 and "may not use this page" in r.text, (role, path, r.status_code)
    with httpx.Client(base_url=site.service.url) as anonymous:
        r = anonymous.get("/ui/models")
        assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=%2Fui%2Fmodels"
    c.close()


def test_one_reader_cannot_release_or_read_another_readers_claim(site: Stack) -> None:
    case_id = _case(site)
    a, a_csrf = browser(site, make_token(site.service.env, "radiologist"))
    b, b_csrf = browser(site, make_token(site.service.env, "radiologist"))
    assert a.post(f"/ui/cases/{case_id}/claim", data={"csrf": a_csrf}).status_code == 303
    assert b.get(f"/ui/cases/{case_id}").status_code == 404  # hidden while another reader holds it
    r = b.post(f"/ui/cases/{case_id}/release", data={"csrf": b_csrf})
    assert r.status_code == 409 and "not claimed by you" in r.text
    assert b.post(f"/ui/cases/{case_id}/claim", data={"csrf": b_csrf}).status_code == 409
    assert a.post(f"/ui/cases/{case_id}/release", data={"csrf": b_csrf}).status_code == 403  # B's token is not A's
    assert a.post(f"/ui/cases/{case_id}/release").status_code == 415  # no form at all
    assert site.rows("SELECT status FROM cases WHERE id=:i", i=case_id) == [("claimed",)]
    assert (
        a.post(f"/ui/cases/{case_id}/reject", data={"csrf": a_csrf, "reason": "normal: no lesion"}).status_code == 303
    )
    page = a.get(f"/ui/cases/{case_id}")
    assert page.status_code == 200 and "normal: no lesion" in page.text  # a closed case stays readable to its reader
    assert b.get(f"/ui/cases/{case_id}").status_code == 404
    a.close()
    b.close()


def test_logout_needs_the_csrf_token_and_ends_the_session(site: Stack) -> None:
    c, csrf = browser(site, site.tokens["ml_engineer"])
    assert c.post("/ui/logout", data={"other": "field"}).status_code == 403
    assert c.get("/ui/models").status_code == 200
    cookie = c.cookies["gk_session"]
    assert c.post("/ui/logout", data={"csrf": csrf}).status_code == 303
    with httpx.Client(base_url=site.service.url, cookies={"gk_session": cookie}) as old:
        assert old.get("/models").status_code == 401
    c.close()


def test_the_failed_attempt_limiter_covers_the_login_form(site: Stack) -> None:
    """Last in the module: after it, this client address is refused for the window."""
    c = httpx.Client(base_url=site.service.url, timeout=30)
    for _ in range(MAX_FAILURES):
        assert (
            c.post("/ui/login", data={"token": "gk_guess", "csrf": _csrf(c.get("/ui/login").text)}).status_code == 401
        )
    r = c.post("/ui/login", data={"token": site.tokens["admin"], "csrf": _csrf(c.get("/ui/login").text)})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    c.close()

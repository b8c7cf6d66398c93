"""``/ui/login`` and ``/ui/logout``: a bearer token typed once starts a browser session (HttpOnly cookie)."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from app.api.deps import SessionDep, SettingsDep, browser_session, get_limiter
from app.api.ui_common import (
    LOGIN_COOKIE,
    AnyPage,
    checked_form,
    cookie_secure,
    new_login_nonce,
    page,
    read_form,
    see_other,
)
from app.core.errors import DomainError
from app.core.security import Role
from app.services import ui_sessions

router = APIRouter(prefix="/ui", include_in_schema=False)
HOME = {Role.RADIOLOGIST: "/ui/queue", Role.ML_ENGINEER: "/ui/models"}


def _home(role: Role) -> str:
    return HOME.get(role, "/ui/series")  # a role without pages (monitoring) gets that page's 403, which says so


def _safe_next(target: str | None) -> str | None:
    """Only a path of this service's pages (never another site: an open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


def _login_page(request: Request, status_code: int = 200, error: str | None = None) -> Response:
    nonce = new_login_nonce()
    response = page("login.html", None, status_code, nonce=nonce, error=error,
                    next=_safe_next(request.query_params.get("next")) or "")  # fmt: skip
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=900, httponly=True, samesite="strict", secure=cookie_secure(),
                        path="/ui/login")  # fmt: skip
    return response


@router.get("")
def ui_home(request: Request) -> Response:
    browser = browser_session(request)
    return see_other("/ui/login" if browser is None else _home(browser.principal.role))


@router.get("/login")
def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
async def login(request: Request, db: SessionDep, settings: SettingsDep) -> Response:
    """The token field starts a session; wrong tokens count against the same per-client limit as the API's."""
    limiter, client = get_limiter(), request.client.host if request.client else "unknown"
    wait = limiter.retry_after(client)
    if wait is not None:
        response = _login_page(request, 429, f"too many invalid tokens from this client; retry in {wait} s")
        response.headers["Retry-After"] = str(wait)
        return response
    form = await read_form(request)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(nonce.encode(), form.get("csrf", "").encode()):
        return _login_page(request, 403, "the login form expired or came from another site: try again")
    secret = form.get("token", "").strip()
    try:
        started = await run_in_threadpool(lambda: ui_sessions.start(session=db, secret=secret, settings=settings))
    except DomainError as exc:
        return _login_page(request, exc.status_code, str(exc))
    except OperationalError:
        return _login_page(request, 503, "database unavailable: try again shortly")
    if started is None:
        limiter.failed(client)
        return _login_page(request, 401, "invalid, revoked or expired token")
    cookie, browser = started
    response = see_other(_safe_next(form.get("next")) or _home(browser.principal.role))
    max_age = max(1, int((browser.expires_at - datetime.now(UTC)).total_seconds()))
    response.set_cookie(ui_sessions.SESSION_COOKIE, cookie, max_age=max_age, httponly=True, samesite="lax",
                        secure=cookie_secure(), path="/")  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path="/ui/login")
    return response


@router.post("/logout")
async def logout(request: Request, browser: AnyPage, db: SessionDep) -> Response:
    await checked_form(request, browser)
    cookie = request.cookies.get(ui_sessions.SESSION_COOKIE, "")
    await run_in_threadpool(lambda: ui_sessions.end(session=db, cookie=cookie, actor=browser.principal.name))
    response = see_other("/ui/login")
    response.delete_cookie(ui_sessions.SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=cookie_secure())
    return response


@router.get("/session")
def session_info(browser: AnyPage) -> JSONResponse:
    """The session's CSRF token for same-origin scripts (the viewer's STOW of a SEG sends it as X-CSRF-Token);
    another site's script cannot read this reply (no CORS), and without the cookie it is a login redirect."""
    return JSONResponse({"name": browser.principal.name, "role": browser.principal.role,
                         "csrf_token": browser.csrf_token, "csrf_header": ui_sessions.CSRF_HEADER,
                         "expires_at": browser.expires_at.isoformat()},
                        headers={"Cache-Control": "no-store"})  # fmt: skip

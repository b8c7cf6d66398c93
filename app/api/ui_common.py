"""What every page shares: the session and role check, CSRF-checked forms, templates, static files.

Pages check the role exactly as the API does (``require_roles``: the listed roles and admin) and then act
through the same service functions, so a page never lets anyone do what the API would refuse them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.deps import browser_session
from app.core.config import get_settings
from app.core.errors import DomainError
from app.core.security import Role
from app.services.pages import metric_svg, number
from app.services.ui_sessions import CSRF_FIELD, BrowserSession, csrf_ok

STATIC = "/ui/static"
TEMPLATES = Environment(loader=FileSystemLoader(str(files("app") / "templates")),
                        autoescape=select_autoescape(["html"]))  # fmt: skip
TEMPLATES.globals["inf"] = float("inf")
TEMPLATES.filters["num"] = number
TEMPLATES.filters["metric_svg"] = metric_svg
MAX_FORM_BYTES = 64 * 1024
LOGIN_COOKIE = "gk_login"  # double-submit value of the login form (a session does not exist yet)
NAV = [("/ui/queue", "Queue", {Role.RADIOLOGIST}), ("/ui/models", "Models", {Role.ML_ENGINEER}),
       ("/ui/training", "Training", {Role.ML_ENGINEER}),
       ("/ui/series", "Series", {Role.PACS, Role.RADIOLOGIST, Role.ML_ENGINEER})]  # fmt: skip


class LoginRequired(Exception):
    """No live browser session: the page sends the browser to /ui/login."""


class PageError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def may_use(role: Role, roles: set[Role]) -> bool:
    return role == Role.ADMIN or role in roles


def page(name: str, browser: BrowserSession | None, status_code: int = 200, **context: Any) -> HTMLResponse:
    role = None if browser is None else browser.principal.role
    nav = [] if role is None else [(href, label) for href, label, roles in NAV if may_use(role, roles)]
    html = TEMPLATES.get_template(f"ui/{name}").render(static=STATIC, browser=browser, nav=nav, **context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def ui_roles(*roles: Role) -> Callable[..., BrowserSession]:
    """A page's dependency: a live session whose role is one of ``roles`` (or admin); else login or 403."""
    allowed = set(roles)

    def dependency(request: Request) -> BrowserSession:
        browser = browser_session(request)
        if browser is None:
            raise LoginRequired()
        if not may_use(browser.principal.role, allowed):
            raise PageError(403, f"role {browser.principal.role} may not use this page")
        return browser

    return dependency


RadiologistPage = Annotated[BrowserSession, Depends(ui_roles(Role.RADIOLOGIST))]
EngineerPage = Annotated[BrowserSession, Depends(ui_roles(Role.ML_ENGINEER))]
ReaderPage = Annotated[BrowserSession, Depends(ui_roles(Role.PACS, Role.RADIOLOGIST, Role.ML_ENGINEER))]
AnyPage = Annotated[BrowserSession, Depends(ui_roles(*Role))]


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form (first value of each field), at most MAX_FORM_BYTES."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise PageError(415, "expected a form (application/x-www-form-urlencoded)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PageError(413, f"form over {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise PageError(400, "the form is not valid UTF-8 urlencoded text")
    return {k: v[0] for k, v in fields.items()}


async def checked_form(request: Request, browser: BrowserSession) -> dict[str, str]:
    """The form of a request that changes state, refused (403) unless it carries the session's CSRF token."""
    form = await read_form(request)
    if not csrf_ok(browser, form.get(CSRF_FIELD)):
        raise PageError(403, "missing or wrong CSRF token: reload the page and try again")
    return form


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def cookie_secure() -> bool:
    return get_settings().public_base_url.lower().startswith("https://")


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def mount(app: FastAPI, routers: list[Any]) -> None:
    """The pages, their static files and the two page-only errors (to a login redirect, to an HTML page)."""
    app.mount(STATIC, StaticFiles(directory=str(files("app") / "static" / "ui")), name="ui-static")
    for router in routers:
        app.include_router(router)

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, _: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return see_other(f"/ui/login?next={quote(target, safe='')}")

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> Response:
        return page("error.html", browser_session(request), exc.status, message=str(exc), status=exc.status)


async def act_then_redirect(
    action: Callable[[], object], *, db: Session, browser: BrowserSession, then: str
) -> Response:
    """Run a form's service call off the event loop; a service's refusal rolls back and shows its page, success
    redirects to ``then`` (303)."""
    try:
        await run_in_threadpool(action)
    except DomainError as exc:
        db.rollback()
        return domain_page(exc, browser)
    return see_other(then)


def domain_page(exc: DomainError, browser: BrowserSession) -> HTMLResponse:
    """A service's refusal (taken, not yours, not found), with its precise message and its status."""
    return page("error.html", browser, exc.status_code, message=str(exc), status=exc.status_code)

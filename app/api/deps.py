"""Typed dependencies: the DB session, the instance store, the authenticated principal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.core.config import Settings, get_settings
from app.core.db import session_scope
from app.core.ratelimit import Limiter, failure_limiter
from app.core.security import Principal, Role, authenticate
from app.services import ui_sessions
from app.services.storage import InstanceStore


def get_db() -> Iterator[Session]:
    with session_scope() as session:
        yield session


@lru_cache
def get_store() -> InstanceStore:
    settings = get_settings()
    return InstanceStore(settings.storage_dir, fsync=settings.fsync)


# scope="function": the commit happens before the response is sent, so a client
# never sees a success whose transaction then fails.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[InstanceStore, Depends(get_store)]

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
# Checked at the edge, so such values never reach SQL (schemathesis found each as a 500): row ids and
# offsets are PostgreSQL integers, and PostgreSQL text cannot hold a NUL byte (DICOM strings never do).
MAX_ROW_ID = 2**31 - 1
MAX_OFFSET = 2**63 - 1
NO_NUL = r"^[^\x00]*$"


# Declares the scheme in OpenAPI (components.securitySchemes, and security on every route that needs a token);
# auto_error=False: the refusal below keeps its own message.
BEARER = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="A token from `gatekeeper token create --role ROLE` (pacs, radiologist, ml_engineer, "
                                "admin, monitoring): `Authorization: Bearer <token>`")  # fmt: skip


@lru_cache
def get_limiter() -> Limiter:
    settings = get_settings()
    return failure_limiter(settings.broker_url, settings.auth_max_failures, settings.auth_failure_window_s)


def _principal(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Principal:
    secret = credentials.credentials.strip() if credentials is not None else ""
    if not secret and request.cookies.get(ui_sessions.SESSION_COOKIE):
        return _session_principal(request)  # a browser: the pages, the viewer's DICOMweb requests
    if not secret:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers=_UNAUTHORIZED)
    limiter, client = get_limiter(), request.client.host if request.client else "unknown"
    wait = limiter.retry_after(client)
    if wait is not None:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            f"too many invalid tokens from this client; retry in {wait} s",
                            headers={"Retry-After": str(wait)})  # fmt: skip
    try:
        with session_scope() as session:
            principal = authenticate(session, secret, settings)
    except OperationalError:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable", headers={"Retry-After": "5"})
    if principal is None:
        limiter.failed(client)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid, revoked or expired token", headers=_UNAUTHORIZED)
    request.state.principal = principal
    return principal


def browser_session(request: Request) -> ui_sessions.BrowserSession | None:
    """The live browser session of the request's cookie (None: none, or it ended)."""
    cookie = request.cookies.get(ui_sessions.SESSION_COOKIE, "")
    if not cookie:
        return None
    try:
        with session_scope() as session:
            return ui_sessions.current(session=session, cookie=cookie)
    except OperationalError:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable", headers={"Retry-After": "5"})


def _session_principal(request: Request) -> Principal:
    """The session cookie in place of a bearer token; a request that changes state must also carry the
    session's CSRF token in X-CSRF-Token, which another site's form or script cannot know."""
    browser = browser_session(request)
    if browser is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "browser session ended or expired: log in again at "
                            "/ui/login", headers=_UNAUTHORIZED)  # fmt: skip
    if request.method not in ui_sessions.SAFE_METHODS and not ui_sessions.csrf_ok(
        browser, request.headers.get(ui_sessions.CSRF_HEADER)
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"missing or wrong {ui_sessions.CSRF_HEADER} header: a browser "
                            "session must send its CSRF token with every request that changes state")  # fmt: skip
    request.state.principal = browser.principal
    return browser.principal


def require_roles(*roles: Role) -> Callable[..., Principal]:
    """A dependency that lets in the given roles (and admin) and refuses the rest with 403."""
    allowed = {*roles, Role.ADMIN}

    def dependency(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if principal.role not in allowed:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {principal.role} may not use this route")
        return principal

    dependency.allowed_roles = allowed  # type: ignore[attr-defined]  # tests/api/test_auth.py reads it
    return dependency


PacsPrincipal = Annotated[Principal, Depends(require_roles(Role.PACS))]
RadiologistPrincipal = Annotated[Principal, Depends(require_roles(Role.RADIOLOGIST))]
EngineerPrincipal = Annotated[Principal, Depends(require_roles(Role.ML_ENGINEER))]
AdminPrincipal = Annotated[Principal, Depends(require_roles())]
MonitoringPrincipal = Annotated[Principal, Depends(require_roles(Role.MONITORING))]
# STOW-RS: a PACS stores images, a radiologist stores contour SEGs (app/services/contour_stow.py).
StowPrincipal = Annotated[Principal, Depends(require_roles(Role.PACS, Role.RADIOLOGIST))]
ReaderPrincipal = Annotated[Principal, Depends(require_roles(Role.PACS, Role.RADIOLOGIST, Role.ML_ENGINEER))]

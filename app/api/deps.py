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

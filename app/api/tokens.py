"""Bearer tokens for admins: list and revoke (``gatekeeper token list | revoke`` does the same)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from app.api.deps import MAX_ROW_ID, AdminPrincipal, SessionDep
from app.services import tokens

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.get("", summary="Every token: id, name, role, state and dates (never a secret or a hash)")
def list_tokens(
    _: AdminPrincipal, db: SessionDep, include_revoked: Annotated[bool, Query()] = True
) -> list[dict[str, Any]]:
    return [tokens.describe(t) for t in tokens.list_tokens(db, include_revoked=include_revoked)]


@router.post("/{token_id}/revoke", summary="Revoke a token: refused on its very next request, in every process")
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID)], principal: AdminPrincipal, db: SessionDep
) -> dict[str, Any]:
    return tokens.describe(tokens.revoke(db, token_id=token_id, actor=principal.name))

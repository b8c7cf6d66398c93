"""Results back to the PACS, for admins: the deliveries outbox and sending a failed one again."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict

from app.api.deps import MAX_ROW_ID, AdminPrincipal, SessionDep
from app.db.states import DeliveryStatus
from app.services import delivery

router = APIRouter(prefix="/admin/deliveries", tags=["admin"])
DeliveryId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str  # auto_seg | contour_seg
    status: str  # pending | sending | delivered | failed
    series_uid: str  # the source series
    revision: int
    case_id: int | None
    destination: str
    attempts: int
    next_attempt_at: datetime | None  # when a pending delivery is tried next
    last_http_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveryList(BaseModel):
    counts: dict[str, int]  # by status, over all deliveries
    deliveries: list[DeliveryOut]


@router.get("", summary="Deliveries to the PACS, newest first, with counts by status")
def list_deliveries(
    _: AdminPrincipal, db: SessionDep, status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Annotated[int, Query(ge=0, le=MAX_ROW_ID)] = 0,
) -> DeliveryList:  # fmt: skip
    views, counts = delivery.list_deliveries(session=db, status=status, limit=limit, offset=offset)
    return DeliveryList(counts=counts, deliveries=[DeliveryOut.model_validate(v) for v in views])


@router.get("/{delivery_id}", summary="One delivery: status, attempts, the last error")
def read_delivery(delivery_id: DeliveryId, _: AdminPrincipal, db: SessionDep) -> DeliveryOut:
    return DeliveryOut.model_validate(delivery.get_delivery(session=db, delivery_id=delivery_id))


@router.post("/{delivery_id}/retry", summary="Send a failed delivery again, with a fresh retry schedule")
def retry_delivery(delivery_id: DeliveryId, admin: AdminPrincipal, db: SessionDep) -> DeliveryOut:
    view = delivery.send_again(session=db, delivery_id=delivery_id, actor=admin.name)
    return DeliveryOut.model_validate(view)

"""The delivery task: an id in, ``app.services.delivery.deliver`` does one attempt (claim, send, record)."""

from __future__ import annotations

from app.core.broker import DELIVER_RESULT_TASK
from app.core.config import get_settings
from app.services.delivery import deliver
from workers.celery_app import celery_app


@celery_app.task(name=DELIVER_RESULT_TASK)
def deliver_result(delivery_id: int) -> str:
    """Send one SEG to the PACS; safe to run twice (fenced by the attempt number)."""
    return deliver(get_settings(), delivery_id=delivery_id)

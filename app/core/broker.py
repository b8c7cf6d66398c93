"""The Celery application's configuration, shared by the API (publisher) and workers.

The API publishes by task name through this light client and never imports
worker code. Settings follow REFERENCES.md "Celery and Redis": acks_late plus
reject_on_worker_lost, prefetch 1, time limits below the visibility timeout;
attempts are capped by the task itself (the requeue on worker loss is uncapped).
"""

from __future__ import annotations

from pathlib import Path

from celery import Celery

from app.core.config import Settings

SCORE_SERIES_TASK = "gatekeeper.score_series"
TRAIN_MODEL_TASK = "gatekeeper.train_model"
DELIVER_RESULT_TASK = "gatekeeper.deliver_result"
SCORING_QUEUE = "scoring"
TRAINING_QUEUE = "training"
DELIVERY_QUEUE = "delivery"  # its own queue: a PACS that is down never holds up scoring


def filesystem_folder(settings: Settings) -> Path:
    """The embedded broker's folder, shared by the API and the worker (``queue/`` holds the messages)."""
    return settings.storage_dir.resolve().parent / "broker"


def _transport_options(settings: Settings) -> dict[str, object]:
    if settings.broker_url.startswith("filesystem://"):
        folder = filesystem_folder(settings)
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    return {
        "visibility_timeout": settings.visibility_timeout_s,
        "socket_timeout": 5,
        "socket_connect_timeout": 5,
    }


def make_celery(settings: Settings) -> Celery:
    app = Celery("gatekeeper", broker=settings.broker_url)
    app.conf.update(
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_ignore_result=True,
        task_default_queue=SCORING_QUEUE,
        task_routes={
            SCORE_SERIES_TASK: {"queue": SCORING_QUEUE},
            TRAIN_MODEL_TASK: {"queue": TRAINING_QUEUE},
            DELIVER_RESULT_TASK: {"queue": DELIVERY_QUEUE},
        },
        task_serializer="json",
        accept_content=["json"],
        # Publishing must not hang the dispatcher when the broker is down: fail
        # fast, the outbox keeps the job and the next tick tries again.
        task_publish_retry=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app

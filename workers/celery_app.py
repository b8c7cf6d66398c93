"""The Celery worker application (``gatekeeper worker`` runs it)."""

from __future__ import annotations

from app.core.config import get_settings
from app.core.logging import configure_logging
from app.core.queue import make_celery

settings = get_settings()
configure_logging(settings.log_level)
celery_app = make_celery(settings)
celery_app.conf.imports = ("workers.tasks",)

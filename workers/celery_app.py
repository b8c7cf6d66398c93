"""The Celery worker application (``gatekeeper worker`` runs it)."""

from __future__ import annotations

from app.core.broker import make_celery
from app.core.config import get_settings
from app.core.logging import configure_logging

settings = get_settings()
configure_logging(settings.log_level, settings.log_format)
celery_app = make_celery(settings)
# By name, not by import: the scoring tasks never pull training code into a module that imports them.
celery_app.conf.imports = ("workers.serving.tasks", "workers.training.tasks", "workers.delivery.tasks")

"""The ``gatekeeper`` command line: the only package of ``app`` that may import ``workers``
(training, evaluation and the demo run worker code in the operator's process)."""

from app.cli.main import cli

__all__ = ["cli"]

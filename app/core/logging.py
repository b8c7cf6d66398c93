"""Logging set-up. Log lines carry ids and counts, never PHI or UIDs."""

from __future__ import annotations

import logging
import warnings


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pydicom warns with element values in the message; keep them out of the logs.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")

"""Logging set-up. Log lines carry ids and counts, never PHI or UIDs.

Three rules make that hold for text we do not write ourselves:
- a library's log records (pydicom, highdicom, nibabel, ...) are withheld: the logger's name and level are
  kept, its message is not (highdicom once logged a patient's name while writing a SEG);
- exceptions are logged as their traceback's frames and type only, never their message (a driver's error
  can quote a value: ``invalid input syntax for type date: "..."``);
- SQL statement parameters are never put into database errors (``app.core.db`` sets hide_parameters).
"""

from __future__ import annotations

import json
import logging
import traceback
import warnings
from types import TracebackType

# Loggers whose messages are ours or carry no values (servers, the broker, migrations).
OWN_LOGGERS = frozenset({"app", "workers", "models", "bench", "testkit", "celery", "kombu", "uvicorn", "alembic",
                         "sqlalchemy", "root", "__main__", "gatekeeper"})  # fmt: skip
WITHHELD = "message withheld: a library's text may quote patient data"
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class PhiSafeFormatter(logging.Formatter):
    """Exceptions as frames (file, line, function) and the exception's type: never its message."""

    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802
        kind, _exc, tb = ei
        if kind is None:
            return ""
        frames = "".join(traceback.format_list(traceback.extract_tb(tb)))
        return f"Traceback (most recent call last):\n{frames}{kind.__module__}.{kind.__qualname__}: {WITHHELD}"


# Fields a record may carry as ``extra=`` (the access log's); JSON lines show them as keys of their own.
EXTRA_FIELDS = ("method", "route", "status", "duration_ms", "client")


class JsonFormatter(PhiSafeFormatter):
    """One JSON object per line: ts, level, logger, message, the access fields, and exc (frames and type)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}"
        out: dict[str, object] = {"ts": ts, "level": record.levelname, "logger": record.name,
                                  "message": record.getMessage()}  # fmt: skip
        for name in EXTRA_FIELDS:
            if name in record.__dict__:
                out[name] = record.__dict__[name]
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _withhold_library_messages() -> None:
    factory = logging.getLogRecordFactory()
    if getattr(factory, "phi_safe", False):
        return

    def make(*args, **kwargs) -> logging.LogRecord:  # type: ignore[no-untyped-def]
        record = factory(*args, **kwargs)
        if record.name.split(".", 1)[0] not in OWN_LOGGERS:
            record.msg, record.args = WITHHELD, ()
        return record

    make.phi_safe = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make)


def configure_logging(level: str, fmt: str = "text") -> None:
    """``fmt``: "text" (FORMAT) or "json" (JsonFormatter), for every handler, uvicorn's too."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    _withhold_library_messages()
    logging.captureWarnings(True)  # warnings become records of "py.warnings": withheld like a library's
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
    formatter = JsonFormatter() if fmt == "json" else PhiSafeFormatter(FORMAT)
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]  # fmt: skip
    for logger in loggers:  # uvicorn's own handlers too
        for handler in logger.handlers:
            handler.setFormatter(formatter)
    for name in ("pydicom", "highdicom"):
        logging.getLogger(name).setLevel(logging.ERROR)

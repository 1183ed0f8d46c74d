"""Logging for the service's processes: one JSON object per line on stderr."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "configure_logging"]

# what json.dumps(line, default=str) would build for every record
_encoder = json.JSONEncoder(default=str)


class JsonFormatter(logging.Formatter):
    """Each record as one JSON line: time, level, logger, message and structured fields
    (``extra={"http": {...}}`` on a record adds that dict's fields to the line)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "http", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _encoder.encode(line)


def configure_logging(level: int = logging.INFO) -> None:
    """Log JSON lines to stderr (the entrypoints call this; importing never configures)."""
    root = logging.getLogger()
    if any(getattr(h, "_orders_json", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._orders_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)

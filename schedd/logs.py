"""Logging: text lines by default, JSON lines on request. Nothing logged carries a key,
a secret or a webhook body: callers log ids, statuses and durations only."""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        d: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        d.update({k: v for k, v in record.__dict__.items() if k not in _STD})
        if record.exc_info:
            d["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(d, enc_hook=str).decode()


class TextFormatter(logging.Formatter):
    """`2026-11-22 15:10:41,123 INFO schedd.engine: run succeeded key=value ...`; the
    date part is formatted once per second (a busy daemon logs thousands of lines a
    second, one per run transition)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.stack_info:
            line = super().format(record)
        else:
            second = int(record.created)
            if second != self._second:
                self._second = second
                self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            line = (f"{self._stamp},{int(record.msecs):03d} {record.levelname} {record.name}: "
                    f"{record.getMessage()}")
        extras = [f"{k}={v}" for k, v in record.__dict__.items() if k not in _STD]
        if extras:
            line += " " + " ".join(extras)
        return line


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    # Neither format shows the caller, thread or process: do not look them up for every
    # record (the logging HOWTO's "Optimization"; ~20% of a log line's cost).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

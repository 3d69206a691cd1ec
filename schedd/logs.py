"""Logging: text lines by default, JSON lines on request. Nothing logged carries a key,
a secret or a webhook body: callers log ids, statuses and durations only."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import msgspec

_BLANK = logging.LogRecord("", 0, "", 0, "", (), None).__dict__
_STD = set(_BLANK) | {"message", "asctime"}
# A record's attributes come in a fixed order: logging's own first, then `extra`. Skipping
# the first _N_STD keys finds the extras without testing every attribute name.
_N_STD = len(_BLANK)
# What `record()` copies for each record: the attributes neither format shows (caller,
# thread, process; `setup_logging` turns their lookups off for logging's own records too).
_TEMPLATE = {**_BLANK, "pathname": "", "filename": "", "module": "", "lineno": 0,
             "funcName": None, "thread": None, "threadName": None, "process": None,
             "processName": None}
_LEVEL_NAMES = {lvl: logging.getLevelName(lvl) for lvl in
                (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)}
_started = getattr(logging, "_startTime", time.time())  # what relativeCreated counts from
_START: float = _started / 1e9 if isinstance(_started, int) else _started  # 3.13+: in ns
_MAX_BUFFERED = 512  # lines held for one loop iteration at most


def _extras(record: logging.LogRecord) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in islice(record.__dict__.items(), _N_STD, None) if k not in _STD]


def record(logger: logging.Logger, level: int, msg: str, args: tuple[Any, ...],
           extra: dict[str, Any]) -> None:
    """Log one record as `logger.log(level, msg, *args, extra=extra)` would, for lines said
    thousands of times a second (one per run transition): the record is filled from a
    template instead of through LogRecord.__init__ (no caller, file or thread lookups).
    Handlers, filters, levels and both formats see an ordinary LogRecord."""
    if not logger.isEnabledFor(level):
        return
    now = time.time()
    d = _TEMPLATE.copy()
    d["name"] = logger.name
    d["msg"] = msg
    d["args"] = args
    d["levelno"] = level
    d["levelname"] = _LEVEL_NAMES.get(level) or logging.getLevelName(level)
    d["created"] = now
    d["msecs"] = (now - int(now)) * 1000
    d["relativeCreated"] = (now - _START) * 1000
    d.update(extra)
    rec = logging.LogRecord.__new__(logging.LogRecord)
    rec.__dict__ = d
    logger.handle(rec)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        d: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        d.update(_extras(record))
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
        extras = _extras(record)
        if extras:
            line += " " + " ".join([f"{k}={v}" for k, v in extras])
        return line


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines said during one event-loop iteration in one
    write at its end, instead of one write (a system call) per line: a busy daemon says
    thousands a second. WARNING and above, lines said with no running loop (start-up, other
    threads, the CLI) and a full buffer are written at once, after what was waiting, so
    the order is kept; `flush()` (called by logging at exit) writes what is left."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._pending_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING or len(self._lines) >= _MAX_BUFFERED:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._pending_on is loop:
            return  # this iteration's write is already planned
        if self._pending_on is not None:
            self.flush()  # planned on another loop (or one that closed): do not wait on it
            return
        self._pending_on = loop
        loop.call_soon(self._flush_planned)

    def _flush_planned(self) -> None:
        self.acquire()
        try:
            self.flush()
        finally:
            self.release()

    def flush(self) -> None:
        self.acquire()
        try:
            self._pending_on = None
            lines, self._lines = self._lines, []
            try:
                if lines:
                    self.stream.write("\n".join(lines) + self.terminator)
                if self.stream and hasattr(self.stream, "flush"):
                    self.stream.flush()
            except Exception:
                # as StreamHandler.emit would: report, never raise into the caller
                self.handleError(logging.makeLogRecord({"msg": "%d buffered log line(s)",
                                                        "args": (len(lines),)}))
        finally:
            self.release()


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = LineHandler(sys.stderr)
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

"""Logging: text lines by default, JSON lines on request. Nothing logged carries a key,
a secret or a webhook body: callers log ids, statuses and durations only."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterable
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
_now = time.time  # one name to patch in tests
_started = getattr(logging, "_startTime", _now())  # what relativeCreated counts from
_START: float = _started / 1e9 if isinstance(_started, int) else _started  # 3.13+: in ns
_MAX_BUFFERED = 512  # lines held for one loop iteration at most


def _extras(record: logging.LogRecord) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in islice(record.__dict__.items(), _N_STD, None) if k not in _STD]


def record(logger: logging.Logger, level: int, msg: str, args: tuple[Any, ...],
           extra: dict[str, Any]) -> None:
    """Log one record as `logger.log(level, msg, *args, extra=extra)` would, for lines said
    thousands of times a second (one per run transition). When the line's only destination
    is a LineHandler with one of schedd's formatters and nothing filters it (the daemon's
    own setup), the line is formatted and buffered directly, with no LogRecord (~4.3 ->
    ~2.5 µs a line); any other setup (a test's capture handler, a filter, a foreign
    formatter) gets an ordinary LogRecord, filled from a template instead of through
    LogRecord.__init__ (no caller, file or thread lookups). `extra` must not name a
    LogRecord attribute (`logger.log` would raise KeyError; the two paths would differ)."""
    if not logger.isEnabledFor(level):
        return
    now = _now()
    handler = _direct_handler(logger, level)
    if handler is not None and handler.emit_fields(level, now, logger.name, msg, args, extra):
        return
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


def _direct_handler(logger: logging.Logger, level: int) -> LineHandler | None:
    """The one handler a record of `logger` at `level` would reach, if that handler can
    take a line without a LogRecord: a LineHandler at or below `level`, without filters,
    formatting with TextFormatter or JsonFormatter, and nothing on the way that filters
    (the logger's own filters; a disabled logger). Else None."""
    if logger.filters or logger.disabled or level not in _LEVEL_NAMES:
        return None
    found: logging.Handler | None = None
    c: logging.Logger | None = logger
    while c is not None:
        for h in c.handlers:
            if found is not None:
                return None  # more than one destination
            found = h
        if not c.propagate:
            break
        c = c.parent
    if (type(found) is LineHandler and not found.filters and level >= found.level
            and type(found.formatter) in _DIRECT_FORMATTERS):
        return found
    return None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info:
            d = self._fields(record.created, record.levelname, record.name,
                             record.getMessage(), _extras(record))
            d["exc"] = self.formatException(record.exc_info)
            return msgspec.json.encode(d, enc_hook=str).decode()
        return self.format_fields(record.created, record.levelname, record.name,
                                  record.getMessage(), _extras(record))

    @staticmethod
    def _fields(created: float, levelname: str, name: str, message: str,
                extras: Iterable[tuple[str, Any]] | dict[str, Any]) -> dict[str, Any]:
        d: dict[str, Any] = {
            "ts": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
            "level": levelname.lower(),
            "logger": name,
            "msg": message,
        }
        d.update(extras)
        return d

    def format_fields(self, created: float, levelname: str, name: str, message: str,
                      extras: Iterable[tuple[str, Any]] | dict[str, Any]) -> str:
        """The line of a record without exception, from its parts (record()'s direct
        path and format() share it)."""
        return msgspec.json.encode(self._fields(created, levelname, name, message, extras),
                                   enc_hook=str).decode()


class TextFormatter(logging.Formatter):
    """`2026-11-22 15:10:41,123 INFO schedd.engine: run succeeded key=value ...`; the
    date part is formatted once per second (a busy daemon logs thousands of lines a
    second, one per run transition)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._stamp: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.stack_info:
            line = super().format(record)
            extras = _extras(record)
            if extras:
                line += " " + " ".join([f"{k}={v}" for k, v in extras])
            return line
        return self.format_fields(record.created, record.levelname, record.name,
                                  record.getMessage(), _extras(record), int(record.msecs))

    def format_fields(self, created: float, levelname: str, name: str, message: str,
                      extras: Iterable[tuple[str, Any]] | dict[str, Any],
                      msecs: int | None = None) -> str:
        """The line of a record without exception or stack, from its parts (record()'s
        direct path and format() share it)."""
        second = int(created)
        cached_second, stamp = self._stamp
        if second != cached_second:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._stamp = (second, stamp)  # one assignment: threads never see half of it
        if msecs is None:
            msecs = int((created - second) * 1000)
        line = f"{stamp},{msecs:03d} {levelname} {name}: {message}"
        if extras:
            items = extras.items() if isinstance(extras, dict) else extras
            line += " " + " ".join([f"{k}={v}" for k, v in items])
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
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._add(record.levelno, line)

    def emit_fields(self, levelno: int, created: float, name: str, msg: str,
                    args: tuple[Any, ...], extra: dict[str, Any]) -> bool:
        """record()'s direct path: format a line from its parts and buffer it, under the
        handler's lock as logging's own handle() would take it. False if it could not be
        formatted: the caller then takes logging's path, which reports the error."""
        self.acquire()
        try:
            try:
                line = self.formatter.format_fields(  # type: ignore[union-attr]
                    created, _LEVEL_NAMES[levelno], name, msg % args if args else msg, extra)
            except Exception:
                return False
            self._add(levelno, line)
            return True
        finally:
            self.release()

    def _add(self, levelno: int, line: str) -> None:
        self._lines.append(line)
        if levelno >= logging.WARNING or len(self._lines) >= _MAX_BUFFERED:
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


_DIRECT_FORMATTERS = (TextFormatter, JsonFormatter)


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

"""schedd.logs: the batching line handler and the lean per-run record."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import pytest

from schedd import logs as logs_mod
from schedd.logs import JsonFormatter, LineHandler, TextFormatter, _direct_handler, record


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    lg = logging.getLogger("schedd.test-logs")
    lg.propagate = False
    lg.setLevel(logging.INFO)
    yield lg
    lg.handlers.clear()
    lg.propagate = True


def attach(lg: logging.Logger) -> tuple[LineHandler, CountingStream]:
    stream = CountingStream()
    h = LineHandler(stream)
    h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    lg.handlers[:] = [h]
    return h, stream


async def test_lines_of_one_loop_iteration_go_out_in_one_write(logger: logging.Logger) -> None:
    _h, stream = attach(logger)
    for i in range(5):
        logger.info("line %d", i)
    assert stream.getvalue() == ""  # held until the iteration ends
    await asyncio.sleep(0)
    assert stream.getvalue() == "".join(f"INFO line {i}\n" for i in range(5))
    assert stream.writes == 1
    logger.info("next")
    await asyncio.sleep(0)
    assert stream.getvalue().endswith("INFO line 4\nINFO next\n") and stream.writes == 2


async def test_a_warning_is_written_at_once_after_what_waited(logger: logging.Logger) -> None:
    _h, stream = attach(logger)
    logger.info("first")
    logger.warning("second")
    assert stream.getvalue() == "INFO first\nWARNING second\n"
    await asyncio.sleep(0)
    assert stream.getvalue() == "INFO first\nWARNING second\n"  # nothing twice


def test_without_a_running_loop_every_line_is_written_at_once(logger: logging.Logger) -> None:
    _h, stream = attach(logger)
    logger.info("a")
    assert stream.getvalue() == "INFO a\n"
    logger.info("b")
    assert stream.getvalue() == "INFO a\nINFO b\n"


def test_a_loop_that_closed_before_its_write_strands_nothing(logger: logging.Logger) -> None:
    h, stream = attach(logger)
    loop = asyncio.new_event_loop()

    def say_and_stop() -> None:
        logger.info("from the first loop")
        loop.stop()  # the planned write never runs: the loop stops, then closes

    loop.call_soon(say_and_stop)
    loop.run_forever()
    loop.close()
    assert stream.getvalue() == ""  # stranded, for now

    async def say() -> None:
        logger.info("from the second loop")

    asyncio.run(say())  # another loop: what waited goes out first, in order
    h.flush()
    assert stream.getvalue() == "INFO from the first loop\nINFO from the second loop\n"


def test_a_failing_stream_is_reported_not_raised(logger: logging.Logger,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    class Full(io.StringIO):
        def flush(self) -> None:
            raise OSError(28, "No space left on device")

    h = LineHandler(Full())
    h.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [h]
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(h, "handleError", reported.append)
    logger.warning("disk full")  # must not raise into the caller
    assert len(reported) == 1


async def test_flush_writes_what_waits_and_a_full_buffer_is_written(
        logger: logging.Logger) -> None:
    h, stream = attach(logger)
    logger.info("held")
    h.flush()  # logging.shutdown() does this at exit
    assert stream.getvalue() == "INFO held\n"
    for i in range(600):
        logger.info("%d", i)
    assert stream.getvalue().count("\n") >= 512  # the buffer's limit, without a loop turn
    await asyncio.sleep(0)
    assert stream.getvalue().count("\n") == 601


@pytest.mark.parametrize("fmt", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_lean_record_formats_as_logging_would(fmt: logging.Formatter,
                                              logger: logging.Logger) -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, rec: logging.LogRecord) -> None:
            seen.append(rec)

    logger.handlers[:] = [Keep()]
    extra = {"run_id": "r-1", "attempt": 2, "error_code": None, "lateness_ms": 3}
    logger.info("run %s", "succeeded", extra=extra)
    record(logger, logging.INFO, "run %s", ("succeeded",), extra)
    ordinary, lean = seen
    lean.created, lean.msecs = ordinary.created, ordinary.msecs
    assert lean.getMessage() == ordinary.getMessage() == "run succeeded"
    assert fmt.format(lean) == fmt.format(ordinary)
    assert "run_id" in fmt.format(lean) and "r-1" in fmt.format(lean)
    # below the logger's level nothing is made
    logger.setLevel(logging.WARNING)
    record(logger, logging.INFO, "run %s", ("x",), extra)
    assert len(seen) == 2


@pytest.mark.parametrize("fmt", [TextFormatter, JsonFormatter], ids=["text", "json"])
def test_direct_line_equals_the_record_path(fmt: type[logging.Formatter],
                                            logger: logging.Logger,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's setup (one LineHandler, schedd's formatter, no filters) formats run
    lines without a LogRecord; the line must be the one a LogRecord would give."""
    monkeypatch.setattr(logs_mod, "_now", lambda: 1_790_000_000.0421)
    stream = CountingStream()
    h = LineHandler(stream)
    h.setFormatter(fmt())
    logger.handlers[:] = [h]
    extra = {"run_id": "r-1", "attempt": 2, "error_code": None, "lateness_ms": 3}
    assert _direct_handler(logger, logging.INFO) is h
    record(logger, logging.INFO, "run %s", ("succeeded",), extra)
    h.addFilter(lambda rec: True)  # any filter: the ordinary path
    assert _direct_handler(logger, logging.INFO) is None
    record(logger, logging.INFO, "run %s", ("succeeded",), extra)
    h.flush()
    direct, ordinary = stream.getvalue().splitlines()
    assert direct == ordinary
    assert "r-1" in direct and "2026-09-21" in direct and "042" in direct


def test_direct_path_only_when_nothing_else_would_see_the_record(
        logger: logging.Logger) -> None:
    h = LineHandler(io.StringIO())
    h.setFormatter(TextFormatter())
    logger.handlers[:] = [h]
    assert _direct_handler(logger, logging.INFO) is h
    assert _direct_handler(logger, 5) is None  # a level without a cached name
    h.setLevel(logging.WARNING)
    assert _direct_handler(logger, logging.INFO) is None
    h.setLevel(logging.NOTSET)
    h.setFormatter(logging.Formatter("%(message)s"))  # a foreign formatter
    assert _direct_handler(logger, logging.INFO) is None
    h.setFormatter(JsonFormatter())
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):  # e.g. pytest's caplog beside the daemon's handler
        def emit(self, rec: logging.LogRecord) -> None:
            seen.append(rec)

    logger.handlers.append(Keep())
    assert _direct_handler(logger, logging.INFO) is None
    record(logger, logging.INFO, "run %s", ("x",), {"run_id": "r-2"})
    assert [r.getMessage() for r in seen] == ["run x"] and seen[0].run_id == "r-2"
    logger.handlers[:] = [h]
    logger.addFilter(lambda rec: False)
    assert _direct_handler(logger, logging.INFO) is None
    logger.filters.clear()
    logger.disabled = True
    try:
        assert _direct_handler(logger, logging.INFO) is None
    finally:
        logger.disabled = False


def test_a_line_that_cannot_be_formatted_is_reported_not_raised(
        logger: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The direct path hands a line it cannot format to logging's path, which reports it
    (handleError) instead of raising into the engine."""
    h = LineHandler(io.StringIO())
    h.setFormatter(TextFormatter())
    logger.handlers[:] = [h]
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(h, "handleError", reported.append)
    record(logger, logging.INFO, "run %s %s", ("only one",), {})  # must not raise
    assert len(reported) == 1
    record(logger, logging.INFO, "run %s", ("fine",), {})
    h.flush()
    assert h.stream.getvalue().rstrip().endswith("run fine")

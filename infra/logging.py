"""structlog set-up, done once per entry point: JSON lines unless a person is watching a TTY.

Every line, from structlog or from the standard library's loggers (uvicorn, temporalio,
aiokafka, FastStream...), passes `infra.redaction.redact_personal_data` after its exception
is rendered to text and before it is rendered itself, so neither a field nor a traceback can
carry a SIN, a health number or any other personal data to the output.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from types import TracebackType
from typing import Literal, TextIO

import structlog

from infra.redaction import redact_personal_data

CRASH_LOGGER = "tellonce.crash"
"""The logger that reports exceptions nothing caught, in the main thread or another."""


class _QuietErrorsHandler(logging.StreamHandler[TextIO]):
    """A stream handler whose own failures never print the record they failed on.

    The standard handler prints the record's message and arguments to stderr when formatting
    or writing fails, and those are exactly what redaction had not yet seen.
    """

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """Report a failure to write a record by the error's type alone."""
        error = sys.exc_info()[1]
        # Nowhere is left to report a failure to write this line to.
        with contextlib.suppress(Exception):
            sys.stderr.write(f"--- a log record was dropped: {type(error).__name__} while writing it ---\n")


def _log_uncaught(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, tb)
        return
    logging.getLogger(CRASH_LOGGER).critical("process.uncaught_exception", exc_info=(kind, error, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    logging.getLogger(CRASH_LOGGER).critical(
        "thread.uncaught_exception",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        extra={"thread_name": args.thread.name if args.thread is not None else None},
    )


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    *,
    redact: bool = True,
) -> None:
    """Configure structlog and route the standard library's logging through the same renderer.

    Exceptions nothing caught and warnings are logged too (instead of Python printing them
    raw), so they are redacted like any other line.

    Args:
        level: The lowest level written.
        fmt: ``json``, ``console``, or ``auto`` (console on a TTY, JSON otherwise).
        redact: Leave personal data in the output when False. Only tests use it, to prove that
            their scan of the output finds what redaction would have removed.
    """
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    # Tracebacks become text first, so redaction reads exactly what would be printed.
    last: list[structlog.typing.Processor] = [structlog.processors.format_exc_info]
    if redact:
        last.append(redact_personal_data)
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, *last, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = _QuietErrorsHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric_level, logging.INFO))
    # Access logs would carry tracking ids in paths alongside client addresses: keep them quiet.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    # Warnings too: pydantic's serialisation warnings, for one, quote the value they saw.
    logging.captureWarnings(True)

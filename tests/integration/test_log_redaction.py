"""What a process configured by `configure_logging` writes to stderr holds no personal data.

Personal data is logged every way it can reach a log: structlog fields and bound context,
exceptions with their chained causes, the standard library's loggers (as uvicorn, temporalio
and aiokafka use them) with `exc_info`, and exceptions nothing caught, in the main thread and
in another, and warnings. Then stderr is searched for the values. The same run without the redaction
processor must find them, or the search proves nothing.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Literal

import pytest
import structlog
from stdnum import luhn

from adapters.sdk import RejectedError, TransientError
from bundles.models import LocalizedText
from infra.logging import configure_logging

SIN = "046454286"
HEALTH_NUMBER = "123456789" + luhn.calc_check_digit("123456789")
SURNAME = "Bélanger"
BIRTH_DATE = "1992-03-14"
EMAIL = "marie-eve.belanger@example.ca"
TRACKING_ID = "9b2f4c1e-5d6a-4b7c-8e9f-0a1b2c3d4e5f"


def _number_pattern(digits: str) -> re.Pattern[str]:
    # Any spelling: bare, spaced or hyphenated between any digits.
    return re.compile(r"[ -]?".join(digits))


SEARCHED: dict[str, list[re.Pattern[str]]] = {
    "SIN": [_number_pattern(SIN)],
    "health number": [_number_pattern(HEALTH_NUMBER)],
    "surname": [re.compile(re.escape(SURNAME)), re.compile(re.escape(json.dumps(SURNAME)[1:-1]))],
    "birth date": [re.compile(BIRTH_DATE)],
    "email": [re.compile(re.escape(EMAIL))],
}


def found(output: str) -> dict[str, int]:
    """How often each kind of personal data appears in the output."""
    return {kind: sum(len(p.findall(output)) for p in patterns) for kind, patterns in SEARCHED.items()}


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put back everything `configure_logging` changes, so later tests log as before."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access_level = logging.getLogger("uvicorn.access").level
    excepthook, thread_hook = sys.excepthook, threading.excepthook
    try:
        yield
    finally:
        logging.captureWarnings(False)
        structlog.contextvars.clear_contextvars()
        structlog.configure(**config)
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("uvicorn.access").setLevel(access_level)
        sys.excepthook, threading.excepthook = excepthook, thread_hook


def _adapter_failure() -> RejectedError:
    try:
        try:
            raise ValueError(
                f"record for {SIN} / {HEALTH_NUMBER[:4]} {HEALTH_NUMBER[4:7]} {HEALTH_NUMBER[7:]}"
            )
        except ValueError as cause:
            raise RejectedError(
                "identity_mismatch",
                LocalizedText(
                    en=f"No file for surname {SURNAME} born {BIRTH_DATE}",
                    fr=f"Aucun dossier pour le nom de famille {SURNAME}",
                ),
                detail=f"sin={SIN} health_number={HEALTH_NUMBER}AB email={EMAIL}",
            ) from cause
    except RejectedError as error:
        return error


def _log_everything() -> None:
    log = structlog.get_logger("tellonce.test")
    structlog.contextvars.bind_contextvars(bundle=TRACKING_ID, resident_email=EMAIL)
    error = _adapter_failure()
    log.info(
        "submission.received",
        submission={"birth_parent": {"sin": f"{SIN[:3]} {SIN[3:6]} {SIN[6:]}", "surname": SURNAME}},
        port=7233,
    )
    log.error("step.failed", step="cra-aba", message=error.message, exc_info=error)
    log.warning(f"retrying {SIN}", health_number=HEALTH_NUMBER)  # noqa: G004 - a careless call, on purpose
    try:
        raise TransientError("timeout", detail=f"no answer about OHIP {HEALTH_NUMBER}")
    except TransientError:
        log.exception("step.retrying")

    # The standard library's loggers, named as the libraries name theirs.
    try:
        raise error
    except RejectedError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logging.getLogger("temporalio.activity").warning(
        "Completing activity as failed (%s)", {"surname": SURNAME, "sin": SIN}, exc_info=error
    )
    logging.getLogger("aiokafka.consumer").error(
        "Unable to decode %s", f"date_of_birth={BIRTH_DATE}", extra={"health_number": HEALTH_NUMBER}
    )
    logging.getLogger("tellonce.streams.faststream").info("received %s", f"SIN {SIN}")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"Expected `str` but got `int` with value `{HEALTH_NUMBER}`", UserWarning, stacklevel=1)

    # What nothing caught: the process's hook, and a thread's.
    sys.excepthook(RejectedError, error, error.__traceback__)

    def crash() -> None:
        raise ValueError(f"thread saw {SIN}")

    thread = threading.Thread(target=crash, name="reply-poller")
    thread.start()
    thread.join()


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("redact", [True, False], ids=["redacted", "control"])
def test_stderr_holds_no_personal_data(
    fmt: Literal["json", "console"],
    redact: bool,
    restored_logging: None,
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", fmt, redact=redact)
    _log_everything()
    output = capfd.readouterr().err
    hits = found(output)

    # Every way in reached stderr, tracebacks included, whether redacted or not.
    for expected in (
        "submission.received",
        "step.failed",
        "step.retrying",
        "Exception in ASGI application",
        "Completing activity as failed",
        "Unable to decode",
        "process.uncaught_exception",
        "thread.uncaught_exception",
        "UserWarning: Expected `str` but got `int`",
        "Traceback (most recent call last)",
        "adapters.sdk.RejectedError: identity_mismatch",
        "ValueError: thread saw",
        TRACKING_ID,
        "7233",
    ):
        assert expected in output, expected
    if not redact:
        assert all(hits.values()), hits
        return
    assert hits == dict.fromkeys(SEARCHED, 0), output
    assert "[redacted:sin]" in output
    assert "[redacted:health_number]" in output
    if fmt == "json":
        lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        assert len(lines) == 11
        assert {line["level"] for line in lines} >= {"info", "error", "warning", "critical"}
        received = next(line for line in lines if line["event"] == "submission.received")
        assert received["submission"] == {
            "birth_parent": {"sin": "[redacted:sin]", "surname": "[redacted:name]"}
        }
        assert received["port"] == 7233
        assert received["bundle"] == TRACKING_ID
        assert received["resident_email"] == "[redacted:email]"


class _BrokenStream:
    """A stream that refuses every write, as a closed pipe does."""

    def write(self, _text: str) -> int:
        raise OSError("broken pipe")

    def flush(self) -> None:
        raise OSError("broken pipe")


def test_a_line_that_cannot_be_written_is_reported_without_its_record(
    restored_logging: None, capfd: pytest.CaptureFixture[str]
) -> None:
    # The standard handler would print the record's message and arguments, unredacted.
    configure_logging("info", "json")
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(_BrokenStream())
    logging.getLogger("aiokafka").error("record for %s", SIN)
    output = capfd.readouterr().err
    assert output == "--- a log record was dropped: OSError while writing it ---\n"

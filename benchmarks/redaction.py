"""Cost of the log redaction processor per event, next to the cost of rendering the same event.

    python benchmarks/redaction.py
    python benchmarks/redaction.py --rounds 20000 --json

Each kind of event is redacted and rendered to a JSON line many times; the figures are the
median over a few repeats, in microseconds per event. "render" is format_exc_info plus
JSONRenderer alone, "redact" the processor alone, so "redact / render" says what redaction adds
to every log line. All data is synthetic.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from structlog.processors import JSONRenderer, format_exc_info

from infra.redaction import redact_personal_data

ROOT = Path(__file__).resolve().parents[1]


def _exception() -> BaseException:
    def deep(level: int) -> None:
        if level == 0:
            raise ValueError("SIN 046 454 286 and OHIP 1234-567-897-AB do not match")
        deep(level - 1)

    try:
        try:
            deep(8)
        except ValueError as cause:
            raise RuntimeError("step cra-aba failed: sin=046454286") from cause
    except RuntimeError as error:
        return error
    raise AssertionError


def events() -> dict[str, dict[str, Any]]:
    """The events measured, from the commonest kind of line to the heaviest."""
    submission = json.loads((ROOT / "examples" / "newborn-on" / "complete.json").read_text())["submission"]
    common = {
        "timestamp": "2026-05-09T07:35:25.123456Z",
        "level": "info",
        "bundle": "9b2f4c1e-5d6a-4b7c-8e9f-0a1b2c3d4e5f",
        "step": "esdc-sin",
    }
    return {
        "plain step event": {
            **common,
            "event": "step.retrying",
            "attempt": 3,
            "system": "esdc-sin",
            "delay_s": 2.0,
        },
        "whole submission": {**common, "event": "submission.received", "submission": submission},
        "exception (chained)": {**common, "event": "step.failed", "level": "error", "exc_info": _exception()},
        "10 KB base64 blob": {
            **common,
            "event": "payload.dropped",
            "payload": base64.b64encode(bytes(range(256)) * 30).decode()[:10_000],
        },
    }


def _per_event(call: Callable[[], object], rounds: int, repeats: int) -> float:
    times = timeit.repeat(call, number=rounds, repeat=repeats)
    return statistics.median(times) / rounds * 1e6


def _rendering(event: dict[str, Any]) -> Callable[[], object]:
    renderer = JSONRenderer()
    return lambda: renderer(None, "info", format_exc_info(None, "info", dict(event)))


def _redaction(event: dict[str, Any]) -> Callable[[], object]:
    prepared = format_exc_info(None, "info", dict(event))
    return lambda: redact_personal_data(None, "info", prepared)


def measure(rounds: int, repeats: int) -> dict[str, dict[str, float]]:
    """Microseconds per event: rendering alone, redaction alone, and their ratio."""
    figures: dict[str, dict[str, float]] = {}
    for name, event in events().items():
        render = _per_event(_rendering(event), rounds, repeats)
        redact = _per_event(_redaction(event), rounds, repeats)
        figures[name] = {
            "render_us": round(render, 1),
            "redact_us": round(redact, 1),
            "ratio": round(redact / render, 2),
        }
    return figures


def main() -> None:
    """Print the figures as a table, or as JSON with --json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="events per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings per figure (the median is kept)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    figures = measure(args.rounds, args.repeats)
    # print() is fine in a script but the project's ruff rules forbid it outside the CLI.
    if args.json:
        sys.stdout.write(json.dumps(figures, indent=2) + "\n")
        return
    lines = [f"{'event':<22} {'render µs':>10} {'redact µs':>10} {'redact/render':>14}"]
    lines += [
        f"{name:<22} {row['render_us']:>10} {row['redact_us']:>10} {row['ratio']:>14}"
        for name, row in figures.items()
    ]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Submit-to-final latency of newborn bundles through the resident HTTP API.

Submits N newborn-on bundles at once (at most `--concurrency` requests in flight), then polls
each bundle's status until it is final, and reports throughput and latency percentiles:

    python benchmarks/submit_latency.py --api http://127.0.0.1:23800 --bundles 100
    python benchmarks/submit_latency.py --api http://127.0.0.1:23800 --bundles 1 --json

It measures the whole path a resident sees (API, Temporal, worker, adapters, legacy sandbox),
so run it against a `tellonce dev` stack with no injected faults. Ontario registers a birth only
once the hospital's notice matches, so right after each 202 the benchmark plays the hospital
and publishes that notice to Kafka (`--kafka`); the streams process delivers it. It exits with status 1 when
any bundle ends in a state other than `completed` (or never ends before `--timeout`), so a
slow-but-broken run can never pass for a fast one. See docs/performance.md for figures.

All submitted data is synthetic: the example's people with varied given names and times.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from stdnum import luhn

from infra.crypto import Keyring
from infra.notices_cli import hospital_notice, notice_record
from infra.settings import Settings

BUNDLE_ID = "newborn-on"
SUBMIT_PATH = f"/api/v1/bundles/{BUNDLE_ID}/submissions"
FINAL_STATES = frozenset({"completed", "completed_with_exceptions", "failed", "withdrawn"})
DEFAULT_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "newborn-on" / "complete.json"

POLL_INTERVAL = 0.1
"""Default seconds between two status polls of one bundle: the resolution of submit-to-final times.

Every poll is a Temporal query answered by the worker, so polling is load on the system being
measured: 100 bundles at 0.1 s ask for up to 1000 queries/s (docs/performance.md shows the cost).
"""

CHILD_GIVEN_NAMES = (
    "Zoë-Chloé",
    "Léa",
    "Noémie",
    "Anaïs",
    "Éloïse",
    "Maëlle",
    "Héloïse",
    "Gaëlle",
    "Zoé",
    "Aurélie",
    "Béatrice",
    "Cécile",
)
"""Synthetic given names; the accents exercise the bilingual name rules on every run.

All female so they agree with the example's `sex: F`; each passes `normalize_person_name`.
"""


@dataclass
class BundleRun:
    """What one bundle went through, as seen from the client."""

    index: int
    submitted_at: float = math.nan
    accepted_at: float = math.nan
    final_at: float = math.nan
    tracking_id: str | None = None
    state: str = "not_submitted"
    error: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def submit_latency(self) -> float:
        """Seconds from sending the POST to receiving its 202."""
        return self.accepted_at - self.submitted_at

    @property
    def total_latency(self) -> float:
        """Seconds from sending the POST to the first poll that saw a final state."""
        return self.final_at - self.submitted_at


RUN_HEALTH_NUMBER_BASE = 100_000_000 + secrets.randbelow(700_000_000)
"""Health numbers differ from one run to the next as well: a matcher lingers a day after its
match, and a second run's births with the same facts would be taken for twins of the first."""


def submission_for(template: dict[str, Any], index: int) -> dict[str, Any]:
    """The example's submission, made distinct per bundle where that is cheap and stays valid.

    Distinct data keeps the run honest: identical bodies could be served from a cache or
    collapse on some idempotency key, and the sandbox ledgers would show them as duplicates.
    """
    body = copy.deepcopy(template)
    child = body["child"]
    child["given_names"] = CHILD_GIVEN_NAMES[index % len(CHILD_GIVEN_NAMES)]
    # Minutes of the day give 1440 distinct times; the birth date itself is left alone because
    # it must stay within the last 12 months and not in the future.
    minute = (index * 7 + 1) % 1440
    child["time_of_birth"] = f"{minute // 60:02d}:{minute % 60:02d}"
    # Each birth parent gets a health number of her own, as in life: notices are matched to
    # statements by it, and one shared number would make every bundle a twin of the others.
    digits = f"{RUN_HEALTH_NUMBER_BASE + index:09d}"
    body["birth_parent"]["health_number"] = digits + luhn.calc_check_digit(digits)
    return body


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure is a latency that happened)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


async def run_one(
    client: httpx.AsyncClient,
    body: dict[str, Any],
    run: BundleRun,
    limit: asyncio.Semaphore,
    *,
    hospital: AIOKafkaProducer,
    notices_topic: str,
    keyring: Keyring | None,
    deadline: float,
    poll_interval: float,
) -> None:
    """Submit one bundle, then poll its status until final, an error, or the deadline."""
    # The semaphore bounds only the submit burst: polls are cheap queries, and holding a slot
    # while polling would make `--concurrency` a cap on bundles in flight instead.
    async with limit:
        run.submitted_at = time.monotonic()
        try:
            response = await client.post(SUBMIT_PATH, json=body)
        except httpx.HTTPError as exc:
            run.state, run.error = "submit_error", f"{type(exc).__name__}: {exc}"
            return
        answered_at = time.monotonic()
    if response.status_code != 202:
        # Not counted in submit latency, which is the time to a 202 only.
        run.state, run.error = "rejected", f"HTTP {response.status_code}: {response.text[:300]}"
        return
    run.accepted_at = answered_at
    accepted = response.json()
    run.tracking_id = accepted["tracking_id"]
    run.state = "submitted"
    notice = hospital_notice(body, notice_id=f"NLB-{run.tracking_id[:8].upper()}")
    await hospital.send_and_wait(
        notices_topic, notice_record(notice, keyring), key=notice["notice_id"].encode()
    )
    headers = {"X-Access-Code": accepted["access_code"]}
    while time.monotonic() < deadline:
        try:
            status = await client.get(accepted["status_url"], headers=headers)
        except httpx.HTTPError as exc:
            # One failed poll is not a failed bundle: keep the last error and poll again.
            run.error = f"poll {type(exc).__name__}: {exc}"
        else:
            if status.status_code == 200:
                document = status.json()
                run.state, run.steps = document["state"], document["steps"]
                if run.state in FINAL_STATES:
                    run.final_at = time.monotonic()
                    return
            else:
                run.error = f"poll HTTP {status.status_code}: {status.text[:300]}"
        await asyncio.sleep(poll_interval)
    run.state = f"timeout ({run.state})"


async def benchmark(
    api: str,
    template: dict[str, Any],
    bundles: int,
    concurrency: int,
    *,
    kafka: str,
    give_up_after: float,
    poll_interval: float = POLL_INTERVAL,
) -> dict[str, Any]:
    """Run the benchmark and summarise it as one JSON-ready dict."""
    settings = Settings(kafka_bootstrap=kafka)
    runs = [BundleRun(index) for index in range(bundles)]
    bodies = [submission_for(template, index) for index in range(bundles)]
    limit = asyncio.Semaphore(concurrency)
    # One connection per concurrent request, so the client never queues a submit behind
    # another and submit latency measures the server, not the client's pool.
    limits = httpx.Limits(max_connections=max(concurrency, bundles), max_keepalive_connections=bundles)
    hospital = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
    await hospital.start()
    async with httpx.AsyncClient(base_url=api, timeout=30.0, limits=limits) as client:
        started = time.monotonic()
        deadline = started + give_up_after
        await asyncio.gather(
            *(
                run_one(
                    client,
                    body,
                    run,
                    limit,
                    hospital=hospital,
                    notices_topic=settings.kafka_topic_birth_notices,
                    keyring=settings.keyring,
                    deadline=deadline,
                    poll_interval=poll_interval,
                )
                for body, run in zip(bodies, runs, strict=True)
            )
        )
        ended = time.monotonic()
    await hospital.stop()

    submit = [r.submit_latency for r in runs if not math.isnan(r.accepted_at)]
    total = [r.total_latency for r in runs if not math.isnan(r.final_at)]
    finals = [r.final_at for r in runs if not math.isnan(r.final_at)]
    # Wall time runs from the first POST to the last final state; without finals, to the end.
    first_submit = min((r.submitted_at for r in runs if not math.isnan(r.submitted_at)), default=started)
    wall = (max(finals) if len(finals) == bundles else ended) - first_submit
    completed = sum(r.state == "completed" for r in runs)
    not_completed = [
        {
            "index": r.index,
            "tracking_id": r.tracking_id,
            "state": r.state,
            "error": r.error,
            "steps": {s["id"]: f"{s['state']} (attempts {s['attempts']})" for s in r.steps},
        }
        for r in runs
        if r.state != "completed"
    ]
    return {
        "api": api,
        "bundles": bundles,
        "concurrency": concurrency,
        "poll_interval_s": poll_interval,
        "completed": completed,
        "not_completed": len(not_completed),
        "wall_s": wall,
        "bundles_per_s": completed / wall if wall > 0 else math.nan,
        "submit_s": {
            "p50": percentile(submit, 50),
            "p95": percentile(submit, 95),
            "max": max(submit, default=math.nan),
        },
        "submit_to_final_s": {
            "p50": percentile(total, 50),
            "p95": percentile(total, 95),
            "p99": percentile(total, 99),
            "max": max(total, default=math.nan),
        },
        "max_attempts": max((s["attempts"] for r in runs for s in r.steps), default=0),
        "failures": not_completed,
    }


def render(result: dict[str, Any]) -> str:
    """The human-readable report."""
    submit, total = result["submit_s"], result["submit_to_final_s"]

    def ms(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value * 1000:.0f} ms"

    lines = [
        f"bundles:          {result['bundles']} (concurrency {result['concurrency']}, "
        f"polling every {result['poll_interval_s']:g} s)",
        f"completed:        {result['completed']}",
        f"wall time:        {result['wall_s']:.2f} s (first submit to last final)",
        f"throughput:       {result['bundles_per_s']:.2f} bundles/s",
        f"submit (202):     p50 {ms(submit['p50'])}  p95 {ms(submit['p95'])}  max {ms(submit['max'])}",
        f"submit to final:  p50 {ms(total['p50'])}  p95 {ms(total['p95'])}  "
        f"p99 {ms(total['p99'])}  max {ms(total['max'])}",
        f"max step attempts: {result['max_attempts']}",
        f"not completed:    {result['not_completed']}",
    ]
    for failure in result["failures"][:10]:
        lines.append(
            f"  #{failure['index']} {failure['tracking_id']}: {failure['state']} {failure['error'] or ''}"
        )
        lines.extend(f"      {step}: {state}" for step, state in failure["steps"].items())
    if len(result["failures"]) > 10:
        lines.append(f"  ... and {len(result['failures']) - 10} more (use --json for all)")
    return "\n".join(lines)


def _nan_to_none(value: Any) -> Any:
    """A copy of a JSON-ready value with every NaN replaced by None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(item) for item in value]
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--api", required=True, help="API base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--bundles", type=int, required=True, help="how many bundles to submit")
    parser.add_argument(
        "--kafka",
        default=Settings().kafka_target,
        help="Kafka bootstrap servers for the hospital notices (default: tellonce dev's broker)",
    )
    parser.add_argument("--concurrency", type=int, help="submits in flight at once (default: --bundles)")
    parser.add_argument(
        "--example", type=Path, default=DEFAULT_EXAMPLE, help="example file with a `submission` object"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before giving up on finals")
    parser.add_argument(
        "--poll-interval", type=float, default=POLL_INTERVAL, help="seconds between status polls of a bundle"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    args = parser.parse_args(argv)
    if args.bundles < 1:
        parser.error("--bundles must be at least 1")
    if args.concurrency is None:
        args.concurrency = args.bundles
    if args.poll_interval <= 0:
        parser.error("--poll-interval must be positive")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 only when every bundle completed."""
    args = parse_args(argv)
    example = json.loads(args.example.read_text(encoding="utf-8"))
    template = example.get("submission", example)
    result = asyncio.run(
        benchmark(
            args.api,
            template,
            args.bundles,
            args.concurrency,
            kafka=args.kafka,
            give_up_after=args.timeout,
            poll_interval=args.poll_interval,
        )
    )
    # print() is fine in a script but the project's ruff rules forbid it outside the CLI.
    if args.json:
        # NaN (no sample, e.g. every submit failed) is not JSON: emit null instead.
        sys.stdout.write(json.dumps(_nan_to_none(result), ensure_ascii=False, allow_nan=False) + "\n")
    else:
        sys.stdout.write(render(result) + "\n")
    return 0 if result["completed"] == args.bundles else 1


if __name__ == "__main__":
    sys.exit(main())

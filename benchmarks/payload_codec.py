"""Cost of payload encryption: the encrypted data converter against the plain pydantic one, same run.

Converts a real newborn BundleInput (the largest payload a bundle writes: the whole plan with
every step's projection) to payloads and back, N times with each converter, and prints the
time per round trip, the payload sizes and the ratios:

    python benchmarks/payload_codec.py            # N=2000
    python benchmarks/payload_codec.py --rounds 500 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from temporalio.converter import DataConverter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.registry import KNOWN_ADAPTERS  # noqa: E402 - after the path set-up above
from bundles.catalogue import Catalogue  # noqa: E402
from bundles.plan import resolve_plan  # noqa: E402
from bundles.submissions import validate_submission  # noqa: E402
from infra.codec import build_data_converter  # noqa: E402
from infra.crypto import StoredKeyring, new_key_id, new_stored_key  # noqa: E402
from workflows.models import BundleInput  # noqa: E402


def sample_input() -> BundleInput:
    """The newborn example as the workflow receives it."""
    example = json.loads((ROOT / "examples" / "newborn-on" / "complete.json").read_text())
    definition = Catalogue.load(known_adapters=KNOWN_ADAPTERS).get(example["bundle_id"])
    validated = validate_submission(definition, example["submission"])
    plan = resolve_plan(definition, validated.data, validated.consents)
    return BundleInput(
        submission_id="2f0e6f5c-58f4-4a8e-9a59-2b5d1c1f1a77",
        plan=plan,
        received_at=datetime.now(UTC),
        task_queue_prefix="tellonce",
    )


async def round_trips(converter: DataConverter, value: BundleInput, rounds: int) -> tuple[list[float], int]:
    """Seconds per encode+decode, and the encoded size in bytes."""
    times: list[float] = []
    size = 0
    for _ in range(rounds):
        start = time.perf_counter()
        payloads = await converter.encode([value])
        await converter.decode(payloads, [BundleInput])
        times.append(time.perf_counter() - start)
        size = payloads[0].ByteSize()
    return times, size


async def main() -> int:
    """Run both converters alternately in blocks, so machine noise hits both alike."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    kid = new_key_id()
    keyring = StoredKeyring(active=kid, keys={kid: new_stored_key()}).keyring()
    converters = {"plain": build_data_converter(None), "encrypted": build_data_converter(keyring)}
    value = sample_input()
    samples: dict[str, list[float]] = {name: [] for name in converters}
    sizes: dict[str, int] = {}
    block = max(1, args.rounds // 10)
    for _ in range(10):
        for name, converter in converters.items():
            times, sizes[name] = await round_trips(converter, value, block)
            samples[name] += times
    result = {
        name: {
            "median_us": round(statistics.median(times) * 1e6, 1),
            "p95_us": round(sorted(times)[int(len(times) * 0.95)] * 1e6, 1),
            "payload_bytes": sizes[name],
        }
        for name, times in samples.items()
    }
    result["ratio"] = {
        "median": round(result["encrypted"]["median_us"] / result["plain"]["median_us"], 2),
        "payload_bytes": round(result["encrypted"]["payload_bytes"] / result["plain"]["payload_bytes"], 3),
    }
    if args.json:
        print(json.dumps(result))  # noqa: T201 - a benchmark's output is its result
    else:
        for name in converters:
            figures = result[name]
            print(  # noqa: T201
                f"{name:>9}: median {figures['median_us']} µs, p95 {figures['p95_us']} µs per round trip, "
                f"{figures['payload_bytes']} bytes"
            )
        print(f"    ratio: {result['ratio']['median']}x time, {result['ratio']['payload_bytes']}x bytes")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

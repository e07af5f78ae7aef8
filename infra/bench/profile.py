"""Where the worker's time went: a py-spy speedscope recording summed by frame and by package."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

_PACKAGE_MARKERS = (
    ("temporalio/worker/workflow_sandbox", "temporalio workflow sandbox"),
    ("temporalio/worker", "temporalio worker"),
    ("temporalio/converter", "temporalio converter"),
    ("temporalio/contrib/pydantic", "temporalio pydantic converter"),
    ("temporalio", "temporalio (other)"),
    ("pydantic", "pydantic"),
    ("structlog", "structlog"),
    ("cryptography", "cryptography"),
    ("aiokafka", "aiokafka"),
    ("httpx", "httpx"),
    ("httpcore", "httpx"),
    ("asyncssh", "asyncssh"),
    ("google/protobuf", "protobuf"),
    ("/workflows/", "tellonce workflows/"),
    ("/activities/", "tellonce activities/"),
    ("/adapters/", "tellonce adapters/"),
    ("/bundles/", "tellonce bundles/"),
    ("/infra/", "tellonce infra/"),
    ("asyncio", "asyncio"),
)


def _package(file: str) -> str:
    for marker, name in _PACKAGE_MARKERS:
        if marker in file:
            return name
    return "other"


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Self time by frame, and self time by package, as shares of every sample py-spy took.

    py-spy samples only threads that are running (not idle), so the shares are of the worker's
    busy time; `samples` divided by the sampling rate is roughly its busy seconds.
    """
    document = json.loads(path.read_text(encoding="utf-8"))
    frames = document["shared"]["frames"]
    own: Counter[int] = Counter()
    inclusive: Counter[int] = Counter()
    total = 0
    for profile in document["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            if not stack:
                continue
            total += weight
            own[stack[-1]] += weight
            for frame in set(stack):
                inclusive[frame] += weight

    def label(index: int) -> str:
        frame = frames[index]
        file = str(frame.get("file", ""))
        short = "/".join(file.split("/")[-2:]) if file else "?"
        return f"{frame.get('name', '?')} ({short}:{frame.get('line', '?')})"

    packages: Counter[str] = Counter()
    for index, weight in own.items():
        packages[_package(str(frames[index].get("file", "")))] += weight
    share = (lambda weight: round(100 * weight / total, 1)) if total else (lambda _: 0.0)
    return {
        "samples": total,
        "self_by_package_pct": {name: share(weight) for name, weight in packages.most_common()},
        "top_self_pct": [[label(index), share(weight)] for index, weight in own.most_common(top)],
        "top_inclusive_pct": [
            [label(index), share(weight)]
            for index, weight in inclusive.most_common(top * 3)
            if _package(str(frames[index].get("file", ""))) != "asyncio"
        ][:top],
    }

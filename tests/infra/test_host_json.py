"""Issue 14: host.json's queue settings are the numbers docs/reliability.md explains, tied to the code's own."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from shared.runtime.detector import LEASE
from shared.runtime.fanout import MAX_DEQUEUE
from shared.runtime.teams import MAX_PER_SECOND
from shared.standins.loganalytics import CONCURRENT_PER_IDENTITY
from shared.workbench.queuecmd import RETRY_AFTER, VISIBILITY

ROOT = Path(__file__).resolve().parents[2]


def _span(text: str) -> timedelta:
    hours, minutes, seconds = (int(p) for p in text.split(":"))
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def test_queue_settings_respect_log_analytics_and_the_run_lease() -> None:
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    queues = host["extensions"]["queues"]
    # In flight per instance = batchSize + newBatchThreshold: never more queries than Log Analytics runs at once
    # for one identity, and so never more rules posting than one process's rate limiter spaces.
    assert queues["batchSize"] + queues["newBatchThreshold"] <= CONCURRENT_PER_IDENTITY
    assert queues["batchSize"] >= 1 and MAX_PER_SECOND == 4
    assert queues["maxDequeueCount"] == MAX_DEQUEUE == 5
    assert queues["messageEncoding"] == "base64"  # what `kqlwatch dispatch` writes (TextBase64EncodePolicy)
    assert _span(queues["visibilityTimeout"]) == timedelta(seconds=RETRY_AFTER)  # `worker --drain` retries alike
    # A run never outlives its lease: the host stops it first; `worker --drain` hides a message longer than that.
    assert _span(host["functionTimeout"]) <= LEASE < timedelta(seconds=VISIBILITY)

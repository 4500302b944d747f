"""`kqlwatch dispatch` and `kqlwatch worker --drain` (issue 14): the fan-out off Azure, through exactly the
functions of function_app.py, against a real queue (KQLWATCH_QUEUE_CONNECTION: Azurite's queue service locally,
a queue service URL with the identity on a VM or container).

`worker --drain` does what the Functions host does for the queue trigger (host.json extensions.queues): take up
to KQLWATCH_CONCURRENCY messages at a time, invisible while they run; a run that fails is retried after
--retry-after seconds, and after 5 deliveries goes to kqlwatch-runs-poison, whose messages it then hands to the
poison function (an ops notice naming the rule). It stops when both queues are empty.
"""

from __future__ import annotations

import argparse
import logging
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient, QueueMessage

log = logging.getLogger("kqlwatch")

VISIBILITY = 660  # seconds a message stays invisible while it runs: the 10-minute run lease, and a minute more
RETRY_AFTER = 30  # host.json visibilityTimeout: a failed run's message is visible again after this


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "worker":
        parser.add_argument("--drain", action="store_true", help="run queued rule runs until the queues are empty")
        parser.add_argument(
            "--retry-after",
            type=int,
            default=RETRY_AFTER,
            help=f"seconds before a failed run is retried ({RETRY_AFTER})",
        )
    parser.epilog = (
        "KQLWATCH_QUEUE_CONNECTION names the queue service (Azurite's connection string, or a queue URL used with "
        "the managed identity); the other settings are those of `kqlwatch run`."
    )


def main(args: argparse.Namespace) -> int:
    from shared.runtime.settings import load_queue_connection, load_settings
    from shared.workbench.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK

    connection = load_queue_connection()
    settings = load_settings()
    if args.command == "dispatch":
        sent = dispatch(connection)
        print(f"dispatched {sent} rule run(s) to kqlwatch-runs")
        return EXIT_OK
    if not args.drain:
        print("kqlwatch worker: give --drain (run queued rule runs until the queues are empty)", file=sys.stderr)
        return EXIT_CONFIG
    report = drain(connection, concurrency=settings.concurrency, retry_after=max(args.retry_after, 0))
    print(
        f"ran {report.ran} message(s): {report.failed} failed (retried later), {report.poisoned} moved to "
        f"kqlwatch-runs-poison, {report.notices} poison notice(s)"
    )
    return EXIT_OK if not report.failed and not report.poisoned else EXIT_FAILED


class _Out:
    """The queue output binding, as the host hands it to `dispatch` (func.Out[typing.List[str]])."""

    def __init__(self) -> None:
        self.value: list[str] = []

    def set(self, val: list[str]) -> None:
        self.value = list(val)

    def get(self) -> list[str]:
        return self.value


def dispatch(connection: str) -> int:
    from azure.functions.timer import TimerRequest

    import function_app
    from shared.workbench.queues import ensure_queue, queue_client

    out = _Out()
    function_app.dispatch(TimerRequest(past_due=False), out)
    runs = queue_client(connection, function_app.QUEUE)
    try:
        ensure_queue(runs)
        for body in out.get():
            runs.send_message(body)
    finally:
        runs.close()
    return len(out.get())


@dataclass
class DrainReport:
    ran: int = 0
    failed: int = 0
    poisoned: int = 0
    notices: int = 0


def drain(connection: str, *, concurrency: int, retry_after: int = RETRY_AFTER) -> DrainReport:
    import function_app
    from shared.workbench.queues import ensure_queue, queue_client

    runs, poison = queue_client(connection, function_app.QUEUE), queue_client(connection, function_app.POISON_QUEUE)
    report = DrainReport()
    try:
        for queue in (runs, poison):
            ensure_queue(queue)
        while _drain_runs(runs, poison, concurrency, retry_after, report):
            pass
    finally:
        runs.close()
        poison.close()
    return report


def _drain_runs(
    runs: QueueClient, poison: QueueClient, concurrency: int, retry_after: int, report: DrainReport
) -> bool:
    """Run kqlwatch-runs' messages until it is empty, then hand the poison queue's to the poison function. True
    when a poison message was handled (its notice may be followed by more runs: look again).

    A message is taken whenever a run ends, as the host does with newBatchThreshold: never a whole batch
    waiting for its slowest run while the others' slots stand idle."""
    from shared.runtime.fanout import MAX_DEQUEUE

    inflight: set[Future[tuple[bool, bool]]] = set()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="kqlwatch-worker") as pool:
        while True:
            room = concurrency - len(inflight)
            batch = (
                list(runs.receive_messages(messages_per_page=room, max_messages=room, visibility_timeout=VISIBILITY))
                if room
                else []
            )
            inflight.update(pool.submit(_run, runs, poison, m, retry_after, MAX_DEQUEUE) for m in batch)
            if not inflight:
                break
            done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
            for future in done:
                ok, moved = future.result()
                report.ran += 1
                report.failed += not ok and not moved
                report.poisoned += moved
    poisoned = list(poison.receive_messages(max_messages=16, visibility_timeout=VISIBILITY))
    for message in poisoned:
        report.notices += _poisoned(poison, message)
    return bool(poisoned)


def _host_message(message: QueueMessage) -> Any:
    from azure.functions.queue import QueueMessage as HostMessage

    return HostMessage(  # type: ignore[no-untyped-call]
        id=message.id, body=str(message.content), dequeue_count=message.dequeue_count
    )


def _run(
    runs: QueueClient, poison: QueueClient, message: QueueMessage, retry_after: int, max_dequeue: int
) -> tuple[bool, bool]:
    """(ran without error, moved to the poison queue), as the host handles a queue-triggered invocation."""
    import function_app

    try:
        function_app.run_rule(_host_message(message))
    except Exception as exc:  # what the host does with a failed invocation: retry, then poison
        log.error("run_rule failed (delivery %s of %d): %s", message.dequeue_count, max_dequeue, exc)
        if (message.dequeue_count or 0) >= max_dequeue:
            poison.send_message(str(message.content))
            runs.delete_message(message)
            return False, True
        runs.update_message(message, visibility_timeout=retry_after)
        return False, False
    runs.delete_message(message)
    return True, False


def _poisoned(poison: QueueClient, message: QueueMessage) -> int:
    import function_app

    try:
        function_app.run_rule_poison(_host_message(message))
    except Exception as exc:
        log.error("run_rule_poison failed: %s", exc)
    poison.delete_message(message)
    return 1

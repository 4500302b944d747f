"""Azure Functions entry point (Python v2 model). Thin on purpose: the work lives in shared/, imported on
first run so a cold start only pays for azure.functions.

Issue 14: the timer `dispatch` enqueues one message per due rule run on the Storage queue kqlwatch-runs; each
is run by `run_rule`, which Flex Consumption scales on its own; a message that failed maxDequeueCount (5) times
lands on kqlwatch-runs-poison, and `run_rule_poison` posts an ops notice naming the rule. `kqlwatch dispatch` and
`kqlwatch worker --drain` call these same functions off Azure.
"""

import typing

import azure.functions as func

app = func.FunctionApp()

QUEUE = "kqlwatch-runs"
POISON_QUEUE = "kqlwatch-runs-poison"
CONNECTION = "KQLWATCH_QUEUE_CONNECTION"  # app settings KQLWATCH_QUEUE_CONNECTION__queueServiceUri etc.


@app.timer_trigger(schedule="%KQLWATCH_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
@app.queue_output(arg_name="runs", queue_name=QUEUE, connection=CONNECTION)
def dispatch(timer: func.TimerRequest, runs: func.Out[typing.List[str]]) -> None:  # noqa: UP006 - the worker needs typing.List
    from shared.runtime.fanout import dispatch as due_runs

    runs.set(due_runs(past_due=timer.past_due))


@app.queue_trigger(arg_name="message", queue_name=QUEUE, connection=CONNECTION)
def run_rule(message: func.QueueMessage) -> None:
    from shared.runtime.fanout import run_message

    run_message(message.get_body(), dequeue_count=_dequeue_count(message))


@app.queue_trigger(arg_name="message", queue_name=POISON_QUEUE, connection=CONNECTION)
def run_rule_poison(message: func.QueueMessage) -> None:
    from shared.runtime.fanout import poisoned

    poisoned(message.get_body(), dequeue_count=_dequeue_count(message))


def _dequeue_count(message: func.QueueMessage) -> int:
    # The host's message (azure.functions.queue.QueueMessage) has it; the abstract base does not.
    return int(getattr(message, "dequeue_count", None) or 1)

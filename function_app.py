"""Azure Functions entry point (Python v2 model). Thin on purpose: the work lives in shared/, imported on
first run so a cold start only pays for azure.functions."""

import azure.functions as func

app = func.FunctionApp()


@app.timer_trigger(schedule="%KQLWATCH_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def kqlwatch_timer(timer: func.TimerRequest) -> None:
    from shared.runtime.wiring import run_timer

    run_timer(past_due=timer.past_due)

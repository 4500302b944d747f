"""`kqlwatch backtest`: a rule's schedule replayed over a past period through the production Detector."""

from shared.workbench.backtest.command import configure, main

__all__ = ["configure", "main"]

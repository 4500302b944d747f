"""The hidden ingestion-time column behind ingestion_time() (re-exported by engine, where callers import it)."""

from __future__ import annotations

from shared.rules.kql import tokenize

__all__ = ["INGESTED", "with_ingestion_column"]

# The hidden ingestion-time column behind ingestion_time(): the offline engine has no such function, so the
# Log Analytics stand-in and the backtest keep each row's ingestion time here and rewrite the call to it.
INGESTED = "_IngestedAt"


def with_ingestion_column(query: str) -> str:
    """ingestion_time() -> the hidden column (the offline engine has no such function)."""
    tokens = tokenize(query, comments=True)
    out, last = [], 0
    for i, tok in enumerate(tokens):
        if (
            tok.text == "ingestion_time"
            and i + 2 < len(tokens)
            and tokens[i + 1].text == "("
            and tokens[i + 2].text == ")"
        ):
            out.append(query[last : tok.start])
            out.append(INGESTED)
            last = tokens[i + 2].end
    out.append(query[last:])
    return "".join(out)

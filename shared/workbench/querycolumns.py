"""Which columns of its source tables a query can read: hunt loads only those (parsing and typing 29 columns of a
million-row export is most of the load time; most rules read a handful).

Conservative by construction: `needed_names` answers None - load every column - whenever the query may read or
return a column it does not name: a `*`, an operator or function that works on all columns (`project-away`,
`pack_all()`, `getschema`, `evaluate`, ...), a column named by a string (`column_ifexists("X", ...)`,
`['X']`), a join, lookup or union (the other side's columns are returned), or a result that is not shaped by
`project`, `summarize`, `count` or `distinct` at the end (a bare `T | where ...` returns every column). A name
is kept if it matches any identifier of the query, case-insensitively (over-keeping costs time, never answers).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.rules.kql import Token

# Anywhere in the query: these may read or return columns the query never names.
_ALL_COLUMNS = frozenset(
    {
        "project-away",
        "project-keep",
        "project-reorder",
        "project-rename",
        "pack_all",
        "bag_pack_columns",
        "getschema",
        "column_ifexists",
        "evaluate",
        "invoke",
        "fork",
        "facet",
        "join",
        "lookup",
        "union",
        "find",
        "search",
        "as",
        "materialize",
        "toscalar",
        "narrow",
        "columnifexists",
    }
)
# The last top-level operator must be one of these: the result then has only columns the query names.
_SHAPING = frozenset({"project", "summarize", "count", "distinct"})
# ... optionally followed by these, which neither add source columns nor read unnamed ones.
_AFTER_SHAPING = frozenset({"where", "filter", "extend", "sort", "order", "take", "limit", "top", "project"})
# Always loaded: the columns windows and ingestion time read (backtest's replay, an export's ingestion time).
ALWAYS = frozenset({"TimeGenerated", "Timestamp", "_IngestedAt", "IngestedAt", "IngestionTime", "ingestion_time"})


def needed_names(query: str) -> frozenset[str] | None:
    """The identifiers (case-folded) that may be columns the query reads, or None: it may need every column."""
    return _names(query, shaped=True)


def named_names(query: str) -> frozenset[str] | None:
    """The identifiers (case-folded) that may be columns the query looks at, or None when it may look at a
    column it does not name. Its result may still carry every column, unchanged: latecolumns.py reads those
    late, for the returned rows only."""
    return _names(query, shaped=False)


def _names(query: str, *, shaped: bool) -> frozenset[str] | None:
    from shared.rules.kql import KqlLexError, tokenize

    try:
        tokens = tokenize(query)
    except KqlLexError:
        return None
    names: set[str] = set()
    for index, token in enumerate(tokens):
        if token.kind == "punct" and token.text == "*":
            return None
        if token.kind == "ident" and token.text.casefold() in _ALL_COLUMNS:
            return None
        if token.kind == "string" and index and tokens[index - 1].text == "[":
            return None  # ['Column name']: a column named by a string
        if token.kind == "ident":
            names.add(token.text.casefold())
    if shaped and not _shaped(tokens):
        return None
    return frozenset(names | {name.casefold() for name in ALWAYS})


def _shaped(tokens: list[Token]) -> bool:
    """True when the last statement's top-level pipeline ends in a shaping operator (then only these)."""
    operators: list[str] = []
    depth = 0
    for index, token in enumerate(tokens):
        text = token.text
        if text in ("(", "[", "{"):
            depth += 1
        elif text in (")", "]", "}"):
            depth -= 1
        elif depth == 0 and text == ";":
            operators = []
        elif depth == 0 and text == "|" and index + 1 < len(tokens):
            operators.append(tokens[index + 1].text.casefold())
    for position in range(len(operators) - 1, -1, -1):
        if operators[position] in _SHAPING:
            return all(op in _AFTER_SHAPING for op in operators[position + 1 :])
        if operators[position] not in _AFTER_SHAPING:
            return False
    return False


def keep(columns: Iterable[str], names: frozenset[str] | None) -> list[str]:
    """The columns to load: all of them when `names` is None."""
    return [c for c in columns if names is None or c.casefold() in names]

"""Rule parameters: `KQLWATCH_PARAM_<Name>` replaces the rule's top-level `let <Name> = ...;` with a literal.

Values are data: they are written as KQL string literals (or validated numbers, timespans and booleans),
so no quote, `|`, `;`, `//` or newline in a value can change what the query does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from shared.rules.kql import LetBinding, string_literal, top_level_lets

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_TIMESPAN = re.compile(r"^\d+(\.\d+)?(d|h|m|s|ms|microsecond|tick)$")
_BOOL = {"true", "false"}


PARAM_PREFIX = "KQLWATCH_PARAM_"  # KQLWATCH_PARAM_<Name> sets the rule's `let <Name>`


class ParamError(ValueError):
    """A value that does not fit the binding it replaces; `name` is the binding's name."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name} {reason}")
        self.name = name
        self.reason = reason


def bindings(query: str) -> dict[str, LetBinding]:
    return top_level_lets(query)


def apply_params(query: str, params: Mapping[str, str]) -> str:
    """Return the query with each named binding replaced; names the query lacks are ignored here
    (the caller checks that every parameter names a binding in some rule)."""
    lets = top_level_lets(query)
    edits = sorted(
        ((lets[name], literal_for(lets[name], value)) for name, value in params.items() if name in lets),
        key=lambda edit: edit[0].value_start,
        reverse=True,
    )
    for binding, literal in edits:
        query = query[: binding.value_start] + literal + query[binding.value_end :]
    return query


def literal_for(binding: LetBinding, value: str) -> str:
    if binding.is_array:
        return array_literal(split_list(value))
    first = binding.value_tokens[0] if len(binding.value_tokens) == 1 else None
    if first is not None and first.kind == "number":
        text = value.strip()
        if first.text.isdigit() or _NUMBER.match(first.text):
            if not _NUMBER.match(text):
                raise ParamError(binding.name, f"is a number in the rule; {text!r} is not a number")
            return text
        if not _TIMESPAN.match(text):
            raise ParamError(binding.name, f"is a timespan in the rule (like 1h); {text!r} is not one")
        return text
    if first is not None and first.text.lower() in _BOOL:
        text = value.strip().lower()
        if text not in _BOOL:
            raise ParamError(binding.name, f"is a boolean in the rule; {value!r} is not true/false")
        return text
    return string_literal(value)


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def array_literal(items: Iterable[str]) -> str:
    literals = [string_literal(item) for item in items]
    # pack_array() with no argument is not valid KQL; an empty dynamic array is.
    return f"pack_array({', '.join(literals)})" if literals else "dynamic([])"

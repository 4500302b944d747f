"""An in-memory Table Storage table: the narrow `azure.data.tables.TableClient` surface that
shared/runtime/store.py calls, so the real StateStore (and with it the detector's dedupe, leases, suppression,
re-alert marks and run records) runs unchanged in a backtest, with nothing written anywhere.

It behaves as the service does where the store relies on it: create fails on an existing key (ResourceExistsError),
updates are conditional on the etag (ResourceModifiedError), a transaction is all-or-nothing
(TableTransactionError), queries return entities in PartitionKey/RowKey order and are OData filters with `@name`
parameters (eq ne ge gt le lt, and or not, parentheses; string, datetime, number and boolean values; a property
an entity lacks matches nothing, as in the service), and a string property over 64 KiB is refused with 400.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

MAX_PROPERTY_UNITS = 32 * 1024  # a string property: 64 KiB of UTF-16
_TOKEN = re.compile(
    r"\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<param>@[A-Za-z_]\w*)|(?P<dt>datetime'[^']*')|(?P<str>'(?:[^']|'')*')"
    r"|(?P<num>-?\d+(?:\.\d+)?L?)|(?P<word>[A-Za-z_]\w*))"
)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: bool(a == b),
    "ne": lambda a, b: bool(a != b),
    "ge": lambda a, b: bool(a >= b),
    "gt": lambda a, b: bool(a > b),
    "le": lambda a, b: bool(a <= b),
    "lt": lambda a, b: bool(a < b),
}
Predicate = Callable[[Mapping[str, Any]], bool]


class FilterError(ValueError):
    """A filter this evaluator cannot read (the service would answer 400)."""


class Entity(dict[str, Any]):
    """What query_entities/get_entity return: the properties, and the etag in `metadata` as TableEntity has."""

    metadata: dict[str, Any]


class MemoryTableClient:
    def __init__(self, table_name: str = "kqlwatch") -> None:
        self.table_name = table_name
        self._rows: dict[tuple[str, str], dict[str, Any]] = {}
        self._etags: dict[tuple[str, str], str] = {}
        self._created = False
        self._counter = itertools.count(1)
        self.operations = 0  # every call, for a report of what the run would have cost

    def close(self) -> None:
        return None

    def create_table(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        self.operations += 1
        if self._created:
            raise ResourceExistsError("TableAlreadyExists")
        self._created = True

    # --- single entities ---

    def create_entity(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        self.operations += 1
        return self._apply([("create", entity)])[0]

    def upsert_entity(self, entity: Mapping[str, Any], mode: Any = None) -> dict[str, Any]:
        self.operations += 1
        return self._apply([("upsert", entity, {"mode": mode})])[0]

    def update_entity(
        self, entity: Mapping[str, Any], mode: Any = None, *, etag: str | None = None, match_condition: Any = None
    ) -> dict[str, Any]:
        self.operations += 1
        return self._apply([("update", entity, {"mode": mode, "etag": etag, "match_condition": match_condition})])[0]

    def delete_entity(self, partition_key: str, row_key: str) -> None:
        self.operations += 1
        self._rows.pop((partition_key, row_key), None)

    def get_entity(self, partition_key: str, row_key: str) -> Entity:
        from azure.core.exceptions import ResourceNotFoundError

        self.operations += 1
        key = (partition_key, row_key)
        if key not in self._rows:
            raise ResourceNotFoundError("ResourceNotFound")
        return self._entity(key)

    # --- queries and transactions ---

    def query_entities(
        self, query_filter: str, *, parameters: Mapping[str, Any] | None = None, select: Sequence[str] | None = None
    ) -> Iterator[Entity]:
        self.operations += 1
        matches = compile_filter(query_filter, parameters or {})
        found = [self._entity(key, select) for key in sorted(self._rows) if matches(self._rows[key])]
        return iter(found)  # evaluated now: the caller may write to the table while it iterates

    def submit_transaction(self, operations: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        from azure.core.exceptions import AzureError
        from azure.data.tables import TableTransactionError

        self.operations += 1
        if len({str(op[1]["PartitionKey"]) for op in operations}) > 1:
            raise TableTransactionError(message="CommandsInBatchActOnDifferentPartitions")
        try:
            return self._apply(operations)
        except AzureError as exc:  # all or nothing, as the service does it, with the failing operation's status
            error = TableTransactionError(message=f"0:{exc}")
            error.status_code = getattr(exc, "status_code", None)
            raise error from None

    # --- internals ---

    def _apply(self, operations: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        rows, etags = dict(self._rows), dict(self._etags)  # a failing operation leaves both untouched
        results = []
        for op in operations:
            kind, entity, options = op[0], op[1], (op[2] if len(op) > 2 else {})
            key = (str(entity["PartitionKey"]), str(entity["RowKey"]))
            results.append(self._one(rows, etags, kind, key, _stored(entity), options))
        self._rows, self._etags = rows, etags
        return results

    def _one(
        self,
        rows: dict[tuple[str, str], dict[str, Any]],
        etags: dict[tuple[str, str], str],
        kind: str,
        key: tuple[str, str],
        entity: dict[str, Any],
        options: Mapping[str, Any],
    ) -> dict[str, Any]:
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        merge = str(getattr(options.get("mode"), "value", options.get("mode")) or "merge").lower() == "merge"
        if kind == "delete":
            rows.pop(key, None)
            return {}
        if kind == "create" and key in rows:
            raise ResourceExistsError("EntityAlreadyExists")
        if kind == "update":
            if key not in rows:
                raise ResourceNotFoundError("ResourceNotFound")
            etag = options.get("etag")
            if options.get("match_condition") is not None and etag is not None and etag != etags.get(key):
                raise ResourceModifiedError("UpdateConditionNotSatisfied")
        if kind in ("update", "upsert") and merge and key in rows:
            entity = {**rows[key], **entity}
        rows[key] = entity
        etags[key] = f"W/\"datetime'{next(self._counter):012d}'\""
        return {"etag": etags[key]}

    def _entity(self, key: tuple[str, str], select: Sequence[str] | None = None) -> Entity:
        values = copy.deepcopy(self._rows[key])
        out = Entity({k: v for k, v in values.items() if select is None or k in select})
        out.metadata = {"etag": self._etags.get(key)}
        return out


def _stored(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The entity as the service keeps it: naive datetimes are UTC, a string property over 64 KiB is refused."""
    out: dict[str, Any] = {}
    for name, value in entity.items():
        if isinstance(value, str) and len(value.encode("utf-16-le")) // 2 > MAX_PROPERTY_UNITS:
            raise _bad_request("PropertyValueTooLarge", f"property {name} is over 64 KiB")
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        out[str(name)] = copy.deepcopy(value)
    return out


def _bad_request(code: str, message: str) -> Exception:
    from azure.core.exceptions import HttpResponseError

    error = HttpResponseError(message=f"{code}: {message}")
    error.status_code = 400
    error.error_code = code  # type: ignore[attr-defined]  # as the SDK sets it on its own errors
    return error


# --- the OData filter subset ---------------------------------------------------------------------------------


def compile_filter(text: str, parameters: Mapping[str, Any]) -> Predicate:
    """`PartitionKey eq @pk and (RowKey lt 'x' or FirstSeen ge datetime'2026-11-20T00:00:00Z')` -> a predicate."""
    tokens = _tokens(text)
    parser = _Parser(tokens, parameters)
    predicate = parser.disjunction()
    if parser.position != len(tokens):
        raise FilterError(f"unexpected {tokens[parser.position][1]!r} in filter {text!r}")
    return predicate


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    position = 0
    while text[position:].strip():
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            raise FilterError(f"cannot read filter {text!r} at {text[position:][:20]!r}")
        out.append((match.lastgroup, match.group(match.lastgroup)))
        position = match.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], parameters: Mapping[str, Any]) -> None:
        self.tokens, self.parameters, self.position = tokens, parameters, 0

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.position] if self.position < len(self.tokens) else ("end", "")

    def _take(self) -> tuple[str, str]:
        token = self._peek()
        if token[0] == "end":
            raise FilterError("the filter ends too early")
        self.position += 1
        return token

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while self._peek() == ("word", "or"):
            self._take()
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda e: any(p(e) for p in parts))

    def conjunction(self) -> Predicate:
        parts = [self.unary()]
        while self._peek() == ("word", "and"):
            self._take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else (lambda e: all(p(e) for p in parts))

    def unary(self) -> Predicate:
        kind, text = self._peek()
        if (kind, text) == ("word", "not"):
            self._take()
            inner = self.unary()
            return lambda e: not inner(e)
        if kind == "lp":
            self._take()
            inner = self.disjunction()
            if self._take()[0] != "rp":
                raise FilterError("a parenthesis is not closed")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        kind, name = self._take()
        if kind != "word":
            raise FilterError(f"expected a property name, found {name!r}")
        operator = self._take()[1]
        if operator not in _COMPARE:
            raise FilterError(f"unknown operator {operator!r}")
        value = self.literal()
        compare = _COMPARE[operator]

        def predicate(entity: Mapping[str, Any]) -> bool:
            if name not in entity:
                return False  # the service matches no entity on a property it lacks
            left = _comparable(entity[name])
            try:
                return compare(left, value) if _same_kind(left, value) else False
            except TypeError:
                return False

        return predicate

    def literal(self) -> Any:
        kind, text = self._take()
        if kind == "param":
            if text[1:] not in self.parameters:
                raise FilterError(f"no value for parameter {text}")
            return _comparable(self.parameters[text[1:]])
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "dt":
            return _comparable(datetime.fromisoformat(text[len("datetime'") : -1].replace("Z", "+00:00")))
        if kind == "num":
            return float(text) if "." in text else int(text.rstrip("L"))
        if text in ("true", "false"):
            return text == "true"
        raise FilterError(f"expected a value, found {text!r}")


def _comparable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return value


def _same_kind(left: Any, right: Any) -> bool:
    """The service compares a property only with a value of its own type (a string with a string, ...)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool)
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return True
    return type(left) is type(right) or (isinstance(left, datetime) and isinstance(right, datetime))

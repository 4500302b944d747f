"""`kqlwatch validate --workspace`: the workspace's own table schemas, so custom tables (`*_CL`) and columns
added to a table validate too. Read-only, through the query API: `T | getschema` for each table the rules
name (one query per table, the real LogsQueryClient with its retries and time limits). A table the workspace
does not have answers 400 with a semantic (or, for a name that is no table, syntax) error in its innererror
code (the service cannot resolve it): it is left out, and the KQL check reports it as a table without a schema,
as offline. Any other refusal is an error naming the table. Offline validation keeps the shipped schemas (shared/schemas)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from datetime import datetime, timedelta, timezone

from shared.errors import KqlwatchError, QueryError

# The query API answers getschema in Kusto type names (ColumnType): the names shared/schemas uses.
_GETSCHEMA = "{table}\n| getschema\n| project ColumnName, ColumnType"


def candidate_tables(queries: Iterable[str]) -> list[str]:
    """Names in the queries that may be tables: a name a pipe follows (`T | where`), a known table, a custom log."""
    from shared.rules.kql import KqlLexError, tokenize
    from shared.schemas import known_tables

    known = set(known_tables())
    found: dict[str, None] = {}
    for query in queries:
        try:
            tokens = tokenize(query)
        except KqlLexError:
            continue  # the KQL check reports it
        for i, token in enumerate(tokens):
            if token.kind != "ident":
                continue
            piped = i + 1 < len(tokens) and tokens[i + 1].text == "|"
            if token.text in known or token.text.endswith("_CL") or piped:
                found[token.text] = None
    return list(found)


def fetch_schemas(tables: Sequence[str]) -> dict[str, dict[str, str]]:
    """table -> {column: Kusto type}, for each of `tables` the workspace has."""
    from shared.runtime.loganalytics import LogsClient, make_credential
    from shared.runtime.settings import load_workspace_settings

    settings = load_workspace_settings()
    client = LogsClient(settings.logs_endpoint, make_credential(settings.access_token))
    end = datetime.now(timezone.utc)
    schemas: dict[str, dict[str, str]] = {}
    try:
        for table in tables:
            try:
                result = client.query(
                    settings.workspace_id, _GETSCHEMA.format(table=table), end - timedelta(days=1), end
                )
            except QueryError as exc:
                if _not_a_table(exc):
                    continue
                raise KqlwatchError(f"--workspace: cannot read the schema of {table}: {exc}") from None
            columns = {str(r["ColumnName"]): str(r["ColumnType"]).lower() for r in result.rows if r.get("ColumnName")}
            if columns:
                schemas[table] = columns
    finally:
        client.close()
    return schemas


def _not_a_table(exc: QueryError) -> bool:
    """The service could not resolve `NAME | getschema`: NAME is no table of this workspace (read from the
    error's fields: its status and the innermost innererror code, SemanticError / SEM0100, SyntaxError / SYN...)."""
    inner = exc.inner_code or ""
    return exc.status == 400 and (inner in ("SemanticError", "SyntaxError") or inner.startswith(("SEM", "SYN")))


_ENABLED: ContextVar[bool] = ContextVar("kqlwatch_validate_workspace", default=False)


def use_workspace(enabled: bool) -> None:
    """`validate --workspace`: the KQL check asks the workspace for the schemas of the tables the rules name."""
    _ENABLED.set(enabled)


def workspace_tables(queries: Sequence[str]) -> dict[str, dict[str, str]]:
    """The workspace's schemas for the queries' tables under `validate --workspace`, else nothing."""
    return fetch_schemas(candidate_tables(queries)) if _ENABLED.get() else {}

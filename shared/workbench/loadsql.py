"""How a data file's columns become an engine table's: which file column fills each table column, and the SQL
that reads the file (DuckDB's own readers) and types each value (CSV and az CLI text, US-style times, JSON text
in dynamic columns, Parquet's own types). Every name and value is quoted by _ident/_sql_str."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

_DUCK_TYPES = {
    "string": "VARCHAR",
    "datetime": "TIMESTAMPTZ",
    "long": "BIGINT",
    "int": "INTEGER",
    "real": "DOUBLE",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "boolean": "BOOLEAN",
    "dynamic": "JSON",
    "guid": "VARCHAR",
    "timespan": "INTERVAL",
    "decimal": "DOUBLE",
}


@dataclass(frozen=True)
class _ColumnPlan:
    columns: dict[str, str]  # name -> Kusto type, in table order
    sources: dict[str, str | None]  # name -> the file's column it is read from (None: absent)
    inferred: tuple[str, ...]
    filled: dict[str, str]


def _plan_columns(
    detected: Mapping[str, str],
    schema: Mapping[str, str] | None,
    *,
    extra_columns: bool,
    ignore: Collection[str],
    fill_from: Mapping[str, str] | None,
    only: frozenset[str] | None = None,
) -> _ColumnPlan:
    """The table's columns (the schema's, then the file's others when kept) and where each is read from.
    `only` (case-folded names, see querycolumns.needed_names) leaves out the columns no query reads; `inferred`
    still names every file column the schema lacks (the note is about the file)."""
    renamed = {raw: _clean_name(raw) for raw in detected if raw not in ignore and _clean_name(raw) not in ignore}
    present = {name: raw for raw, name in renamed.items()}
    columns: dict[str, str] = {}
    inferred: list[str] = []
    if schema is not None:
        columns.update(_unique(schema))
    folded = {c.casefold() for c in columns}
    for raw, name in renamed.items():
        if name.casefold() not in folded and (schema is None or extra_columns):
            folded.add(name.casefold())
            columns[name] = _infer_kind(detected[raw], raw)
            inferred.append(name)
    if only is not None:  # none left (`T | count` of a file without the window columns): load them all
        columns = {c: k for c, k in columns.items() if c.casefold() in only} or columns
    sources = {c: present.get(c) for c in columns}
    filled: dict[str, str] = {}
    for target, source in (fill_from or {}).items():
        if target in columns and sources.get(target) is None and present.get(source) is not None:
            sources[target] = present[source]
            filled[target] = source
    return _ColumnPlan(columns, sources, tuple(inferred), filled)


_EMPTY = "('', 'None', 'null')"  # what exports write for a null non-string value (the az CLI writes None)
# The Logs blade's CSV export writes datetimes in the US locale; ISO forms are cast directly.
_TIME_FORMATS = "['%m/%d/%Y, %I:%M:%S.%g %p', '%m/%d/%Y, %I:%M:%S %p', '%m/%d/%Y, %I:%M:%S.%f %p', '%m/%d/%Y %H:%M:%S']"
_INFERRED_KINDS = {
    "BOOLEAN": "bool",
    "TINYINT": "long",
    "SMALLINT": "long",
    "INTEGER": "long",
    "BIGINT": "long",
    "HUGEINT": "long",
    "UTINYINT": "long",
    "USMALLINT": "long",
    "UINTEGER": "long",
    "FLOAT": "real",
    "DOUBLE": "real",
    "DATE": "datetime",
    "TIMESTAMP": "datetime",
    "TIMESTAMP WITH TIME ZONE": "datetime",
    "TIMESTAMP_NS": "datetime",
    "TIMESTAMP_MS": "datetime",
    "TIMESTAMP_S": "datetime",
    "INTERVAL": "timespan",
    "JSON": "dynamic",
}


def _unique(schema: Mapping[str, str]) -> dict[str, str]:
    """The schema's columns with lower-case type names. DuckDB's names are case-insensitive: of two columns
    differing only in case (CloudAppEvents has ISP and Isp) the first is kept."""
    columns: dict[str, str] = {}
    folded: set[str] = set()
    for name, kind in schema.items():
        if name.casefold() not in folded:
            folded.add(name.casefold())
            columns[name] = kind.lower()
    return columns


def _clean_name(raw: str) -> str:
    return raw[: -len(" [UTC]")] if raw.endswith(" [UTC]") else raw


def _infer_kind(duck_type: str, name: str) -> str:
    if duck_type.startswith(("STRUCT", "MAP")) or duck_type.endswith("]"):
        return "dynamic"
    if duck_type.startswith("DECIMAL"):
        return "real"
    kind = _INFERRED_KINDS.get(duck_type, "string")
    return "datetime" if kind == "string" and name.endswith(" [UTC]") else kind


def reader_sql(
    path: str,
    fmt: str,
    columns: Mapping[str, str],
    sources: Mapping[str, str | None],
    options: Mapping[str, str] | None = None,
) -> str:
    """The table function reading `path` as the load does: read_json/read_csv with every column as text (JSON
    for dynamic ones from JSON), typed by _convert; read_parquet with Parquet's types.
    `options`: read_csv's delim (the header's, engine._csv_options), or its delim, quote and escape as sniffed
    from another file (latecolumns.py); read_json's format."""
    given = dict(options or {})
    if fmt == "csv":
        extra = "".join(f", {option}={_sql_str(value)}" for option, value in given.items())
        return f"read_csv({_sql_str(path)}, header=true, all_varchar=true{extra})"
    if fmt == "parquet":
        return f"read_parquet({_sql_str(path)})"  # typed already: _convert casts only what differs
    wanted: dict[str, str] = {}
    for column, raw in sources.items():
        if raw is not None:
            wanted[raw] = "JSON" if columns[column] == "dynamic" else "VARCHAR"
    spec = "{" + ", ".join(f"{_sql_str(c)}: {_sql_str(t)}" for c, t in wanted.items()) + "}"
    # records='true': a line that is an array, string or number fails the read, naming its line (the
    # default would read such a file as one JSON column, i.e. silently no rows).
    json_format = _sql_str(given.get("format", "auto"))
    return f"read_json({_sql_str(path)}, format={json_format}, records='true', columns={spec})"


def _convert(raw: str | None, kind: str, column: str, fmt: str, file_type: str = "", origin: str = "") -> str:
    """SQL turning the file's text for `column` into its Kusto type (DuckDB type `_DUCK_TYPES[kind]`).
    A Parquet column is typed already (`file_type`): kept when it is the type, else converted as text."""
    duck = _DUCK_TYPES.get(kind, "VARCHAR")
    if raw is None:
        return "''" if duck == "VARCHAR" else f"CAST(NULL AS {duck})"
    r = _ident(raw)
    if fmt == "parquet":
        if _same_type(file_type, duck):
            return f"coalesce({r}, '')" if duck == "VARCHAR" else r
        if duck == "JSON" and file_type != "VARCHAR":
            return f"to_json({r})"
        r = f"CAST({r} AS VARCHAR)"
    if duck == "VARCHAR":
        return f"coalesce({r}, '')"
    if duck == "JSON":
        return _dynamic(r, fmt)
    before, after = _sql_str(f'{origin}column {column}: cannot read "'), _sql_str(f'" as {kind}')
    fail = f"error({before} || left({r}, 80) || {after})"
    return f"CASE WHEN {_blank(r)} THEN NULL ELSE coalesce({_parsed(r, duck)}, {fail}) END"


def _dynamic(r: str, fmt: str) -> str:
    """A dynamic column's value: JSON as it is, JSON text inside a string parsed, other text as a JSON string."""
    if fmt == "json":  # a JSON value; the az CLI writes dynamic values as JSON text inside a string
        text = f"({r} ->> '$')"
        return (
            f"CASE WHEN {r} IS NULL THEN NULL WHEN json_type({r}) <> 'VARCHAR' THEN {r} "
            f"WHEN {text} IN {_EMPTY} THEN NULL "
            f"WHEN left(ltrim({text}), 1) IN ('[', '{{') AND json_valid({text}) THEN json({text}) "
            f"ELSE {r} END"
        )
    return (
        f"CASE WHEN {r} IS NULL OR trim({r}) IN {_EMPTY} THEN NULL "
        f"WHEN json_valid({r}) THEN json({r}) ELSE to_json({r}) END"
    )


def _blank(r: str) -> str:
    """The text exports write for a null non-string value (or none at all)."""
    return f"{r} IS NULL OR trim({r}) IN {_EMPTY}"


def _parsed(r: str, duck: str) -> str:
    """The text `r` as DuckDB type `duck`, NULL when it does not fit (datetimes: ISO, else the Logs blade's forms)."""
    value = f"trim({r})"
    if duck == "TIMESTAMPTZ":
        return (
            f"coalesce(TRY_CAST({value} AS TIMESTAMPTZ), "
            f"TRY_CAST(try_strptime({value}, {_TIME_FORMATS}) AS TIMESTAMPTZ))"
        )
    return f"TRY_CAST({value} AS {duck})"


@dataclass(frozen=True)
class Misfit:
    """How to find a value of `column` that does not fit its type: `bad` is true for such a value (SQL over
    the file's reader, see misfit_checks), `text` the value as text."""

    column: str
    kind: str
    bad: str
    text: str


def misfit_checks(
    columns: Mapping[str, str], sources: Mapping[str, str | None], detected: Mapping[str, str], fmt: str
) -> list[Misfit]:
    """One check per column whose conversion (`_convert`) can fail, in table order: the same test as the
    conversion's, so a row it fails is a row these find."""
    checks: list[Misfit] = []
    for column, kind in columns.items():
        raw, duck = sources.get(column), _DUCK_TYPES.get(kind, "VARCHAR")
        if raw is None or duck in ("VARCHAR", "JSON"):
            continue
        r = _ident(raw)
        if fmt == "parquet":
            if _same_type(detected.get(raw, ""), duck):
                continue
            r = f"CAST({r} AS VARCHAR)"
        checks.append(
            Misfit(column, kind, f"NOT ({_blank(r)}) AND {_parsed(r, duck)} IS NULL", f"CAST({r} AS VARCHAR)")
        )
    return checks


_DELIMITERS = (",", "\t", ";", "|")


def header_delimiter(line: bytes) -> str | None:
    """The delimiter a CSV file's header line is split by (the candidate it holds most often outside quotes),
    or None when it holds none. DuckDB's sniffer otherwise guesses from the rows it samples, and one blank-ish or
    short row among them makes it read a small file as one column: every filter on it then fails quietly."""
    counts = dict.fromkeys(_DELIMITERS, 0)
    quoted = False
    for char in line.decode("utf-8", errors="replace"):
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else None


def _same_type(file_type: str, duck: str) -> bool:
    return file_type == duck or (file_type, duck) in (
        ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"),
        ("INTEGER", "BIGINT"),
    )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def select_sql(
    path: str,
    fmt: str,
    columns: Mapping[str, str],
    sources: Mapping[str, str | None],
    detected: Mapping[str, str],
    origin: str = "",
    options: Mapping[str, str] | None = None,
) -> str:
    """SELECT reading `path` into the table's columns, typed. Every name, path and value in it is quoted by
    _ident/_sql_str: it carries no unquoted input. `origin` starts the message of a value that does not fit
    (a view's: it fails at query time, so it names the file itself). `options`: see reader_sql."""
    select = ", ".join(
        f"{_convert(sources[c], k, c, fmt, detected.get(sources[c] or '', ''), origin)} AS {_ident(c)}"
        for c, k in columns.items()
    )
    return f"SELECT {select} FROM {reader_sql(path, fmt, columns, sources, options)}"  # noqa: S608

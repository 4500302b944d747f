"""KQL -> SQL translations kept on disk, so a repeated `kqlwatch hunt` (or `preview`) skips the translator.

duckdb-kql parses KQL with ANTLR in Python: 0.5-1.5 s for one rule, more than the query itself over a million
Parquet rows, plus ~0.2 s to import it. The SQL depends only on the query text, the tables' columns (joins,
`extend` of an existing column) and the translator, so it is kept under the user's cache folder
(KQLWATCH_CACHE_DIR, else $XDG_CACHE_HOME/kqlwatch, else ~/.cache/kqlwatch) keyed by a hash of exactly those:
the query, every table's columns and types, whether now() is pinned, and which duckdb-kql and duckdb are installed.
Anything else the translation bound (a `declare query_parameters` default, a `set query_now` in the text) is not
cached. The cache is an optimisation only: an unreadable, corrupt or unwritable entry means "translate again",
never an error; errors are never cached, so a broken query reports what the translator says every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

CACHE_ENV = "KQLWATCH_CACHE_DIR"
CLOCK = "kqlnow"  # duckdb_kql.translate.CLOCK_SLOT: the one parameter a pinned now() binds
_FORMAT = 1  # bump when an entry's shape changes
SCHEMA_SQL = (  # what duckdb_kql reads of the tables (engine.schema), and their types
    "SELECT table_catalog, table_name, column_name, data_type, current_database() "
    "FROM information_schema.columns ORDER BY table_catalog, table_name, ordinal_position"
)


@dataclass(frozen=True)
class Translation:
    sql: str
    clock: bool  # the SQL binds $kqlnow (a pinned now())
    duck_types: tuple[str, ...] = ()  # the result's DuckDB types when it was stored ...
    kusto_types: tuple[str, ...] = ()  # ... and their Kusto names (so a hit needs no duckdb_kql import)

    def bound(self, now: datetime | None) -> dict[str, Any]:
        return {CLOCK: naive_utc(now)} if self.clock and now is not None else {}


def naive_utc(moment: datetime) -> datetime:
    """How duckdb_kql binds query_now: UTC without a zone (a naive value is taken as UTC already)."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def default_dir(environ: Mapping[str, str]) -> Path:
    explicit = environ.get(CACHE_ENV, "").strip()
    if explicit:
        return Path(explicit) / "translations"
    base = environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "kqlwatch" / "translations"


def versions() -> str:
    """Which duckdb-kql and duckdb are installed: each package's file and its modification time, found without
    importing either (that costs time) or reading package metadata (importlib.metadata costs ~75 ms at start-up).
    An upgrade or reinstall writes new files, so it changes this and the cache translates again."""
    from importlib.util import find_spec

    found = []
    for name in ("duckdb_kql", "duckdb"):
        try:
            spec = find_spec(name)
            origin = spec.origin if spec is not None else None
            found.append(f"{name}={origin}@{os.stat(origin).st_mtime_ns}" if origin else f"{name}=?")
        except (ImportError, ValueError, OSError):
            found.append(f"{name}=?")
    return ",".join(found)


class TranslationCache:
    """One JSON file per translation, named by its key's hash, written atomically (a crash or a concurrent
    hunt leaves the old entry or the new one, never half of one)."""

    def __init__(self, directory: Path, translator: str | None = None) -> None:
        self.directory = directory
        self._translator = translator if translator is not None else versions()

    @classmethod
    def default(cls) -> TranslationCache:
        return cls(default_dir(os.environ))

    def key(self, kql: str, schema: Sequence[tuple[Any, ...]], *, pinned: bool) -> str:
        return digest([_FORMAT, self._translator, kql, [list(map(str, row)) for row in schema], pinned])

    def get(self, key: str) -> Translation | None:
        try:
            data = json.loads((self.directory / f"{key}.json").read_text(encoding="utf-8"))
            entry = Translation(
                sql=_text(data["sql"]),
                clock=bool(data["clock"]),
                duck_types=tuple(_text(t) for t in data["duck_types"]),
                kusto_types=tuple(_text(t) for t in data["kusto_types"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent, unreadable or not ours: translate again (and overwrite it)
        return entry if len(entry.duck_types) == len(entry.kusto_types) else None

    def put(self, key: str, entry: Translation) -> None:
        record = {
            "sql": entry.sql,
            "clock": entry.clock,
            "duck_types": list(entry.duck_types),
            "kusto_types": list(entry.kusto_types),
        }
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_json(self.directory / f"{key}.json", record, prefix=".entry-")
        except OSError:
            return  # a read-only or full disk: the next hunt translates again


def digest(material: list[Any]) -> str:
    """A cache key: the SHA-256 of the material as JSON (this cache's and the data cache's)."""
    return hashlib.sha256(json.dumps(material, ensure_ascii=True, default=str).encode("ascii")).hexdigest()


def write_json(path: Path, record: Any, *, prefix: str) -> None:
    """`record` written to `path` whole or not at all (a temporary file beside it, renamed into place), so a
    concurrent hunt or a crash never leaves half an entry. Raises OSError (a read-only or full disk)."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(record, out, ensure_ascii=True)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


Translate = Callable[[Any, str, "datetime | None"], tuple[str, dict[str, Any]]]


def run_cached(
    con: Any, cache: TranslationCache, kql: str, now: datetime | None, translate: Translate
) -> tuple[Any, list[str]]:
    """The DuckDB relation of `kql` on `con` and its Kusto column types: the cached SQL when `cache` has this
    query over these tables, else `translate`'s (stored when `storable`). A cached entry that no longer binds
    is translated again: the cache never turns a good query into an error."""
    import duckdb

    key = cache.key(kql, con.execute(SCHEMA_SQL).fetchall(), pinned=now is not None)
    entry = cache.get(key)
    if entry is not None:
        try:
            relation = con.sql(entry.sql, params=entry.bound(now)) if entry.clock else con.sql(entry.sql)
        except duckdb.Error:
            relation = None
        if relation is not None:
            duck = tuple(str(t) for t in relation.types)
            return relation, list(entry.kusto_types) if duck == entry.duck_types else kusto_types(relation.types)
    sql, bound = translate(con, kql, now)
    relation = con.sql(sql, params=dict(bound)) if bound else con.sql(sql)
    types = kusto_types(relation.types)
    clock = storable(bound, now)
    if clock is not None:
        cache.put(key, Translation(sql, clock, tuple(str(t) for t in relation.types), tuple(types)))
    return relation, types


def kusto_types(types: Iterable[Any]) -> list[str]:
    """DuckDB types as Kusto names them (duckdb_kql's mapping: importing it imports the translator)."""
    from duckdb_kql.types import kusto_type

    return [kusto_type(t) for t in types]


def storable(bound: Mapping[str, Any], now: datetime | None) -> bool | None:
    """Whether a fresh translation's bound values are only the pinned clock we passed (then the entry's
    `clock`), or None: it bound something else (a declared parameter's default, a `set query_now`)."""
    if not bound:
        return False
    if set(bound) != {CLOCK} or now is None or bound[CLOCK] != naive_utc(now):
        return None
    return True


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not text")
    return value

"""Typed Parquet copies of JSON-lines and CSV exports, so a repeated `kqlwatch hunt` over one file skips parsing it.

DuckDB parses a 1 GB JSON-lines export and types its columns in 5-8 s on two cores, every hunt; the same rows as
typed Parquet are read in a fraction of a second (only the columns and row groups the query needs). The first
hunt of a file writes the copy under the cache folder (KQLWATCH_CACHE_DIR/data, beside the translations); every
value is converted and checked then, as a load always did, so a bad value fails that hunt naming its line.

An entry is keyed by the file (resolved path, size, modification and change times, inode, a digest of its first
and last 64 KiB: an edited, replaced or touched file is a new entry) and by how it is loaded (the table, its
schema, the columns the query reads, the loader's options, the text of the SQL that types the values (loadsql.py),
this format's version and the installed duckdb). Writing a new version of a file's copy removes the older
versions of that file's copies. The cache is an optimisation only: an unreadable or half-written entry is a miss,
an unwritable folder means loading as before, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shared.workbench.engine import LoadedTable
from shared.workbench.latecolumns import Late
from shared.workbench.translation import default_dir, digest, versions, write_json

_FORMAT = 1  # bump when an entry's shape or the typed copy's SQL changes


@dataclass(frozen=True)
class Entry:
    parquet: Path
    meta: Path  # the LoadedTable the copy was made with (notes and warnings read it)
    family: str  # the file's part of the name: other versions of it are removed when this one is written


class DataCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def default(cls) -> DataCache:
        return cls(default_dir(os.environ).parent / "data")

    def entry(self, path: Path, table: str, how: Mapping[str, Any]) -> Entry | None:
        """This file's entry for loading it as `table` this way (`how`: schema, columns, options), or None when
        the file cannot be stat'ed (the loader reports that)."""
        try:
            stat = path.stat()
            resolved = str(path.resolve())
            ends = _ends(path, stat.st_size)
        except OSError:
            return None
        family = digest([resolved])[:16]
        stamp = digest([resolved, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, ends])[:16]
        loading = digest([_FORMAT, versions(), _loader(), table, _plain(how)])[:24]
        name = f"{family}-{stamp}-{loading}"
        return Entry(self.directory / f"{name}.parquet", self.directory / f"{name}.json", family)

    def get(self, entry: Entry) -> LoadedTable | None:
        try:
            data = json.loads(entry.meta.read_text(encoding="utf-8"))
            table = LoadedTable(
                name=str(data["name"]),
                rows=int(data["rows"]),
                columns={str(k): str(v) for k, v in dict(data["columns"]).items()},
                inferred=tuple(map(str, data["inferred"])),
                missing=tuple(map(str, data["missing"])),
                filled={str(k): str(v) for k, v in dict(data["filled"]).items()},
                late=Late.from_json(data["late"]) if data.get("late") else None,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return table if entry.parquet.is_file() else None

    def writable(self) -> bool:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.directory, os.W_OK | os.X_OK)

    def put(self, entry: Entry, table: LoadedTable) -> None:
        """Record the copy (already renamed into place by the engine), then remove older versions of the file's."""
        try:
            late = table.late.to_json() if table.late else None
            write_json(entry.meta, {**asdict(table), "late": late}, prefix=".meta-")
        except OSError:
            return  # a full disk: the next hunt writes the copy again
        stamp = entry.parquet.name.split("-")[1]
        for old in self.directory.glob(f"{entry.family}-*"):
            if old.name.split("-")[1] != stamp:
                with contextlib.suppress(OSError):
                    old.unlink()


def _plain(value: Any) -> Any:
    """`how` as JSON: mappings keep their order (a schema's column order is the table's), sets are sorted."""
    if isinstance(value, Mapping):
        return [[str(k), _plain(v)] for k, v in value.items()]
    if isinstance(value, (set, frozenset)):
        return sorted(map(str, value))
    if isinstance(value, Collection) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


def _loader() -> str:
    """The SQL that types the copy (loadsql.py): a kqlwatch that converts values otherwise makes new copies."""
    from shared.workbench import loadsql

    try:
        return hashlib.sha256(Path(loadsql.__file__).read_bytes()).hexdigest()
    except OSError:
        return "?"


def _ends(path: Path, size: int) -> str:
    """A digest of the file's first and last 64 KiB: an edit within the file system's time granularity (a
    few ms) that keeps the size still changes the key when it touches either end."""
    with path.open("rb") as handle:
        head = handle.read(1 << 16)
        handle.seek(max(0, size - (1 << 16)))
        tail = handle.read(1 << 16)
    return hashlib.sha256(head + b"\0" + tail).hexdigest()

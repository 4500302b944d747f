"""What makes `kqlwatch hunt` of a million rows fast, and what must not change with it: the on-disk translation
cache (a repeated hunt skips the KQL translator; a changed query, table or translator version does not), a
Parquet file read by the query itself (a view: no copy), and the JSON-lines writer."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import duckdb_kql.engine
import pytest

from shared.workbench import translation
from shared.workbench.cli import main
from shared.workbench.demo import SAMPLES
from shared.workbench.engine import Engine, EngineResult
from shared.workbench.output import as_json, write_jsonl
from tests.conftest import SEED_RULE
from tests.workbench.test_hunt import jsonl_rows, rule_file
from tests.workbench.test_hunt import write_jsonl as write_rows


@pytest.fixture
def translations(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The queries duckdb-kql is asked to translate (its `_prepare`, which `duckdb_kql.kql` calls too)."""
    asked: list[str] = []
    real = duckdb_kql.engine._prepare

    def counting(con: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(query)
        return real(con, query, *args, **kwargs)

    monkeypatch.setattr(duckdb_kql.engine, "_prepare", counting)
    yield asked


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- the translation cache -----------------------------------------------------------------------------------


def test_a_repeated_hunt_does_not_translate_the_query_again(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, translations: list[str]
) -> None:
    argv = ("hunt", str(SEED_RULE), "--data", f"EmailEvents={SAMPLES}", "--format", "jsonl")
    first = run_cli(capsys, *argv)
    assert first[0] == 0, first[2]
    assert len(translations) == 1
    second = run_cli(capsys, *argv)
    assert second[0] == 0, second[2]
    assert len(translations) == 1, "the second hunt translated the query again"
    assert second[1] == first[1] and len(jsonl_rows(second[1])) == 46  # samples/README.md
    assert len(list((cache_dir / "translations").glob("*.json"))) == 1


def test_a_changed_query_is_translated_again(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path, translations: list[str]
) -> None:
    argv = ("hunt", str(SEED_RULE), "--data", f"EmailEvents={SAMPLES}", "--format", "jsonl")
    assert run_cli(capsys, *argv)[0] == 0
    code, out, err = run_cli(capsys, *argv, "--param", "SenderDomains=dynamic(['nowhere.example'])")
    assert code == 0, err
    assert len(translations) == 2 and "nowhere.example" in translations[1]
    assert jsonl_rows(out) == []  # the new query's answer, not the cached one's 46 rows
    code, out, err = run_cli(capsys, *argv)
    assert len(translations) == 2 and len(jsonl_rows(out)) == 46  # the first query is still cached


def test_a_changed_table_is_translated_again(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path, translations: list[str]
) -> None:
    """The SQL depends on the tables' columns (an `extend` of an existing column keeps its place, a join
    lists both sides): a file with other columns under the same query is a new translation."""
    rule = rule_file(tmp_path, "Custom_CL | extend a = a * 10")
    first = tmp_path / "one" / "Custom_CL.jsonl"
    second = tmp_path / "two" / "Custom_CL.jsonl"
    first.parent.mkdir()
    second.parent.mkdir()
    write_rows(first, [{"a": 1, "b": "x"}])
    write_rows(second, [{"a": 2, "c": True, "d": "y"}])
    code, out, err = run_cli(capsys, "hunt", str(rule), "--data", str(first), "--format", "jsonl")
    assert code == 0, err
    assert jsonl_rows(out) == [{"a": 10, "b": "x"}]
    code, out, err = run_cli(capsys, "hunt", str(rule), "--data", str(second), "--format", "jsonl")
    assert code == 0, err
    assert jsonl_rows(out) == [{"a": 20, "c": True, "d": "y"}]
    assert len(translations) == 2


def test_another_translator_version_is_translated_again(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, translations: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ("hunt", str(SEED_RULE), "--data", f"EmailEvents={SAMPLES}", "--format", "jsonl")
    assert run_cli(capsys, *argv)[0] == 0
    monkeypatch.setattr(translation, "versions", lambda: "duckdb-kql=99.0.0,duckdb=99.0.0")
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and len(jsonl_rows(out)) == 46
    assert len(translations) == 2


def test_a_corrupt_or_unwritable_cache_only_costs_a_translation(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    cache_dir: Path,
    translations: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = ("hunt", str(SEED_RULE), "--data", f"EmailEvents={SAMPLES}", "--format", "jsonl")
    assert run_cli(capsys, *argv)[0] == 0
    (entry,) = (cache_dir / "translations").glob("*.json")
    for damage in ("{not json", json.dumps({"sql": 42, "clock": False}), ""):
        entry.write_text(damage, encoding="utf-8")
        code, out, err = run_cli(capsys, *argv)
        assert code == 0 and len(jsonl_rows(out)) == 46, err
        assert "Traceback" not in err
    assert len(translations) == 4
    assert json.loads(entry.read_text(encoding="utf-8"))["sql"].startswith(("SELECT", "WITH"))  # rewritten whole
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("", encoding="utf-8")
    monkeypatch.setenv("KQLWATCH_CACHE_DIR", str(blocked))  # a file where the folder would be
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and len(jsonl_rows(out)) == 46, err


def test_a_broken_query_reports_its_error_every_time(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path
) -> None:
    rule = rule_file(tmp_path, "EmailEvents | where ipv4_is_in_range(SenderIPv4, '10.0.0.0/8')")
    for _ in range(2):
        code, out, err = run_cli(capsys, "hunt", str(rule), "--data", f"EmailEvents={SAMPLES}")
        assert code == 1 and "does not support" in err and "ipv4_is_in_range" in err
        assert out == "" and "Traceback" not in err
    assert not list((cache_dir / "translations").glob("*.json"))


def test_a_pinned_now_is_bound_not_cached(capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path) -> None:
    """`--now` moves ago(): the cached SQL binds the clock, so another --now gives its own answer."""
    rule = rule_file(tmp_path, "EmailEvents | where TimeGenerated > ago(1h) | count")
    counts = []
    for now in ("2026-11-20T09:00:00Z", "2026-11-21T09:00:00Z", "2026-11-20T09:00:00Z"):
        code, out, err = run_cli(
            capsys, "hunt", str(rule), "--data", f"EmailEvents={SAMPLES}", "--now", now, "--format", "jsonl"
        )
        assert code == 0, err
        counts.append(jsonl_rows(out)[0]["Count"])
    assert counts[0] == counts[2] and counts[1] == 0 and counts[0] > 0


def test_a_query_with_its_own_bound_values_is_not_cached(tmp_path: Path) -> None:
    """A `set query_now` in the text binds a clock we did not pass: storing it would bind ours instead."""
    cache = translation.TranslationCache(tmp_path)
    with Engine(cache) as engine:
        engine.sql("CREATE TABLE T AS SELECT TIMESTAMPTZ '2026-11-20 08:00:00+00' AS t")
        query = "set query_now = datetime(2026-11-20T08:30:00Z); T | where t > ago(1h) | count"
        now = datetime(2030, 1, 1, tzinfo=timezone.utc)
        for _ in range(2):
            assert engine.query(query, now=now).rows == [(1,)]
    assert not list(tmp_path.glob("*.json"))


# --- Parquet read by the query (a view) ------------------------------------------------------------------------


def _parquet(tmp_path: Path, select: str = "*") -> Path:
    path = tmp_path / "EmailEvents.parquet"
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"COPY (SELECT {select} FROM read_json('{SAMPLES}')) TO '{path}' (FORMAT PARQUET)")  # noqa: S608
    return path


def test_hunt_reads_a_parquet_file_in_place(tmp_path: Path) -> None:
    """No copy of a million rows in memory: the table is a view over the file (the query reads only the
    columns it needs); a JSON-lines file is still loaded (its text is parsed once either way)."""
    from shared.workbench.datafiles import DataSpec, load_files

    parquet = _parquet(tmp_path)
    with Engine() as engine:
        (loaded,) = load_files(engine, [DataSpec("EmailEvents", parquet)], "EmailEvents | take 1", lazy=True)
        assert loaded.table.rows == 2579
        views = engine.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal")
        tables = engine.sql("SELECT table_name FROM duckdb_tables()")
        assert ("EmailEvents",) in views and ("EmailEvents",) not in tables
        load_files(engine, [DataSpec("EmailEvents", SAMPLES)], "EmailEvents | take 1", lazy=True)
        assert ("EmailEvents",) in engine.sql("SELECT table_name FROM duckdb_tables()")
        assert ("EmailEvents",) not in engine.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal")


def test_a_parquet_value_that_does_not_fit_fails_naming_the_file_and_column(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    parquet = _parquet(tmp_path, "* REPLACE ('lots' AS BulkComplaintLevel)")
    rule = rule_file(tmp_path, "EmailEvents | where BulkComplaintLevel > 5")
    code, out, err = run_cli(capsys, "hunt", str(rule), "--data", f"EmailEvents={parquet}")
    assert code == 1 and out == ""
    assert f"cannot load {parquet} as EmailEvents: " in err
    assert 'column BulkComplaintLevel: cannot read "lots" as int' in err
    assert "Traceback" not in err and "query failed" not in err


# --- JSON lines out ----------------------------------------------------------------------------------------------


def test_jsonl_output_is_as_json_of_every_cell() -> None:
    """The writer picks each column's conversion once: the same text as converting cell by cell."""
    when = datetime(2026, 11, 20, 8, 15, 2, 123456, tzinfo=timezone.utc)
    result = EngineResult(
        columns=["s", "n", "t", "d", "bag", "b", "x"],
        types=["string", "long", "datetime", "timespan", "dynamic", "bool", "guid"],
        rows=[
            ("é\u202e", 5, when, timedelta(hours=1, microseconds=5), '{"a":[1]}', True, "0-1"),
            (None, None, None, None, None, None, None),
            ("", -1, when, timedelta(days=-2), "not json", False, ""),
            ("", -1, when, timedelta(days=-2), '{"a":[1]}', False, ""),
        ],
    )
    out = io.StringIO()
    write_jsonl(result, [6, 0, 2, 4, 3], out)
    expected = [
        json.dumps({result.columns[i]: as_json(row[i], result.types[i]) for i in (6, 0, 2, 4, 3)}, ensure_ascii=True)
        for row in result.rows
    ]
    assert out.getvalue() == "\n".join(expected) + "\n"
    assert out.getvalue().isascii()


def test_the_engine_prints_no_progress_bar_into_the_output(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """DuckDB draws a progress bar on stdout during any statement over `progress_bar_time` (2 s): a million-row
    load did, in the middle of `hunt --format jsonl` output. Here the threshold is 0 so a short load shows it."""
    parquet = _parquet(tmp_path)
    with Engine() as engine:
        engine.sql("SET progress_bar_time = 0")
        engine.load_file("EmailEvents", str(parquet), lazy=False)
        engine.sql("SELECT count(*) FROM range(20000000) t(i) WHERE i % 7 = 3")
    out, _ = capfd.readouterr()
    assert out == ""


# --- JSON lines in: the `null`-line search -------------------------------------------------------------------


@pytest.mark.parametrize("line", ["null", "  null\t\r", "null "])
def test_a_null_line_among_null_values_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path, line: str) -> None:
    """The file is searched for the bytes `null`, block by block: values that are null (`"X":null`,
    `"X": null`, a string "null") never count, a line that is only `null` does, wherever it is."""
    rows = [json.loads(text) for text in SAMPLES.read_text(encoding="utf-8").splitlines()[:6]]
    records = [json.dumps({**row, "Subject": None, "Connectors": "null"}) for row in rows]
    records[1] = records[1].replace('"Subject": null', '"Subject":null')
    clean = tmp_path / "EmailEvents.jsonl"
    clean.write_text("\n".join(records) + "\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "hunt", str(SEED_RULE), "--data", f"EmailEvents={clean}", "--format", "jsonl")
    assert code == 0, err
    broken = tmp_path / "broken" / "EmailEvents.jsonl"
    broken.parent.mkdir()
    broken.write_text("\n".join([*records[:4], line, *records[4:]]), encoding="utf-8")  # no final newline
    code, out, err = run_cli(capsys, "hunt", str(SEED_RULE), "--data", f"EmailEvents={broken}")
    assert code != 0 and out == ""
    assert f"{broken}:5:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (b'{"a":1}\nnull\n', True),
        (b"  null \r\n{}", True),
        (b'{"a":1}\n{"b":2}\nnull', True),
        (b'{"a":null}\n{"b": null}\n{"c":"null"}\n', False),
        (b'{"a": null} null\n', False),
        (b"{}\n nullx\n{}\nnull,\n", False),
    ],
)
def test_the_null_line_search_is_right_wherever_a_block_ends(data: bytes, found: bool) -> None:
    """A `null` line cut by the boundary between two 16 MiB blocks is put together: every cut point here."""
    from shared.workbench.datafiles import _has_null_line

    for cut in range(1, len(data) + 1):
        assert _has_null_line(data[:cut], io.BytesIO(data[cut:])) is found, (data, cut)

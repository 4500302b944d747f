"""A hunt whose query returns columns it never names (the seed rule's bare `where` returns all of EmailEvents)
types only the named columns of a JSON-lines or CSV export and reads the others for the returned rows only
(shared/workbench/latecolumns.py). What a user must see: the same rows and values as a whole load, errors that
still name the file's line, and a whole load whenever the file's records are not one a line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.workbench import records
from shared.workbench.datafiles import load_files, parse_data_arg
from shared.workbench.demo import SAMPLES
from shared.workbench.engine import Engine, EngineResult
from shared.workbench.latecolumns import ROW_PREFIX, Late, fill
from tests.conftest import SEED_RULE
from tests.workbench.test_hunt import jsonl_rows, rule_file, write_csv
from tests.workbench.test_hunt import write_jsonl as write_rows
from tests.workbench.test_hunt_datacache import hunt, sample_rows

QUERY = (
    "EmailEvents | where EmailDirection == 'Inbound' and SenderMailFromDomain =~ 'contoso.com' "
    "| extend Seen = strcat(NetworkMessageId, '/', RecipientEmailAddress)"
)


def run(tmp_path: Path, data: Path, query: str, *, late: bool) -> tuple[EngineResult, Any]:
    """The query over `data`, loaded late or whole (hunt's own path, without the CLI)."""
    with Engine() as engine:
        (loaded,) = load_files(engine, [parse_data_arg(f"EmailEvents={data}")], query, prune=True, lazy=True, late=late)
        return engine.query(query), loaded.table.late


def rows_of(n: int, **changes: Any) -> list[dict[str, Any]]:
    rows = sample_rows(n)
    for index, row in enumerate(rows):
        row["EmailDirection"], row["SenderMailFromDomain"] = "Inbound", "contoso.com" if index % 3 else "fabrikam.fr"
    for where, values in changes.items():
        rows[int(where.removeprefix("row"))].update(values)
    return rows


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_query_returning_every_column_gets_the_same_rows_and_values_as_a_whole_load(
    tmp_path: Path, cache_dir: Path, fmt: str
) -> None:
    rows = rows_of(60)
    data = tmp_path / f"EmailEvents.{fmt}"
    write_rows(data, rows) if fmt == "jsonl" else write_csv(data, rows)
    late, info = run(tmp_path, data, QUERY, late=True)
    whole, none = run(tmp_path, data, QUERY, late=False)
    assert info is not None and none is None, "the late path was not taken"
    assert "Subject" in info.columns and "EmailDirection" not in info.columns
    assert late.columns == whole.columns and not any(c.startswith(ROW_PREFIX) for c in late.columns)
    assert late.types == whole.types
    assert late.rows == whole.rows
    assert len(late.rows) == 40
    subjects = {r[late.columns.index("Subject")] for r in late.rows}
    assert subjects == {rows[i]["Subject"] for i in range(60) if i % 3}


def test_the_seed_rule_s_hunt_of_the_sample_day_prints_the_same_bytes_as_a_whole_load(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "EmailEvents.jsonl"
    data.write_bytes(SAMPLES.read_bytes())
    code, out, err = hunt(capsys, SEED_RULE, data)
    assert code == 0, err
    again = hunt(capsys, SEED_RULE, data)  # from the cached copy of the named columns
    assert again[1] == out
    (meta,) = (cache_dir / "data").glob("*.json")
    assert json.loads(meta.read_text())["late"]["columns"], "the copy holds every column"
    monkeypatch.setattr("shared.workbench.querycolumns.named_names", lambda query: None)
    monkeypatch.setenv("KQLWATCH_CACHE_DIR", str(tmp_path / "other"))
    whole = hunt(capsys, SEED_RULE, data)
    assert whole[0] == 0 and whole[1] == out
    (whole_meta,) = (tmp_path / "other" / "data").glob("*.json")
    assert json.loads(whole_meta.read_text())["late"] is None
    rows = jsonl_rows(out)
    assert len(rows) == 46  # samples/README.md
    assert all(row["Subject"] and row["NetworkMessageId"] for row in rows)  # both read late


def test_a_repeated_hunt_from_another_folder_reads_the_late_columns_from_the_file_it_was_given(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_rows(tmp_path / "EmailEvents.jsonl", rows_of(30))
    rule = rule_file(tmp_path, QUERY)
    monkeypatch.chdir(tmp_path)
    first = hunt(capsys, rule, Path("EmailEvents.jsonl"))
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    second = hunt(capsys, rule, Path("../EmailEvents.jsonl"))
    assert first[0] == second[0] == 0, second[2]
    assert second[1] == first[1] and len(jsonl_rows(first[1])) == 20
    assert data.is_file()


def test_a_value_that_does_not_fit_in_a_returned_row_names_its_line_in_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path
) -> None:
    data = write_rows(tmp_path / "EmailEvents.jsonl", rows_of(30, row7={"BulkComplaintLevel": "high"}))
    code, _, err = hunt(capsys, rule_file(tmp_path, QUERY), data)
    assert code == 1
    assert f"{data}" in err and 'line 8: column BulkComplaintLevel: cannot read "high" as int' in err, err
    assert "Traceback" not in err


def test_a_value_that_does_not_fit_in_a_named_column_fails_even_in_a_row_the_query_drops(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path
) -> None:
    rows = rows_of(30, row3={"EmailDirection": "Outbound", "Timestamp": "yesterday-ish"})
    data = write_rows(tmp_path / "EmailEvents.jsonl", rows)
    code, _, err = hunt(capsys, rule_file(tmp_path, QUERY), data)
    assert code == 1
    assert 'line 4: column Timestamp: cannot read "yesterday-ish" as datetime' in err, err


def test_a_value_that_does_not_fit_only_in_an_unnamed_column_of_a_dropped_row_does_not_change_the_answer(
    tmp_path: Path, cache_dir: Path
) -> None:
    rows = rows_of(30, row4={"EmailDirection": "Outbound", "BulkComplaintLevel": "high"})
    data = write_rows(tmp_path / "EmailEvents.jsonl", rows)
    result, info = run(tmp_path, data, QUERY, late=True)
    assert info is not None
    assert len(result.rows) == 19  # row 4 is outbound: the query drops it, and its late columns are not read


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_blank_lines_at_the_end_of_a_file_keep_the_late_path(tmp_path: Path, cache_dir: Path, fmt: str) -> None:
    rows = rows_of(30)
    data = tmp_path / f"EmailEvents.{fmt}"
    write_rows(data, rows) if fmt == "jsonl" else write_csv(data, rows)
    with data.open("a", encoding="utf-8") as out:
        out.write("\n  \n\t\n" if fmt == "jsonl" else "\r\n\r\n")  # write_csv ends lines in CRLF
    late, info = run(tmp_path, data, QUERY, late=True)
    whole, _ = run(tmp_path, data, QUERY, late=False)
    assert info is not None and info.lines.blank_tail == (3 if fmt == "jsonl" else 2)
    assert late == whole and len(late.rows) == 20


@pytest.mark.parametrize("damage", ["blank lines", "two records on a line", "a CSV value over two lines"])
def test_a_file_whose_records_are_not_one_a_line_is_loaded_whole_with_the_same_answer(
    tmp_path: Path, cache_dir: Path, damage: str
) -> None:
    rows = rows_of(30)
    if damage.startswith("a CSV"):
        rows[5]["Subject"] = "a subject\nover two lines"  # quoted
        data = write_csv(tmp_path / "EmailEvents.csv", rows)
    else:
        data = write_rows(tmp_path / "EmailEvents.jsonl", rows)
        text = data.read_text(encoding="utf-8")
        blank = damage == "blank lines"
        data.write_text(text.replace("\n", "\n\n", 3) if blank else text.replace("}\n{", "} {", 1), encoding="utf-8")
    late, info = run(tmp_path, data, QUERY, late=True)
    whole, _ = run(tmp_path, data, QUERY, late=False)
    assert info is None, "the records were taken for lines"
    assert late == whole and len(late.rows) == 20


def test_a_null_line_still_fails_naming_its_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path
) -> None:
    data = write_rows(tmp_path / "EmailEvents.jsonl", rows_of(30))
    lines = data.read_text(encoding="utf-8").splitlines()
    data.write_text("\n".join([*lines[:12], "null", *lines[12:]]) + "\n", encoding="utf-8")
    code, _, err = hunt(capsys, rule_file(tmp_path, QUERY), data)
    assert code == 2 and f"{data}:13" in err, err


def test_a_null_line_in_a_file_loaded_whole_after_all_still_fails_naming_its_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path
) -> None:
    data = write_rows(tmp_path / "EmailEvents.jsonl", rows_of(30))
    lines = data.read_text(encoding="utf-8").splitlines()
    data.write_text("\n".join([*lines[:3], "", *lines[3:12], "null", *lines[12:]]) + "\n", encoding="utf-8")
    code, _, err = hunt(capsys, rule_file(tmp_path, QUERY), data)  # the blank line: not one record a line
    assert code == 2 and f"{data}:14" in err, err


def test_mv_expand_fills_each_copy_of_a_row(tmp_path: Path, cache_dir: Path) -> None:
    rows = rows_of(9, row1={"To": ["a@contoso.com", "b@contoso.com", "c@contoso.com"], "Subject": "three"})
    data = write_rows(tmp_path / "EmailEvents.jsonl", rows)
    query = QUERY + " | mv-expand To to typeof(string)"
    late, info = run(tmp_path, data, query, late=True)
    whole, _ = run(tmp_path, data, query, late=False)
    assert info is not None and late == whole
    subject = late.columns.index("Subject")
    assert [r[subject] for r in late.rows].count("three") == 3


def test_a_result_holding_a_late_column_without_its_row_number_cannot_be_filled() -> None:
    late = Late("T", "/nowhere", "json", {"Subject": "string"}, {"Subject": "Subject"}, {}, _no_lines())
    assert fill(None, "/tmp", ["Subject", "n"], ["string", "long"], [(None, 1)], [late]) is None
    # Without the placeholder either (`summarize`-like): nothing to read, the result as it is.
    assert fill(None, "/tmp", ["n"], ["long"], [(1,)], [late]) == (["n"], ["long"], [(1,)])


def _no_lines() -> records.Lines:
    return records.index(Path(__file__).parent / "__init__.py")


@pytest.mark.parametrize("ending", [b"\n", b"", b"\r\n"])
def test_the_line_index_finds_every_line_wherever_blocks_and_stretches_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: bytes
) -> None:
    lines = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i * 7 % 23)) for i in range(40)]
    path = tmp_path / "f.jsonl"
    path.write_bytes(ending.join(lines) + ending if ending else b"\n".join(lines))
    for block in (7, 16, 64, 1 << 24):
        for stretch in (1, 20, 100):
            monkeypatch.setattr(records, "_BLOCK", block)
            monkeypatch.setattr(records, "_STRETCH", stretch)
            found = records.index(path)
            assert found.count == 40, (block, stretch)
            got = records.lines_at(path, found, range(0, 45, 3))  # 42: past the end, not there
            expected = {i: lines[i] + (b"\r" if ending == b"\r\n" else b"") for i in range(0, 40, 3)}
            assert got == expected, (block, stretch)
            again = records.Lines.from_json(json.loads(json.dumps(found.to_json())))
            assert records.lines_at(path, again, [39, 0]) == {0: expected[0], 39: expected[39]}

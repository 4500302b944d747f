"""A repeated `kqlwatch hunt` over one JSON-lines or CSV export reads its typed Parquet copy (shared/workbench/
datacache.py), and what must not change with it: an edited file is read again, a bad value still fails naming the
file, its line and its column (now the line too), and a cache that cannot be written only costs time."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from shared.workbench.cli import main
from shared.workbench.demo import SAMPLES
from shared.workbench.engine import Engine
from tests.conftest import SEED_RULE
from tests.workbench.test_hunt import jsonl_rows, rule_file, write_csv
from tests.workbench.test_hunt import write_jsonl as write_rows


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The data files the engine parses (Engine.load_file); a hit on the cache parses none."""
    seen: list[str] = []
    real = Engine.load_file

    def counting(self: Engine, table: str, path: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(path)
        return real(self, table, path, *args, **kwargs)

    monkeypatch.setattr(Engine, "load_file", counting)
    return seen


def hunt(capsys: pytest.CaptureFixture[str], rule: Path, data: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["hunt", str(rule), "--data", f"EmailEvents={data}", "--format", "jsonl", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def sample_rows(count: int | None = None) -> list[dict[str, Any]]:
    lines = SAMPLES.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:count] if line.strip()]


# --- the cache -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_repeated_hunt_reads_the_typed_copy_not_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path, parsed: list[str], fmt: str
) -> None:
    data = tmp_path / f"EmailEvents.{fmt}"
    if fmt == "jsonl":
        data.write_bytes(SAMPLES.read_bytes())
    else:
        write_csv(data, sample_rows())
    first = hunt(capsys, SEED_RULE, data)
    assert first[0] == 0, first[2]
    assert len(jsonl_rows(first[1])) == 46  # samples/README.md
    assert parsed == [str(data)]
    (copy,) = (cache_dir / "data").glob("*.parquet")
    second = hunt(capsys, SEED_RULE, data)
    assert second[0] == 0, second[2]
    assert parsed == [str(data)], "the second hunt parsed the file again"
    assert second[1] == first[1]
    assert "EmailEvents 2,579 rows" in second[2]  # the row count comes with the copy
    assert list((cache_dir / "data").glob("*.parquet")) == [copy]


def test_an_edited_file_is_read_again_and_its_old_copy_removed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path, parsed: list[str]
) -> None:
    rule = rule_file(tmp_path, "EmailEvents | summarize n = count() by EmailDirection | sort by EmailDirection asc")
    data = write_rows(tmp_path / "EmailEvents.jsonl", [{"EmailDirection": "Inbound"}, {"EmailDirection": "Outbound"}])
    code, out, err = hunt(capsys, rule, data)
    assert code == 0, err
    assert jsonl_rows(out) == [{"EmailDirection": "Inbound", "n": 1}, {"EmailDirection": "Outbound", "n": 1}]
    # The same size and the same modification time (an edit inside the file system's time granularity).
    stat = data.stat()
    data.write_text(data.read_text(encoding="utf-8").replace("Outbound", "Inbound!"), encoding="utf-8")
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    code, out, err = hunt(capsys, rule, data)
    assert code == 0, err
    assert jsonl_rows(out) == [{"EmailDirection": "Inbound", "n": 1}, {"EmailDirection": "Inbound!", "n": 1}]
    with data.open("a", encoding="utf-8") as more:
        more.write(json.dumps({"EmailDirection": "Inbound"}) + "\n")
    code, out, err = hunt(capsys, rule, data)
    assert jsonl_rows(out)[0] == {"EmailDirection": "Inbound", "n": 2}
    assert parsed == [str(data)] * 3
    assert len(list((cache_dir / "data").glob("*.parquet"))) == 1  # the older versions' copies are gone
    assert len(list((cache_dir / "data").glob("*.json"))) == 1


def test_another_rule_or_schema_is_another_copy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path, parsed: list[str]
) -> None:
    """The copy holds the columns the rule reads: a rule reading others makes its own; both are kept."""
    data = tmp_path / "EmailEvents.jsonl"
    data.write_bytes(SAMPLES.read_bytes())
    narrow = rule_file(tmp_path, "EmailEvents | summarize n = count() by EmailDirection", "narrow.yaml")
    for rule in (SEED_RULE, narrow, SEED_RULE, narrow):
        code, _, err = hunt(capsys, rule, data)
        assert code == 0, err
    assert parsed == [str(data)] * 2
    assert len(list((cache_dir / "data").glob("*.parquet"))) == 2


def test_another_loader_or_duckdb_makes_a_new_copy(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    cache_dir: Path,
    parsed: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The copy holds values as this kqlwatch's SQL typed them with this duckdb: either changing is a miss."""
    from shared.workbench import datacache

    data = tmp_path / "EmailEvents.jsonl"
    data.write_bytes(SAMPLES.read_bytes())
    assert hunt(capsys, SEED_RULE, data)[0] == 0
    monkeypatch.setattr(datacache, "versions", lambda: "duckdb-kql=99,duckdb=99")
    assert hunt(capsys, SEED_RULE, data)[0] == 0
    monkeypatch.setattr(datacache, "_loader", lambda: "another loadsql.py")
    code, out, err = hunt(capsys, SEED_RULE, data)
    assert code == 0 and len(jsonl_rows(out)) == 46, err
    assert parsed == [str(data)] * 3


def test_notes_and_warnings_are_the_same_from_the_copy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path
) -> None:
    """An Advanced Hunting export: no TimeGenerated (filled from Timestamp), a column the schema lacks, and
    none of the columns the rule reads: the hit on the copy says so as the first load did."""
    rows = [{"Timestamp": "2026-11-20T08:00:00Z", "Extra": 5, "NetworkMessageId": "x"}]
    data = write_rows(tmp_path / "EmailEvents.jsonl", rows)
    first = hunt(capsys, SEED_RULE, data)
    second = hunt(capsys, SEED_RULE, data)
    assert first[0] == second[0] == 0, first[2]
    notes = [line for line in first[2].splitlines() if line.startswith(("note:", "warning:"))]
    assert any("filled from Timestamp" in n for n in notes) and any("has no column(s)" in n for n in notes)
    assert [line for line in second[2].splitlines() if line.startswith(("note:", "warning:"))] == notes


def test_an_unwritable_cache_only_costs_time(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parsed: list[str]
) -> None:
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("", encoding="utf-8")
    monkeypatch.setenv("KQLWATCH_CACHE_DIR", str(blocked))
    data = tmp_path / "EmailEvents.jsonl"
    data.write_bytes(SAMPLES.read_bytes())
    for _ in range(2):
        code, out, err = hunt(capsys, SEED_RULE, data)
        assert code == 0 and len(jsonl_rows(out)) == 46, err
    assert parsed == [str(data)] * 2


def test_a_copy_that_cannot_be_written_is_loaded_without_it(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    cache_dir: Path,
    parsed: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full disk while the copy is written (the rename into place fails): the same answer from a plain load,
    no temp file left, nothing recorded."""
    real = os.replace

    def full(source: Any, target: Any) -> None:
        if str(target).endswith(".parquet"):
            raise OSError(28, "No space left on device")
        real(source, target)

    monkeypatch.setattr(os, "replace", full)  # the engine's rename of the finished copy
    data = tmp_path / "EmailEvents.jsonl"
    data.write_bytes(SAMPLES.read_bytes())
    code, out, err = hunt(capsys, SEED_RULE, data)
    assert code == 0 and len(jsonl_rows(out)) == 46, err
    assert "Traceback" not in err and "No space" not in err
    assert list((cache_dir / "data").iterdir()) == []
    assert parsed == [str(data)] * 2  # the copy that failed, then the plain load


def test_a_corrupt_or_half_written_entry_is_a_miss(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path, parsed: list[str]
) -> None:
    data = tmp_path / "EmailEvents.jsonl"
    data.write_bytes(SAMPLES.read_bytes())
    assert hunt(capsys, SEED_RULE, data)[0] == 0
    (meta,) = (cache_dir / "data").glob("*.json")
    meta.write_text("{not json", encoding="utf-8")
    code, out, err = hunt(capsys, SEED_RULE, data)
    assert code == 0 and len(jsonl_rows(out)) == 46, err
    meta.with_suffix(".parquet").unlink()  # a copy recorded but gone (cleaned up by hand)
    code, out, err = hunt(capsys, SEED_RULE, data)
    assert code == 0 and len(jsonl_rows(out)) == 46, err
    assert parsed == [str(data)] * 3


# --- errors name the file, the line and the column --------------------------------------------------------------


def test_a_bad_json_value_names_its_line_every_time(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path
) -> None:
    """Line 6 of the file: a blank line before it is a line, not a record."""
    rows = sample_rows(6)
    rows[4]["BulkComplaintLevel"] = "lots"
    data = tmp_path / "EmailEvents.jsonl"
    lines = [json.dumps(r) for r in rows]
    data.write_text("\n".join([*lines[:2], "", *lines[2:]]) + "\n", encoding="utf-8")
    rule = rule_file(tmp_path, "EmailEvents | where BulkComplaintLevel > 5 | project NetworkMessageId")
    for _ in range(2):  # no copy is kept of a file that fails
        code, out, err = hunt(capsys, rule, data)
        assert code == 1 and out == ""
        assert f'cannot load {data} as EmailEvents: line 6: column BulkComplaintLevel: cannot read "lots" as int' in err
        assert "Traceback" not in err
    assert not list((cache_dir / "data").glob("*.parquet"))


def test_a_bad_csv_value_names_the_line_its_row_starts_on(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path
) -> None:
    """A quoted value over three lines before it: the bad row is record 3 but starts on line 6."""
    rows = sample_rows(4)
    rows[0]["Subject"] = "one\ntwo\nthree"
    rows[2]["TimeGenerated"] = "last tuesday"
    data = write_csv(tmp_path / "EmailEvents.csv", rows)
    code, out, err = hunt(capsys, SEED_RULE, data)
    assert code == 1 and out == ""
    assert f"cannot load {data} as EmailEvents: line 6: column TimeGenerated: " in err
    assert 'cannot read "last tuesday" as datetime' in err and "Traceback" not in err


def test_a_bad_value_in_a_json_array_names_its_element(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rows = sample_rows(3)
    rows[1]["AttachmentCount"] = "two"
    data = tmp_path / "EmailEvents.json"
    data.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    code, _, err = hunt(capsys, SEED_RULE, data)
    assert code == 1
    assert 'element 1 of the JSON array: column AttachmentCount: cannot read "two" as int' in err


def test_a_malformed_json_line_still_names_its_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path
) -> None:
    lines = SAMPLES.read_text(encoding="utf-8").splitlines()[:5]
    lines[3] = lines[3][:-9]  # cut off: not valid JSON
    data = tmp_path / "EmailEvents.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = hunt(capsys, SEED_RULE, data)
    assert code == 2 and out == ""  # a DataError, as before
    assert f"{data}:4: not valid JSON" in err and "Traceback" not in err
    assert not list((cache_dir / "data").glob("*.parquet"))


def test_a_malformed_csv_row_names_its_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cache_dir: Path
) -> None:
    """A row with one field too many, past the rows DuckDB samples to detect the dialect (20,480). DuckDB's
    message counted records (line 21770 here: the sample day has subjects with line breaks); now the line."""
    rows = sample_rows()
    data = write_csv(tmp_path / "EmailEvents.csv", rows * 9)  # 23,211 rows
    lines = data.read_text(encoding="utf-8").split("\n")
    lines[22000] += ",extra"
    data.write_text("\n".join(lines), encoding="utf-8")
    code, out, err = hunt(capsys, SEED_RULE, data)
    assert code == 1 and out == ""
    assert f"cannot load {data} as EmailEvents: line 22001: 45 fields, the header has 44" in err
    assert "Traceback" not in err
    assert not list((cache_dir / "data").glob("*.parquet"))

"""`kqlwatch hunt` / `kqlwatch preview`: the rule's final query over local files, and the loaders behind them."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.rules.loader import load_rule
from shared.rules.prepare import prepare_rules, workspace_query
from shared.schemas import table_schema
from shared.standins.clock import Clock
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.teams import WebhookReceiver
from shared.workbench.cli import main
from shared.workbench.demo import SAMPLES, sample_rows
from shared.workbench.engine import Engine, EngineError, EngineResult
from shared.workbench.output import write_csv as write_csv_output
from tests.conftest import ROOT, SEED_RULE, MakeDetector, delivered_ids, email

SCHEMA = table_schema("EmailEvents") or {}
EXAMPLE_EXCLUSIONS = ROOT / "docs" / "examples" / "sample-tenant.exclusions.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, default=_iso) + "\n")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]], *, times: Any = None) -> Path:
    """As the Logs blade exports it: every column, ` [UTC]` on datetime headers, dynamic as JSON text."""
    columns = list(dict.fromkeys(c for row in rows for c in row))
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([c + (" [UTC]" if SCHEMA.get(c) == "datetime" else "") for c in columns])
        for row in rows:
            writer.writerow([_csv_text(row.get(c), times) for c in columns])
    return path


def _csv_text(value: Any, times: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return times(value) if times else _iso(value)
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    raise TypeError(type(value))


def rule_file(tmp_path: Path, query: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        yaml.safe_dump({"id": "11111111-2222-4333-8444-555555555555", "name": "test rule", "query": query}),
        encoding="utf-8",
    )
    return path


def jsonl_rows(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def small(tmp_path: Path, clock: Clock) -> tuple[Path, list[dict[str, Any]]]:
    rows = [
        email(clock, NetworkMessageId="hit-dmarc", RecipientEmailAddress="finance@contoso.com"),
        email(
            clock,
            NetworkMessageId="hit-spf",
            AuthenticationDetails='{"SPF":"TempError","DMARC":"none"}',
            SenderMailFromDomain="Fabrikam.fr",
        ),
        email(clock, NetworkMessageId="miss-outbound", EmailDirection="Outbound"),
        email(clock, NetworkMessageId="miss-lookalike", SenderMailFromDomain="contoso.com.evil.io"),
    ]
    return write_jsonl(tmp_path / "EmailEvents.jsonl", rows), rows


# --- hunt: output ------------------------------------------------------------------------------------------


def test_hunt_prints_the_rule_rows_as_a_table(capsys: pytest.CaptureFixture[str], small: tuple[Path, Any]) -> None:
    path, _ = small
    code, out, err = run(
        capsys,
        "hunt",
        str(SEED_RULE),
        "--data",
        f"EmailEvents={path}",
        "--columns",
        "NetworkMessageId,SenderMailFromDomain,SPF,DMARC",
    )
    assert code == 0
    lines = out.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["NetworkMessageId", "SenderMailFromDomain", "SPF", "DMARC"]
    assert set(lines[1]) <= {"-", " "}
    body = sorted(re.split(r"\s{2,}", line) for line in lines[2:])
    assert body == [["hit-dmarc", "contoso.com", "pass", "temperror"], ["hit-spf", "Fabrikam.fr", "TempError", "none"]]
    starts = {line.find("contoso.com") for line in lines if "hit-dmarc" in line} | {lines[0].index("SenderMail")}
    assert len(starts) == 1, "columns are aligned"
    assert re.search(
        r"^2 rows \(trigger gt 0: met\) · load [\d.]+ s \(EmailEvents 4 rows\) · query [\d.]+ s", err, re.M
    )


def test_hunt_jsonl_and_csv_outputs(capsys: pytest.CaptureFixture[str], small: tuple[Path, Any]) -> None:
    path, rows = small
    code, out, _ = run(capsys, "hunt", str(SEED_RULE), "--data", f"EmailEvents={path}", "--format", "jsonl")
    assert code == 0
    got = jsonl_rows(out)
    assert sorted(r["NetworkMessageId"] for r in got) == ["hit-dmarc", "hit-spf"]
    first = next(r for r in got if r["NetworkMessageId"] == "hit-dmarc")
    assert first["TimeGenerated"] == _iso(rows[0]["TimeGenerated"])  # typed, printed as ISO-8601 UTC
    assert first["RecipientEmailAddress"] == "finance@contoso.com"
    assert first["Subject"] == "Quarterly numbers" and first["Connectors"] == ""  # missing strings are ""
    assert first["BulkComplaintLevel"] is None and first["IsFirstContact"] is None

    code, out, _ = run(capsys, "hunt", str(SEED_RULE), "--data", f"EmailEvents={path}", "--format", "csv")
    assert code == 0
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["NetworkMessageId"] for r in table] == [r["NetworkMessageId"] for r in got]
    assert table[0]["TimeGenerated"] == got[0]["TimeGenerated"]


def test_hunt_output_cannot_drive_the_terminal(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clock: Clock
) -> None:
    hostile = "Pay \x1b[31mnow\x1b[0m\x07 \u202efdp.exe\r\nBcc: x" + "A" * 20_000
    path = write_jsonl(tmp_path / "e.jsonl", [email(clock, Subject=hostile, SenderDisplayName="\x1b]0;pwned\x07")])
    for fmt in ("table", "jsonl", "csv"):
        code, out, err = run(capsys, "hunt", str(SEED_RULE), "--data", f"EmailEvents={path}", "--format", fmt)
        assert code == 0
        assert "\x1b" not in out + err and "\x07" not in out
        # CSV keeps line breaks and bidi characters (data, for files and pipes) except on a terminal
        assert ("\u202e" in out) == (fmt == "csv")
    code, out, _ = run(capsys, "hunt", str(SEED_RULE), "--data", f"EmailEvents={path}", "--columns", "Subject")
    cell = out.splitlines()[2]
    assert cell.startswith("Pay \ufffd[31mnow\ufffd[0m\ufffd [U+202E]fdp.exe Bcc: xAAA") and cell.endswith("A…")
    assert len(cell) == 60, "one line, cut at --width"
    result = EngineResult(["Subject"], ["string"], [(hostile,)])
    on_terminal = io.StringIO()
    write_csv_output(result, [0], on_terminal, terminal=True)
    assert (
        on_terminal.getvalue().splitlines()[1].startswith("Pay \ufffd[31mnow\ufffd[0m\ufffd [U+202E]fdp.exe\\r\\nBcc")
    )


def test_explain_prints_the_final_query_with_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    params = {"SenderDomains": 'evil.example,x");EmailEvents | take 1 //', "TriggerResults": "temperror,permerror"}
    code, out, _ = run(
        capsys,
        "hunt",
        str(SEED_RULE),
        "--explain",
        *(arg for name, value in params.items() for arg in ("--param", f"{name}={value}")),
    )
    assert code == 0
    assert 'let SenderDomains = pack_array("evil.example", "x\\");EmailEvents | take 1 //");' in out
    assert 'let TriggerResults = pack_array("temperror", "permerror");' in out
    prepared = prepare_rules([load_rule(SEED_RULE)], params)[0][0]
    offline, sent = out.split("\n\n// sent to the workspace by a run: ")
    assert offline == "// offline (hunt, test): the rule with its parameters and exclusions\n" + prepared.query.rstrip(
        "\n"
    )
    # and exactly what the detector sends: each source table filtered by ingestion time first (issue 13)
    watermark = re.search(r"ingestion_time\(\) > datetime\(([^)]+)\)", sent)
    assert watermark is not None
    since = datetime.fromisoformat(watermark[1].replace("Z", "+00:00"))
    assert sent.split("\n", 1)[1] == workspace_query(prepared, since).rstrip("\n") + "\n"
    # by rule name too, and without parameters the rule's own defaults
    code, out, _ = run(capsys, "hunt", "Message from an Accepted Domain with DMARC TempError", "--explain")
    assert code == 0 and "pack_array('contoso.com', 'fabrikam.fr')" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--param", "SenderDomain=contoso.com"], "--param SenderDomain: rule 'Message from an Accepted Domain"),
        (["--param", "no-equals"], "expected NAME=VALUE"),
        (["--data", "EmailEvents=/nonexistent/file.jsonl"], "no such file"),
        ([], "give the data to run over"),
        (["--data", "EmailEvents=x.jsonl", "--now", "yesterday"], "--now 'yesterday'"),
    ],
)
def test_usage_errors_exit_2_with_a_message(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, _, err = run(capsys, "hunt", str(SEED_RULE), *argv)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_unknown_rule_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "hunt", "no-such-rule", "--explain")
    assert code == 2 and "no rule file, id or name 'no-such-rule'" in err


@pytest.mark.parametrize(
    ("query", "construct"),
    [
        ("EmailEvents | evaluate bag_unpack(AdditionalFields)", "EvaluateOperator"),
        ('EmailEvents | where ipv4_is_in_range(SenderIPv4, "10.0.0.0/8")', "ipv4_is_in_range"),
        ("EmailEvents | parse Subject with Ticket ':' Rest", "parse"),
    ],
)
def test_an_unsupported_construct_fails_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, small: tuple[Path, Any], query: str, construct: str
) -> None:
    code, out, err = run(capsys, "hunt", str(rule_file(tmp_path, query)), "--data", f"EmailEvents={small[0]}")
    assert code == 1
    assert "does not support" in err and construct in err
    assert "Traceback" not in err and out == ""


# --- hunt: input ---------------------------------------------------------------------------------------------


def test_jsonl_csv_and_json_array_inputs_give_the_same_answer(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        for column in ("TimeGenerated", "Timestamp"):
            row[column] = datetime.fromisoformat(row[column].replace("Z", "+00:00"))
    # The Logs blade's CSV: US-style times (milliseconds). Advanced Hunting's: 7 fraction digits, no TimeGenerated.
    blade = write_csv(
        tmp_path / "blade.csv",
        rows,
        times=lambda t: t.strftime("%m/%d/%Y, %I:%M:%S.") + f"{t.microsecond // 1000:03d} " + t.strftime("%p"),
    )
    hunting = write_csv(
        tmp_path / "hunting.csv",
        [{k: v for k, v in r.items() if k != "TimeGenerated"} for r in rows],
        times=lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
    )
    # az monitor log-analytics query -o json: one array, every value text, TableName added.
    az = tmp_path / "az.json"
    az.write_text(
        json.dumps(
            [
                {
                    **{
                        k: json.dumps(v)
                        if isinstance(v, (dict, list))
                        else _iso(v)
                        if isinstance(v, datetime)
                        else str(v)
                        for k, v in r.items()
                    },
                    "TableName": "PrimaryResult",
                }
                for r in rows
            ]
        ),
        encoding="utf-8",
    )
    answers = {}
    for source in (SAMPLES, blade, hunting, az):
        code, out, err = run(
            capsys,
            "hunt",
            str(SEED_RULE),
            "--data",
            f"EmailEvents={source}",
            "--format",
            "jsonl",
            "--columns",
            "NetworkMessageId,RecipientEmailAddress,TimeGenerated,SPF,DMARC,To",
        )
        assert code == 0, err
        answers[source.name] = jsonl_rows(out)
        if source == hunting:
            assert "TimeGenerated is not in the file: filled from Timestamp" in err
    assert len(answers["EmailEvents.jsonl"]) == 46  # samples/README.md
    assert answers["blade.csv"] == answers["EmailEvents.jsonl"] == answers["hunting.csv"] == answers["az.json"]


def test_a_parquet_export_gives_the_same_answer_as_its_json_lines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Parquet (what a Data Explorer / Fabric export or `COPY ... (FORMAT PARQUET)` writes), typed by its own
    schema: times, numbers and dynamic values come out as from the JSON lines, and Timestamp fills TimeGenerated."""
    import duckdb

    parquet = tmp_path / "EmailEvents.parquet"
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        # TimeGenerated left out (Advanced Hunting has only Timestamp); AttachmentCount as text, To as a list.
        keep = "* EXCLUDE (TimeGenerated) REPLACE (CAST(AttachmentCount AS VARCHAR) AS AttachmentCount)"
        con.execute(f"COPY (SELECT {keep} FROM read_json('{SAMPLES}')) TO '{parquet}' (FORMAT PARQUET)")  # noqa: S608
    columns = "NetworkMessageId,RecipientEmailAddress,TimeGenerated,SPF,DMARC,To,AttachmentCount"
    answers = {}
    for source in (SAMPLES, parquet):
        code, out, err = run(
            capsys, "hunt", str(SEED_RULE), "--data", f"EmailEvents={source}", "--format", "jsonl", "--columns", columns
        )
        assert code == 0, err
        answers[source.suffix] = jsonl_rows(out)
    assert "TimeGenerated is not in the file: filled from Timestamp" in err
    assert len(answers[".jsonl"]) == 46
    assert answers[".parquet"] == answers[".jsonl"]


def test_datetimes_are_typed_in_jsonl_and_csv(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    times = {
        "fraction6": "2026-11-20T08:15:02.123000Z",
        "fraction7": "2026-11-20T08:15:02.1234567Z",
        "no-fraction": "2026-11-20T08:15:02Z",
        "offset": "2026-11-20T09:15:02+01:00",
        "no-zone": "2026-11-20 08:15:02",
        "plain-date": "2026-11-21",
        "before": "2026-11-19T23:59:59Z",
        "midnight": "2026-11-20",
        "blade": "11/20/2026, 8:15:02.123 AM",
        "blade-pm": "11/20/2026, 1:05:00 PM",
    }
    rows = [{"NetworkMessageId": name, "TimeGenerated": value} for name, value in times.items()]
    rows.append({"NetworkMessageId": "empty", "TimeGenerated": ""})
    rule = rule_file(
        tmp_path,
        "EmailEvents | where TimeGenerated > datetime(2026-11-20) "
        "| project NetworkMessageId, TimeGenerated, Hour = datetime_part('hour', TimeGenerated)",
    )
    jsonl = write_jsonl(tmp_path / "t.jsonl", rows)
    with (tmp_path / "t.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(
            [["NetworkMessageId", "TimeGenerated"], *([r["NetworkMessageId"], r["TimeGenerated"]] for r in rows)]
        )
    for path in (jsonl, tmp_path / "t.csv"):
        code, out, err = run(capsys, "hunt", str(rule), "--data", f"EmailEvents={path}", "--format", "jsonl")
        assert code == 0, err
        got = {r["NetworkMessageId"]: (r["TimeGenerated"], r["Hour"]) for r in jsonl_rows(out)}
        assert got == {
            "fraction6": ("2026-11-20T08:15:02.123000Z", 8),
            "fraction7": ("2026-11-20T08:15:02.123456Z", 8),
            "no-fraction": ("2026-11-20T08:15:02.000000Z", 8),
            "offset": ("2026-11-20T08:15:02.000000Z", 8),
            "no-zone": ("2026-11-20T08:15:02.000000Z", 8),
            "plain-date": ("2026-11-21T00:00:00.000000Z", 0),
            "blade": ("2026-11-20T08:15:02.123000Z", 8),
            "blade-pm": ("2026-11-20T13:05:00.000000Z", 13),
        }


def test_a_value_that_does_not_fit_its_column_fails_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "EmailEvents.jsonl", [{"TimeGenerated": "last tuesday", "NetworkMessageId": "x"}])
    code, _, err = run(capsys, "hunt", str(SEED_RULE), "--data", str(path))
    assert code == 1
    assert 'column TimeGenerated: cannot read "last tuesday" as datetime' in err and "Traceback" not in err


def test_a_table_without_a_schema_is_inferred(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rows = [
        {"When": "2026-11-20T10:00:00Z", "Count": 3, "Flag": True, "Bag": {"a": [1]}, "Name": "x"},
        {"When": "2026-11-20T11:00:00Z", "Count": 5, "Flag": False, "Bag": {"a": [2]}},
    ]
    path = write_jsonl(tmp_path / "Custom_CL.jsonl", rows)
    rule = rule_file(
        tmp_path,
        "Custom_CL | where When > datetime(2026-11-20T10:30:00Z) and Count > 4 "
        "| extend A = tostring(Bag.a[0]) | project Name, Count, Flag, A, When",
    )
    code, out, err = run(capsys, "hunt", str(rule), "--data", str(path), "--format", "jsonl")
    assert code == 0, err
    assert jsonl_rows(out) == [{"Name": "", "Count": 5, "Flag": False, "A": "2", "When": "2026-11-20T11:00:00.000000Z"}]
    assert "Custom_CL has no schema" in err


def test_engine_loaders_keep_the_schema_and_report_what_they_did(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text(
        'NetworkMessageId,Extra,IsFirstContact,AttachmentCount,Cc\nm1,7,True,2,"[""a@b.c""]"\nm2,,False,None,\n',
        encoding="utf-8",
    )
    with Engine() as engine:
        loaded = engine.load_csv("EmailEvents", str(path), SCHEMA, extra_columns=True)
        assert loaded.rows == 2 and loaded.inferred == ("Extra",) and "Subject" in loaded.missing
        result = engine.query(
            "EmailEvents | project NetworkMessageId, Extra, IsFirstContact, AttachmentCount, "
            "Cc, Subject, n = array_length(Cc)"
        )
        assert result.types == ["string", "long", "bool", "int", "dynamic", "string", "long"]
        assert result.rows == [("m1", 7, True, 2, '["a@b.c"]', "", 1), ("m2", None, False, None, None, "", None)]
        # Only the schema's columns unless asked; columns differing only in case cannot both exist in DuckDB.
        assert engine.load_csv("EmailEvents", str(path), SCHEMA).inferred == ()
        engine.create_table("T", {"ISP": "string", "Isp": "string", "N": "long"})
        assert engine.query("T | getschema | project ColumnName").rows == [("ISP",), ("N",)]
        with pytest.raises(EngineError, match="cannot tell the format"):
            engine.load_file("T", str(tmp_path / "x.xlsx"))


# --- hunt agrees with the detector ---------------------------------------------------------------------------


@pytest.mark.parametrize("tuned", [False, True], ids=["as shipped", "with the example exclusions"])
def test_hunt_agrees_with_the_detector_on_the_sample_day(
    capsys: pytest.CaptureFixture[str],
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    make_detector: MakeDetector,
    clock: Clock,
    rules_dir: Path,
    tmp_path: Path,
    tuned: bool,
) -> None:
    if tuned:  # the detector reads exclusion files in its rules folder; hunt those beside the rule file
        shutil.copy(EXAMPLE_EXCLUSIONS, rules_dir / "exclusions.yaml")
    rows = sample_rows(clock.now)
    la.ingest("EmailEvents", rows)
    detector = make_detector()
    report = detector.run(only_due=False)
    assert report.ok, report
    rule_id = load_rule(SEED_RULE).id
    alerted = {(h.row["NetworkMessageId"], h.row["RecipientEmailAddress"]) for h in detector.store.hits(rule_id)}
    assert {m for m, _ in alerted} == set(delivered_ids(hook)), "every stored hit was posted"

    path = write_jsonl(
        tmp_path / "EmailEvents.jsonl", [{k: v for k, v in r.items() if k != "_IngestedAt"} for r in rows]
    )
    code, out, err = run(
        capsys,
        "hunt",
        str(rules_dir / SEED_RULE.name),
        "--data",
        f"EmailEvents={path}",
        "--format",
        "jsonl",
        "--columns",
        "NetworkMessageId,RecipientEmailAddress",
    )
    assert code == 0, err
    hunted = {(r["NetworkMessageId"], r["RecipientEmailAddress"]) for r in jsonl_rows(out)}
    assert hunted == alerted
    # samples/README.md: 46 rows, 45 message-recipient pairs; the five exclusions leave the 12 true attacks
    assert len(hunted) == (12 if tuned else 45)


def test_exclusion_files_beside_the_rule_are_applied(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    shutil.copy(SEED_RULE, tmp_path / SEED_RULE.name)
    shutil.copy(EXAMPLE_EXCLUSIONS, tmp_path / "sample.exclusions.yaml")
    rule = str(tmp_path / SEED_RULE.name)
    code, out, _ = run(capsys, "hunt", rule, "--explain")
    assert code == 0 and "// exclusion: Scheduler via on-prem relay" in out
    assert out.count("| where not(") == 10  # 5 in the offline query, 5 in the one sent to the workspace
    for extra, rows in (([], 13), (["--no-exclusions"], 46), (["--now", "2028-01-01T00:00:00Z"], 46)):
        code, out, err = run(capsys, "hunt", rule, "--data", str(SAMPLES), "--format", "jsonl", *extra)
        assert code == 0 and len(jsonl_rows(out)) == rows, (extra, err)
        assert ("expired on" in err) == (extra[:1] == ["--now"])


# --- preview -----------------------------------------------------------------------------------------------


def test_preview_writes_the_cards_the_rule_would_post(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "out" / "cards.html"
    code, out, err = run(capsys, "preview", str(SEED_RULE), "--data", f"EmailEvents={SAMPLES}", "--out", str(out_file))
    assert code == 0, err
    page = out_file.read_text(encoding="utf-8")
    assert "Message from an Accepted Domain with DMARC TempError" in page
    assert "46 rows -> 45 hits (one per NetworkMessageId, RecipientEmailAddress)" in out
    assert "nothing was sent" in out and "card 1 of" in out
    assert "hxxps[:]//evil[.]example" in out  # hostile subjects shown defanged, as in Teams
    assert "\x1b" not in out
    shown = set(re.findall(r"NetworkMessageId: ([0-9a-f-]{36})", out))
    with Engine() as engine:
        engine.load_jsonl("EmailEvents", str(SAMPLES), SCHEMA)
        hits = engine.query(load_rule(SEED_RULE).query + "| distinct NetworkMessageId").rows
    assert shown == {m for (m,) in hits}


def test_preview_fails_when_the_renderer_rejects_a_card(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, small: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import shared.workbench.preview
    from shared.workbench.preview import CardRender, RenderResult

    def reject(cards: list[Any], title: str, **kw: Any) -> RenderResult:
        return RenderResult([CardRender(False, ["Unknown element type"], [], "") for _ in cards], "<html></html>")

    monkeypatch.setattr(shared.workbench.preview, "render_cards", reject)
    code, out, err = run(
        capsys, "preview", str(SEED_RULE), "--data", f"EmailEvents={small[0]}", "--out", str(tmp_path / "c.html")
    )
    assert code == 1
    assert "INVALID: Unknown element type" in out and "invalid for Teams" in err


def test_preview_with_no_hits_writes_an_empty_page(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clock: Clock
) -> None:
    path = write_jsonl(tmp_path / "EmailEvents.jsonl", [email(clock, EmailDirection="Outbound")])
    code, out, _ = run(capsys, "preview", str(SEED_RULE), "--data", str(path), "--out", str(tmp_path / "c.html"))
    assert code == 0
    assert "0 rows -> 0 card(s); nothing was sent" in out and (tmp_path / "c.html").is_file()


@pytest.mark.parametrize(
    "query",
    [
        "EmailEvents | where Subject != '' | project NetworkMessageId, Subject",  # loads the two columns
        "EmailEvents | where Subject != ''",  # returns every column: Subject loaded, the others read late
    ],
)
def test_a_column_first_used_after_the_records_duckdb_samples_is_still_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    """DuckDB detects a JSON file's keys from its first 20,480 records: the key of the 25,000th was read as
    absent, its value lost, with a warning that the column was empty in every row."""
    monkeypatch.setenv("KQLWATCH_CACHE_DIR", str(tmp_path / "cache"))
    rows = [{"TimeGenerated": "2026-11-20T10:00:00Z", "NetworkMessageId": f"m{i}"} for i in range(25_000)]
    rows[-1]["Subject"] = "the only subject"
    path = write_jsonl(tmp_path / "EmailEvents.jsonl", rows)
    code, out, err = run(capsys, "hunt", str(rule_file(tmp_path, query)), "--data", str(path), "--format", "jsonl")
    assert code == 0, err
    assert [(r["NetworkMessageId"], r["Subject"]) for r in jsonl_rows(out)] == [("m24999", "the only subject")]
    assert "warning" not in err, err


@pytest.mark.parametrize(("bad", "fields"), [("   ", 1), ("a,b,c", 3)])
def test_a_small_csv_with_a_malformed_row_among_the_first_fails_naming_its_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, bad: str, fields: int
) -> None:
    """DuckDB's sniffer guesses the delimiter from the rows it samples: one blank-ish or short row among 50 made
    it read the file as one column, and the hunt said 0 rows (with warnings that every column was empty). The
    delimiter now comes from the header line, so DuckDB refuses the row instead."""
    rows = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines()[:50]]
    path = write_csv(tmp_path / "EmailEvents.csv", rows)
    lines = path.read_text(encoding="utf-8").split("\n")
    path.write_text("\n".join([*lines[:9], bad, *lines[9:]]), encoding="utf-8")
    code, out, err = run(capsys, "hunt", str(SEED_RULE), "--data", str(path), "--format", "jsonl")
    header = len(lines[0].split(","))
    assert code == 1 and out == ""
    assert f"cannot read {path}: line 10: {fields} fields, the header has {header}" in err, err


def test_a_semicolon_csv_s_malformed_row_is_named_by_the_same_delimiter_as_the_load(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The re-scan that names a bad row splits by the header's delimiter, as the load does (it used `,` for
    every file not named .tsv)."""
    path = tmp_path / "EmailEvents.csv"
    rows = [f"2026-11-20T10:00:0{i}Z;m{i};Inbound" for i in range(5)]
    lines = ["TimeGenerated;NetworkMessageId;EmailDirection", *rows[:2], "2026-11-20T10:00:09Z;m9", *rows[2:]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, _, err = run(capsys, "hunt", str(SEED_RULE), "--data", str(path), "--format", "jsonl")
    assert code == 1 and "line 4: 2 fields, the header has 3" in err, err

"""Issue 10 (points 2, 3, 6, 7, 8, 10): one broken file never stops detection, the workbench never answers a
silent zero, nothing prints a traceback. Each test drives the real command (`shared.workbench.cli.main` or a subprocess)
and the real stand-ins where a run is involved."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from shared.rules.loader import load_exclusion_files, load_rules
from shared.standins.clock import Clock
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.teams import WebhookReceiver
from shared.workbench.cli import main
from shared.workbench.demo import SAMPLES
from tests.conftest import ROOT, SEED_RULE, delivered_ids, email

KQLWATCH = ROOT / ".venv" / "bin" / "kqlwatch"
GOOD_RULE = """\
id: 0b5e9c6e-2222-4a4a-9a9a-000000000010
name: Inbound temperror from contoso
query: |
  EmailEvents
  | where EmailDirection == 'Inbound' and SenderMailFromDomain =~ 'contoso.com'
  | where AuthenticationDetails has 'temperror'
kqlwatch:
  dedupeKey: [NetworkMessageId, RecipientEmailAddress]
"""


def rule_with_query(query: str) -> str:
    return f"id: 0b5e9c6e-2222-4a4a-9a9a-000000000011\nname: Ad hoc\nquery: {json.dumps(query)}\n"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def break_yaml(path: Path) -> None:
    """The typo a person makes: an unclosed bracket in the middle of the file."""
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("severity: Medium", "severity: [Medium", 1), encoding="utf-8")


# --- point 2: a broken file holding a parameter's binding ------------------------------------------------


def test_a_broken_rule_file_with_its_parameter_set_is_named_and_the_good_rules_run(
    cli_env: dict[str, str],
    rules_dir: Path,
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed = rules_dir / SEED_RULE.name
    break_yaml(seed)
    (rules_dir / "good.yaml").write_text(GOOD_RULE, encoding="utf-8")
    monkeypatch.setenv("KQLWATCH_PARAM_SenderDomains", "contoso.com")  # as the README recommends
    row = email(clock)
    la.ingest("EmailEvents", [row], at=clock.now - timedelta(minutes=10))
    la.clock = lambda: clock.now

    code, out, err = run_cli(capsys, "run", "--once")

    assert code == 1, "a skipped file fails the run (exit 1), it is not a configuration error (exit 2)"
    assert f"SKIPPED  {seed}:" in out and "invalid YAML" in out
    warning = next(line for line in out.splitlines() if line.startswith("warning"))
    assert "KQLWATCH_PARAM_SenderDomains" in warning and str(seed) in warning
    assert "ok       Inbound temperror from contoso: 1 rows, 1 new, 1 delivered" in out
    assert delivered_ids(hook) == [row["NetworkMessageId"]]
    assert "Traceback" not in err


def test_a_parameter_no_file_binds_stays_a_configuration_error(
    cli_env: dict[str, str],
    rules_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    break_yaml(rules_dir / SEED_RULE.name)
    monkeypatch.setenv("KQLWATCH_PARAM_SenderDomain", "contoso.com")  # a typo: no file binds it, loaded or not
    code, _, err = run_cli(capsys, "run", "--once")
    assert code == 2
    assert "KQLWATCH_PARAM_SenderDomain names no top-level `let SenderDomain = ...;` binding in any rule" in err


# --- point 3: any YAML value of any type -> a located error ------------------------------------------------

HOSTILE_EDITS = {
    "int and text keys under kqlwatch": ("kqlwatch:\n", "kqlwatch:\n  1: x\n  colour: red\n"),
    "bool and null keys under kqlwatch": ("kqlwatch:\n", "kqlwatch:\n  true: x\n  null: y\n"),
    "int top-level key": ("severity: Medium", "severity: Medium\n7: seven"),
    "list for kqlwatch": ("kqlwatch:\n", "kqlwatch: [1, 2]\nx-old:\n"),
    "huge duration": ("queryPeriod: 1h", "queryPeriod: 99999999999d"),
    "date for a duration": ("queryPeriod: 1h", "queryPeriod: 2026-01-01"),
    "impossible date": ("version: 1.0.0", "version: 2026-13-45"),
    "list for a title": ("version: 1.0.0", "version: 1.0.0\nalertDetailsOverride: {alertDisplayNameFormat: [1]}"),
    "mapping in customDetails": ("version: 1.0.0", "version: 1.0.0\ncustomDetails: {Sender: {a: 1}}"),
    "mapping for kqlwatch.route": ("kqlwatch:\n", "kqlwatch:\n  route: {a: 1}\n"),
    "alias bomb": (
        "version: 1.0.0",
        "version: 1.0.0\nx0: &a0 [x, x, x, x, x, x, x, x, x]\n"
        + "\n".join(f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 8)),
    ),
}


@pytest.mark.parametrize("edit", list(HOSTILE_EDITS), ids=list(HOSTILE_EDITS))
def test_hostile_yaml_values_give_a_located_error_from_every_command(
    edit: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = HOSTILE_EDITS[edit]
    rules = tmp_path / "rules"
    rules.mkdir()
    path = rules / SEED_RULE.name
    text = SEED_RULE.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    monkeypatch.setenv("KQLWATCH_RULES_DIR", str(rules))

    loaded = load_rules(rules)  # what `run` loads
    assert loaded.rules == [] and len(loaded.errors) == 1 and loaded.errors[0].path == str(path)
    assert loaded.errors[0].line is not None, "the line of the field at fault"
    for argv in (["hunt", str(path), "--explain"], ["test", str(path)], ["validate", "--no-kql", str(path)]):
        code, out, err = run_cli(capsys, *argv)
        assert code in (1, 2), (argv, out, err)
        assert "Traceback" not in out + err and str(path) in out + err, (argv, out, err)


@pytest.mark.parametrize("extra", ["3: 4\n    colour: red", "name: {1: 2}", "owner: [a, b]"])
def test_hostile_values_in_an_exclusions_file_are_located(
    extra: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(SEED_RULE, rules / SEED_RULE.name)
    tuning = rules / "exclusions.yaml"
    tuning.write_text(
        "exclusions:\n  - rule: a256f4ea-deec-4fcd-bdf3-63987638eed9\n    name: n\n    reason: r\n"
        "    owner: o\n    column: SenderIPv4\n    operator: equals\n    values: [1.2.3.4]\n"
        f"    {extra}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("KQLWATCH_RULES_DIR", str(rules))
    _, errors = load_exclusion_files(rules)  # what `run` loads
    assert [e.path for e in errors] == [str(tuning)]
    code, out, err = run_cli(capsys, "hunt", str(rules / SEED_RULE.name), "--explain")
    assert code == 1 and str(tuning) in err and "Traceback" not in out + err


def test_an_alias_bomb_and_deep_nesting_are_refused_fast_with_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = tmp_path / "bomb.yaml"
    lines = ["id: a256f4ea-deec-4fcd-bdf3-63987638eed9", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]  # 9**10 nodes
    bomb.write_text("\n".join(lines) + "\n", encoding="utf-8")
    deep = tmp_path / "deep.yaml"
    deep.write_text("id: x\nname: y\nquery: |\n  T\nextra: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    started = time.monotonic()
    code, out, err = run_cli(capsys, "validate", "--no-kql", str(bomb), str(deep))
    assert time.monotonic() - started < 5
    assert code == 1 and "Traceback" not in out + err
    assert f"{bomb}:" in out and "expands the document past 200,000 nodes" in out
    assert f"{deep}:5:" in out and "nest" in out
    errors = {e.path: str(e) for e in load_rules(tmp_path).errors}
    assert "expands the document past 200,000 nodes" in errors[str(bomb)]


# --- point 6: no silent zero in the workbench ----------------------------------------------------------


def sample_lines(count: int) -> list[str]:
    return SAMPLES.read_text(encoding="utf-8").splitlines()[:count]


@pytest.mark.parametrize("junk", ["[1, 2]", '"a string"', "42", "null", "{not json"])
def test_a_jsonl_line_that_is_not_an_object_is_named_with_its_line(
    junk: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "EmailEvents.jsonl"
    data.write_text("\n".join([*sample_lines(3), junk, *sample_lines(2)]) + "\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "hunt", str(SEED_RULE), "--data", f"EmailEvents={data}")
    assert code != 0, "0 rows and exit 0 hides that the file was not read"
    assert f"{data}:4:" in err and "Traceback" not in err


def test_hunt_warns_when_the_data_lacks_the_columns_the_query_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "EmailEvents.jsonl"
    rows = [json.loads(line) for line in sample_lines(50)]
    data.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "AuthenticationDetails"}) + "\n" for r in rows),
        encoding="utf-8",
    )
    code, _, err = run_cli(capsys, "hunt", str(SEED_RULE), "--data", f"EmailEvents={data}")
    assert code == 0
    assert f"warning: {data} has no column(s) AuthenticationDetails that the query reads" in err


def test_hunt_warns_when_the_data_is_given_for_a_table_the_query_does_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "mail.jsonl"
    data.write_text("\n".join(sample_lines(20)) + "\n", encoding="utf-8")
    _, _, err = run_cli(capsys, "hunt", str(SEED_RULE), "--data", f"EmailAttachmentInfo={data}")
    assert "warning: the query does not read table EmailAttachmentInfo" in err and str(data) in err


def test_dangling_and_looping_rule_symlinks_are_named_by_the_detector_and_the_workbench(
    cli_env: dict[str, str],
    rules_dir: Path,
    la: LogAnalyticsStandIn,
    clock: Clock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dangling, loop = rules_dir / "moved.yaml", rules_dir / "loop.yaml"
    dangling.symlink_to(rules_dir / "gone" / "rule.yaml")
    loop.symlink_to(loop)
    la.clock = lambda: clock.now

    code, out, _ = run_cli(capsys, "run", "--once")
    assert code == 0  # the seed rule ran; the links are warnings
    assert f"warning  {dangling}: symbolic link to" in out and "does not exist" in out
    assert f"warning  {loop}: symbolic link loop" in out
    _, out, _ = run_cli(capsys, "validate", "--no-kql", str(rules_dir))
    assert f"{dangling}:1:1: warning:" in out and f"{loop}:1:1: warning:" in out
    _, _, err = run_cli(capsys, "test", str(rules_dir))
    assert str(dangling) in err and str(loop) in err
    code, _, err = run_cli(capsys, "hunt", "moved", "--explain")  # by name, as the README shows
    assert code == 2 and f"{dangling}: symbolic link to" in err


# --- point 7: no tracebacks ------------------------------------------------------------------------------


def test_hunt_into_a_pipe_closed_early_prints_no_traceback(tmp_path: Path) -> None:
    everything = tmp_path / "all.yaml"  # every sample row: far more than a pipe buffer holds
    everything.write_text(rule_with_query("EmailEvents"), encoding="utf-8")
    proc = subprocess.Popen(
        [str(KQLWATCH), "hunt", str(everything), "--data", str(SAMPLES), "--format", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_preview_out_to_a_folder_or_unwritable_path_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out_path, reason in ((tmp_path, "is a folder"), (blocker / "cards.html", "cannot write")):
        code, _, err = run_cli(capsys, "preview", str(SEED_RULE), "--data", str(SAMPLES), "--out", str(out_path))
        assert code == 1 and "Traceback" not in err
        assert f"--out {out_path}: {reason}" in err


# --- point 8: CSV formula injection ---------------------------------------------------------------------


def test_hunt_csv_neutralises_formulas_in_attacker_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    row = json.loads(sample_lines(1)[0])
    subjects = [
        '=HYPERLINK("https://evil.example","Open")',
        "+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(A1)",
        "\t=1+1",
        "\r=1+1",
        "plain subject",
    ]
    data = tmp_path / "EmailEvents.jsonl"
    data.write_text(
        "".join(json.dumps({**row, "NetworkMessageId": f"m{i}", "Subject": s}) + "\n" for i, s in enumerate(subjects)),
        encoding="utf-8",
    )
    rule = tmp_path / "subjects.yaml"
    rule.write_text(
        rule_with_query("EmailEvents | project Subject, AttachmentCount = AttachmentCount - 5"), encoding="utf-8"
    )
    code, out, _ = run_cli(capsys, "hunt", str(rule), "--data", str(data), "--format", "csv")
    assert code == 0
    cells = list(csv.reader(io.StringIO(out)))[1:]
    assert [c[0] for c in cells] == ["'" + s for s in subjects[:-1]] + ["plain subject"]
    assert {c[1] for c in cells} == {str(row["AttachmentCount"] - 5)}  # numbers are left numbers


# --- point 10: CLI conventions --------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("kqlwatch 0.")


def test_verbose_after_the_subcommand() -> None:
    for argv in (["-v", "validate", "--no-kql", str(SEED_RULE)], ["validate", "--no-kql", str(SEED_RULE), "-v"]):
        done = subprocess.run([str(KQLWATCH), *argv], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0 and "1 valid" in done.stdout, (argv, done.stderr)


def test_run_without_once_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "run")
    assert code == 2
    assert "give --once" in err and "Functions timer" in err and "usage:" not in err


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_to_demo_stops_the_stand_ins_it_started(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KQLWATCH_")}
    proc = subprocess.Popen(
        [str(KQLWATCH), "demo", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    azurite: list[int] = []
    try:
        assert proc.stdout.readline().startswith("Starting the local stand-ins")
        assert proc.stdout.readline().startswith("Serving")  # Azurite is up by now
        azurite = [p for p in _children(proc.pid) if b"azurite" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert azurite, "the demo starts Azurite as its child"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in azurite) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in azurite), "Azurite outlived the demo"
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in (p for p in azurite if _alive(p)):  # what a failing run would leak
            os.kill(pid, signal.SIGKILL)

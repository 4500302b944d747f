"""Benchmark `kqlwatch hunt` of the seed rule over a large EmailEvents export (default 1,000,000 rows).

Generates the rows inside DuckDB (seconds, not minutes) as JSON lines, as a CSV export (the Logs blade's
shape: ` [UTC]` headers, US-style times) and as Parquet, then runs the real command, `.venv/bin/kqlwatch hunt`,
once per file in a child process and reports its load and query times (from hunt's footer), wall time and peak
memory (the child's ru_maxrss). This checkout runs twice per file, with an empty cache folder of its own
(KQLWATCH_CACHE_DIR: the first hunt of a rule over a file, which translates the query and writes the typed
Parquet copy of a JSON-lines or CSV file) and again with what the first left (every later hunt of it).
Side by side, in the same run, it times the loader of `--baseline` (a git revision, default `main`: its `shared/`
is extracted to a temporary folder and run with the same interpreter). Every run's output must be the same
bytes (the same rows, in the same order). Run from the repository root:

    .venv/bin/python bench/hunt_1m.py               # 1,000,000 rows
    .venv/bin/python bench/hunt_1m.py --rows 10000  # smoke size
    .venv/bin/python bench/hunt_1m.py --baseline none   # this checkout only
    .venv/bin/python bench/hunt_1m.py --rule rules/sender-domain-auth-failure-burst.yaml  # a rule that reads 7 columns
    .venv/bin/python bench/hunt_1m.py --write       # also put the table into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import _stand  # noqa: E402

RULE = ROOT / "rules" / "accepted-domain-dmarc-temperror.yaml"
KQLWATCH = ROOT / ".venv" / "bin" / "kqlwatch"
FOOTER = re.compile(r"([\d,]+) rows? .*· load ([\d.]+) s .*· query ([\d.]+) s · total ([\d.]+) s")

# One day of mail, two rows (recipients) per message. Every 100th message is from an accepted domain (some upper-case, some look-alikes)
# with a temperror somewhere, so the rule returns a few thousand rows per million, as a busy tenant would see.
_ROWS_SQL = """
WITH base AS (
  SELECT i,
         TIMESTAMPTZ '2026-11-20 00:00:00+00' + to_microseconds(CAST(i * (86400000000 // {rows}) AS BIGINT)) AS t,
         hash(i // 2) AS h  -- two recipients per message: message-level values hash the message number
  FROM range({rows}) r(i)
), shaped AS (
  SELECT *,
    ['contoso.com', 'fabrikam.fr', 'Contoso.com', 'c0ntoso.com', 'mail.contoso.com', 'contoso.com.evil.io',
     'tailspintoys.com', 'northwindtraders.com', 'adatum.com', 'wingtiptoys.com', 'mailchimp-bounce.example',
     'github.com', 'docusign.net', 'outlook.com', 'gmail.com', 'spam-{{n}}.top'][1 + (h % 16)::INTEGER] AS domain,
    CASE WHEN h % 10 < 7 THEN 'Inbound' WHEN h % 10 < 9 THEN 'Intra-org' ELSE 'Outbound' END AS direction,
    ['pass', 'pass', 'pass', 'pass', 'pass', 'pass', 'fail', 'softfail', 'neutral', 'none', 'permerror',
     'temperror'][1 + ((h // 16) % 12)::INTEGER] AS spf,
    CASE WHEN (i // 2) % 100 = 0 THEN 'temperror'
         ELSE ['pass', 'pass', 'pass', 'pass', 'bestguesspass', 'fail', 'none', 'permerror'][1 + ((h // 256) % 8)::INTEGER]
    END AS dmarc
  FROM base
)
SELECT
  strftime(t, '%Y-%m-%dT%H:%M:%S.%fZ') AS TimeGenerated,
  strftime(t, '%Y-%m-%dT%H:%M:%S.%fZ') AS Timestamp,
  '4a1c2b3d-0000-4000-8000-00000000c0de' AS TenantId,
  md5(CAST(i // 2 AS VARCHAR))[1:8] || '-' || md5(CAST(i // 2 AS VARCHAR))[9:12] || '-4' ||
    md5(CAST(i // 2 AS VARCHAR))[14:16] || '-8' || md5(CAST(i // 2 AS VARCHAR))[18:20] || '-' ||
    md5(CAST(i // 2 AS VARCHAR))[21:32] AS NetworkMessageId,
  '<' || md5(CAST(i // 2 AS VARCHAR)) || '@' || replace(domain, '{{n}}', CAST(h % 97 AS VARCHAR)) || '>'
    AS InternetMessageId,
  md5(CAST(i // 2 AS VARCHAR)) || '-' || CAST(i % 2 AS VARCHAR) AS ReportId,
  'user' || CAST(h % 500 AS VARCHAR) || '@' || replace(domain, '{{n}}', CAST(h % 97 AS VARCHAR))
    AS SenderMailFromAddress,
  replace(domain, '{{n}}', CAST(h % 97 AS VARCHAR)) AS SenderMailFromDomain,
  'user' || CAST(h % 500 AS VARCHAR) || '@' || replace(domain, '{{n}}', CAST(h % 97 AS VARCHAR)) AS SenderFromAddress,
  replace(domain, '{{n}}', CAST(h % 97 AS VARCHAR)) AS SenderFromDomain,
  'Sender ' || CAST(h % 500 AS VARCHAR) AS SenderDisplayName,
  CAST(1 + h % 223 AS VARCHAR) || '.' || CAST((h // 7) % 256 AS VARCHAR) || '.' || CAST((h // 11) % 256 AS VARCHAR)
    || '.' || CAST((h // 13) % 256 AS VARCHAR) AS SenderIPv4,
  'person' || CAST(i % 3000 AS VARCHAR) || '@contoso.com' AS RecipientEmailAddress,
  'Message ' || CAST(i // 2 AS VARCHAR) || ' about ' || ['invoices', 'the budget', 'lunch', 'your account', 'a delivery']
    [1 + (h % 5)::INTEGER] AS Subject,
  CAST(h % 100000 AS BIGINT) AS EmailClusterId,
  direction AS EmailDirection,
  CASE WHEN h % 50 = 0 THEN 'Junked' ELSE 'Delivered' END AS DeliveryAction,
  CASE WHEN h % 50 = 0 THEN 'Junk folder' ELSE 'Inbox/folder' END AS DeliveryLocation,
  CAST(h % 10 AS INTEGER) AS BulkComplaintLevel,
  '{{"SPF":"' || spf || '","DKIM":"pass","DMARC":"' || dmarc || '","CompAuth":"pass"}}' AS AuthenticationDetails,
  CAST(h % 3 AS INTEGER) AS AttachmentCount,
  CAST(h % 7 AS INTEGER) AS UrlCount,
  'en' AS EmailLanguage,
  CASE WHEN h % 40 = 0 THEN 'Contoso-OnPrem-Relay' ELSE '' END AS Connectors,
  CAST('{{}}' AS JSON) AS AdditionalFields,
  to_json(['person' || CAST(i % 3000 AS VARCHAR) || '@contoso.com']) AS "To",
  CAST('[]' AS JSON) AS Cc,
  h % 4 = 0 AS IsFirstContact,
  'EmailEvents' AS "Type"
FROM shaped
"""

# The Logs blade's CSV export: ` [UTC]` on datetime headers, US-style times with milliseconds, dynamic as JSON text.
_CSV_SQL = """
SELECT * EXCLUDE (TimeGenerated, Timestamp)
         REPLACE (CAST("To" AS VARCHAR) AS "To", CAST(Cc AS VARCHAR) AS Cc,
                  CAST(AdditionalFields AS VARCHAR) AS AdditionalFields),
  strftime(CAST(TimeGenerated AS TIMESTAMPTZ), '%m/%d/%Y, %-I:%M:%S.%g %p') AS "TimeGenerated [UTC]",
  strftime(CAST(Timestamp AS TIMESTAMPTZ), '%m/%d/%Y, %-I:%M:%S.%g %p') AS "Timestamp [UTC]"
FROM ({rows_sql})
"""


def generate(rows: int, directory: Path, formats: list[str]) -> dict[str, Path]:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    files: dict[str, Path] = {}
    jsonl = directory / "EmailEvents.jsonl"
    started = time.perf_counter()
    con.execute(f"COPY ({_ROWS_SQL.format(rows=rows)}) TO '{jsonl}' (FORMAT JSON)")
    print(
        f"generated {rows:,} rows as JSON lines in {time.perf_counter() - started:.1f} s: "
        f"{jsonl.stat().st_size / 2**20:,.0f} MiB"
    )
    files["jsonl"] = jsonl
    if "csv" in formats:
        csv_path = directory / "EmailEvents.csv"
        started = time.perf_counter()
        sql = _CSV_SQL.format(rows_sql=_ROWS_SQL.format(rows=rows))
        con.execute(f"COPY ({sql}) TO '{csv_path}' (FORMAT CSV, HEADER)")
        print(
            f"generated the same rows as a Logs-blade CSV in {time.perf_counter() - started:.1f} s: "
            f"{csv_path.stat().st_size / 2**20:,.0f} MiB"
        )
        files["csv"] = csv_path
    if "parquet" in formats:
        parquet = directory / "EmailEvents.parquet"
        started = time.perf_counter()
        con.execute(f"COPY (SELECT * FROM read_json('{jsonl}')) TO '{parquet}' (FORMAT PARQUET)")  # noqa: S608 - our own temp paths
        print(
            f"converted the JSON lines to Parquet in {time.perf_counter() - started:.1f} s: "
            f"{parquet.stat().st_size / 2**20:,.0f} MiB"
        )
        files["parquet"] = parquet
    con.close()
    return files


def generated(rows: int, directory: Path, formats: list[str]) -> dict[str, Path]:
    """`generate` in a child process. A child's peak RSS (ru_maxrss) starts from its parent's at the fork: had
    this process generated the files (DuckDB holding a million rows), every hunt measured after would report
    at least this process's size then (~640-730 MiB: a 340 MiB Parquet hunt was shown at that)."""
    command = [sys.executable, __file__, "--rows", str(rows), "--formats", ",".join(formats)]
    subprocess.run([*command, "--generate-into", str(directory)], check=True)
    names = {"jsonl": "EmailEvents.jsonl", "csv": "EmailEvents.csv", "parquet": "EmailEvents.parquet"}
    return {"jsonl": directory / names["jsonl"], **{f: directory / names[f] for f in formats if f in names}}


def baseline_tree(revision: str, directory: Path) -> Path | None:
    """`revision`'s shared/ extracted under `directory` (None when the revision is unknown, e.g. a shallow clone)."""
    target = directory / "baseline"
    target.mkdir()
    git = shutil.which("git")
    if git is None:
        print("baseline: git not found")
        return None
    archive = subprocess.run(
        [git, "archive", "--format=tar", revision, "shared"], cwd=ROOT, capture_output=True, check=False
    )
    if archive.returncode != 0:
        print(f"baseline {revision}: not available ({archive.stderr.decode(errors='replace').strip()[:200]})")
        return None
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target


def hunt(
    path: Path, directory: Path, code: Path | None = None, rule: Path = RULE, cache: Path | None = None
) -> dict[str, float | str]:
    """Run `kqlwatch hunt` in a child process: its figures from the footer, its own peak RSS from wait4. With
    `code`, the `shared/` package found there runs instead of this checkout's; `cache` is its translation cache."""
    out_path, err_path = directory / "hunt.out", directory / "hunt.err"
    command = [str(KQLWATCH)]
    env = dict(os.environ)
    if cache is not None:
        env["KQLWATCH_CACHE_DIR"] = str(cache)
    if code is not None:
        command = [sys.executable, "-c", "import sys; from shared.workbench.cli import main; sys.exit(main())"]
        env["PYTHONPATH"] = str(code)
    started = time.perf_counter()
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            [*command, "hunt", str(rule.resolve()), "--data", f"EmailEvents={path}", "--format", "jsonl"],
            stdout=out,
            stderr=err,
            cwd=code or ROOT,
            env=env,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    stderr = err_path.read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        sys.exit(f"kqlwatch hunt failed ({proc.returncode}): {stderr.strip()[-2000:]}")
    match = FOOTER.search(stderr)
    if not match:
        sys.exit(f"no footer in kqlwatch hunt's output: {stderr.strip()[-2000:]}")
    # The rows are the JSON-object lines; anything else on stdout (main's DuckDB progress bar, drawn during a
    # statement over 2 s) is counted apart, so the rows of two loaders compare even when one adds such text.
    # Sorted: a query without `sort` (a summarize's groups) returns its rows in no fixed order.
    rows: list[bytes] = []
    stray = 0
    with out_path.open("rb") as produced:
        for line in produced:
            start = line.find(b'{"')  # a row may follow the bar on its line (the bar ends in \r, not \n)
            stray += start != 0
            if start >= 0:
                rows.append(line[start:].rstrip(b"\n"))
    lines = len(rows)
    digest = hashlib.sha256(b"\n".join(sorted(rows)))
    return {
        "sha256": digest.hexdigest(),
        "rows": float(match.group(1).replace(",", "")),
        "load": float(match.group(2)),
        "query": float(match.group(3)),
        "total": float(match.group(4)),
        "wall": wall,
        "peak_mib": usage.ru_maxrss / 1024,  # KiB on Linux
        "output_lines": float(lines),
        "stray_lines": float(stray),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to generate (default 1,000,000)")
    parser.add_argument("--formats", default="jsonl,csv,parquet", help="inputs to time (default jsonl,csv,parquet)")
    parser.add_argument("--baseline", default="main", help="git revision whose loader is timed too ('none': skip)")
    parser.add_argument("--rule", type=Path, default=RULE, help="the rule to hunt with (default: the seed rule)")
    parser.add_argument("--keep", type=Path, help="write the files here and keep them (default: a temp folder)")
    parser.add_argument("--write", action="store_true", help="also write the figures into docs/benchmarks.md")
    parser.add_argument("--generate-into", type=Path, help=argparse.SUPPRESS)  # the generating child's job
    args = parser.parse_args()
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if args.generate_into is not None:
        generate(args.rows, args.generate_into, formats)
        return 0
    if not KQLWATCH.exists():
        sys.exit(f"{KQLWATCH} not found: run scripts/setup.sh first")
    with tempfile.TemporaryDirectory(prefix="kqlwatch-bench-") as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        files = generated(args.rows, directory, formats)
        base = baseline_tree(args.baseline, Path(tmp)) if args.baseline != "none" else None
        results: list[tuple[str, str, dict[str, float | str]]] = []
        for fmt in formats:
            cache = Path(tmp) / f"cache-{fmt}"  # this checkout's own, empty before its first hunt of the file
            runs: list[tuple[str, Path | None, Path | None]] = [("this, first hunt", None, cache)]
            runs.append(("this, again", None, cache))
            if base is not None:  # main reads Parquet too (issue 17)
                runs.append((args.baseline, base, None))
            for label, code, cache_dir in runs:
                figures = hunt(files[fmt], directory, code, args.rule, cache_dir)
                results.append((fmt, label, figures))
                print(
                    f"kqlwatch hunt ({fmt:7} {label:>16}): {figures['rows']:,.0f} rows out of {args.rows:,}; "
                    f"load {figures['load']:.2f} s, query {figures['query']:.2f} s, "
                    f"command {figures['total']:.2f} s, wall (with start-up) {figures['wall']:.2f} s, "
                    f"peak RSS {figures['peak_mib']:,.0f} MiB; rows sha256 {str(figures['sha256'])[:12]}, "
                    f"{figures['stray_lines']:.0f} other line(s) on stdout"
                )
        sizes = {fmt: files[fmt].stat().st_size for fmt in formats}
    # Within a format every run must write the same rows; across formats as many (the CSV's times carry
    # milliseconds only, as the Logs blade exports them, so its bytes differ from the JSON lines').
    same = all(len({str(r[2]["sha256"]) for r in results if r[0] == fmt}) == 1 for fmt in formats)
    same = same and len({r[2]["rows"] for r in results}) == 1
    body = summary(args, results, sizes, same)
    stem = args.rule.resolve().stem
    _stand.report("hunt_1m" if args.rule.resolve() == RULE else f"hunt_1m-{stem}", body, write=args.write)
    if not same:
        print("MISMATCH: the runs returned different rows")
        return 1
    return 0


_NAMES = {"jsonl": "JSON lines", "csv": "Logs-blade CSV", "parquet": "Parquet"}


def summary(
    args: argparse.Namespace, results: list[tuple[str, str, dict[str, float | str]]], sizes: dict[str, int], same: bool
) -> str:
    """The figures as a Markdown table, with the machine's load (every figure moves with it)."""
    rows = [
        [
            _NAMES.get(fmt, fmt),
            f"{sizes[fmt] / 2**20:,.0f} MiB",
            label,
            f"{figures['load']:.2f} s",
            f"{figures['query']:.2f} s",
            f"{figures['total']:.2f} s",
            f"**{figures['wall']:.2f} s**",
            f"{figures['peak_mib']:,.0f} MiB",
            f"{figures['stray_lines']:,.0f}",
        ]
        for fmt, label, figures in results
    ]
    headers = ["input", "file size", "loader", "load", "query", "command", "whole command (wall)", "peak RSS"]
    headers.append("non-row lines on stdout")
    count = results[0][2]["rows"] if results else 0
    verdict = "Every run returned the same" if same else "MISMATCH between the runs:"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"`kqlwatch hunt {args.rule.name}` over {args.rows:,} generated EmailEvents rows, each run in its own "
        f"child process; load average {load} at the end.\n\n"
        + _stand.table(headers, rows)
        + f"\n\n{verdict} {float(count):,.0f} rows (the same JSON-lines rows, byte for byte, from every run over one file)."
    )


if __name__ == "__main__":
    raise SystemExit(main())

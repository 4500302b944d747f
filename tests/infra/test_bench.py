"""Smoke runs of the benchmarks in bench/: each script, at its smallest size, exits 0 and prints its figures.
These are not timed tests (the figures themselves are in docs/benchmarks.md); they keep the scripts working.
Without --write a script must leave docs/benchmarks.md and bench/results/ alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "bench" / "results"

SMOKE = {
    "cold_start.py": (
        ["--samples", "1", "--top", "3"],
        ["import function_app + get_functions()", "Goal: under 150 ms", "SDK modules loaded by `import function_app`"],
    ),
    "idle_run.py": (
        ["--rules", "1", "--runs", "1", "--stored-hits", "0", "--rows", "20"],
        ["LA queries/rule", "state ops/rule", "own time/rule", "1 query per rule"],
    ),
    "burst.py": (
        ["--sizes", "30", "--baseline-sample", "10"],
        ["kqlwatch wall", "baseline round-trips", "waiting on Azurite", "hits really processed"],
    ),
    "timeliness.py": (
        ["--events", "300"],
        [
            "kqlwatch, 1-min schedule",
            "kqlwatch, 5-min schedule",
            "Sentinel-style scheduled rule",
            "NRT-style rule",
            "p95",
            "0 duplicates",
        ],
    ),
    "cost.py": ([], ["executions/month", "GB-s/month", "scanned per rule-run", "Basic plan"]),
    "hunt_1m.py": (["--rows", "10000"], ["kqlwatch hunt"]),
    "fanout.py": (
        ["--rules", "2", "--latency", "0", "--workers", "1", "--skip-sequential"],
        ["concurrent", "1 queue worker(s)", "most queries at once", "idle state operations per rule"],
    ),
}


def _state() -> tuple[float | None, list[str]]:
    mtime = DOC.stat().st_mtime if DOC.exists() else None
    results = sorted(p.name + str(p.stat().st_mtime) for p in RESULTS.glob("*.json")) if RESULTS.exists() else []
    return mtime, results


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_runs_at_its_smallest_size_and_prints_its_figures(script: str) -> None:
    args, expected = SMOKE[script]
    before = _state()
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for text in expected:
        assert text in done.stdout, f"{script} did not print {text!r}:\n{done.stdout[-3000:]}"
    assert _state() == before, f"{script} without --write changed docs/benchmarks.md or bench/results/"

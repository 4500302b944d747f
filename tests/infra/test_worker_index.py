"""Issue 14, point 5: function_app.py as the real Python worker indexes it. `app.get_functions()` (Python 3.11,
what the other tests use) accepts annotations the worker refuses, e.g. `func.Out[list[str]]`: here the worker's own
indexer (azure-functions-runtime, Python >= 3.13 only) runs in a throwaway venv, `.venv-worker/` (created once,
kept until requirements-worker.txt changes), and the exact bindings JSON of every function is asserted.

Skipped, with the reason, where no Python 3.13 is found (pyenv's, or python3.13 on PATH) or the venv cannot be
installed (no package index)."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-worker"
REQUIREMENTS = ROOT / "requirements-worker.txt"
INDEXER = Path(__file__).with_name("worker_index.py")

EXPECTED = {
    "dispatch": [
        {
            "connection": "KQLWATCH_QUEUE_CONNECTION",
            "direction": "OUT",
            "name": "runs",
            "queueName": "kqlwatch-runs",
            "type": "queue",
        },
        {
            "direction": "IN",
            "name": "timer",
            "runOnStartup": False,
            "schedule": "%KQLWATCH_SCHEDULE%",
            "type": "timerTrigger",
            "useMonitor": True,
        },
    ],
    "run_rule": [
        {
            "connection": "KQLWATCH_QUEUE_CONNECTION",
            "direction": "IN",
            "name": "message",
            "queueName": "kqlwatch-runs",
            "type": "queueTrigger",
        }
    ],
    "run_rule_poison": [
        {
            "connection": "KQLWATCH_QUEUE_CONNECTION",
            "direction": "IN",
            "name": "message",
            "queueName": "kqlwatch-runs-poison",
            "type": "queueTrigger",
        }
    ],
}


def python313() -> str | None:
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[3-9]*/bin/python3")), reverse=True)
    return found[0] if found else shutil.which("python3.13")


@pytest.fixture(scope="module")
def worker_python() -> Path:
    base = python313()
    if base is None:
        pytest.skip("no Python 3.13 (pyenv's or python3.13 on PATH): the real worker's indexer needs it")
    python = VENV / "bin" / "python"
    stamp = VENV / ".kqlwatch-installed"
    want = hashlib.sha256(REQUIREMENTS.read_bytes() + base.encode()).hexdigest()
    if not python.exists() or not stamp.exists() or stamp.read_text() != want:
        shutil.rmtree(VENV, ignore_errors=True)
        steps = [
            [base, "-m", "venv", str(VENV)],
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=600, check=False)
            if done.returncode != 0:
                shutil.rmtree(VENV, ignore_errors=True)
                pytest.skip(f"cannot install the worker's indexer ({' '.join(step[-2:])}): {done.stderr[-300:]}")
        stamp.write_text(want)
    return python


def index(python: Path, app_dir: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(python), "-s", str(INDEXER), str(app_dir), str(app_dir / "function_app.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_the_real_worker_indexes_every_function_with_these_exact_bindings(worker_python: Path) -> None:
    assert index(worker_python, ROOT) == EXPECTED


def test_the_real_worker_refuses_a_builtin_generic_out_annotation(worker_python: Path, tmp_path: Path) -> None:
    """What get_functions() lets through: func.Out[list[str]]. Proof that the test above can fail."""
    source = (ROOT / "function_app.py").read_text(encoding="utf-8")
    assert "func.Out[typing.List[str]]" in source
    (tmp_path / "function_app.py").write_text(source.replace("typing.List[str]", "list[str]"), encoding="utf-8")
    result = index(worker_python, tmp_path)
    assert "error" in result and "invalid non-type annotation" in result["error"] and "runs" in result["error"]

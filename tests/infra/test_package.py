"""The deployed package holds only what the Function needs, and that is enough to run it.

Builds the package as Core Tools does (the git-tracked files minus the `.funcignore` patterns, which use gitignore
syntax: git itself matches them here), installs ONLY requirements.txt (+ constraints.txt) into a fresh venv, then
imports function_app and every module left in the package. A module that needs the workbench, a stand-in or a
dev-only library fails here instead of in Azure at the first timer run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

IMPORT_ALL = """
import importlib, json, pathlib, sys
names = ["function_app"] + sorted(
    ".".join(p.with_suffix("").parts[:-1] if p.name == "__init__.py" else p.with_suffix("").parts)
    for p in pathlib.Path("shared").rglob("*.py"))
for name in names:
    importlib.import_module(name)
import function_app
print(json.dumps({"modules": names, "functions": [f.get_function_name() for f in function_app.app.get_functions()]}))
"""


def packaged_files(root: Path, scratch: Path) -> list[str]:
    """Tracked files not matched by .funcignore (matched by git, in an empty repo so .gitignore plays no part)."""
    git = shutil.which("git")
    assert git, "the package test needs git (Core Tools packs what git tracks)"
    tracked = subprocess.run([git, "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    paths = [p for p in tracked.decode().split("\0") if p]
    matcher = scratch / "matcher"
    subprocess.run([git, "init", "-q", str(matcher)], check=True)
    ignored = subprocess.run(
        [git, "-c", f"core.excludesFile={root / '.funcignore'}", "check-ignore", "--no-index", "--stdin", "-z"],
        cwd=matcher,
        input="\0".join(paths).encode(),
        capture_output=True,
        check=False,
    )
    assert ignored.returncode in (0, 1), ignored.stderr  # 1: nothing ignored
    dropped = {p for p in ignored.stdout.decode().split("\0") if p}
    return [p for p in paths if p not in dropped]


@pytest.mark.slow
def test_the_package_imports_with_only_requirements_txt(tmp_path: Path) -> None:
    files = packaged_files(ROOT, tmp_path)
    assert "function_app.py" in files and "requirements.txt" in files and "host.json" in files
    assert not [f for f in files if f.startswith(("shared/workbench/", "shared/standins/", "tests/", "bench/"))]
    assert [f for f in files if f.startswith("rules/")]  # the rules are deployed with the code
    package = tmp_path / "package"
    for name in files:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, package / name)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # pip as scripts/setup.sh runs it (this machine's pip configuration: its indexes and wheel folder).
    install = [
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-r",
        "requirements.txt",
        "-c",
        "constraints.txt",
    ]
    # Not the Log Analytics stand-in's CA (tests set REQUESTS_CA_BUNDLE for it): pip must trust the package index.
    pip_env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")}
    done = subprocess.run(install, cwd=package, capture_output=True, text=True, timeout=600, check=False, env=pip_env)
    assert done.returncode == 0, done.stderr[-2000:]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    # -s: no user site-packages; `-c` puts the package folder (cwd) first on sys.path, as the Functions host does.
    run = subprocess.run(
        [str(python), "-s", "-c", IMPORT_ALL],
        cwd=package,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert "shared.runtime.detector" in result["modules"] and "shared.rules.loader" in result["modules"]
    assert result["functions"] == ["dispatch", "run_rule", "run_rule_poison"]

"""The house rules of shared/: dependencies run one way, and `kqlwatch --help` stays off the runtime.

rules <- runtime <- workbench / standins: the rules room imports neither the runtime nor the workbench nor the
stand-ins; the runtime imports neither the workbench nor the stand-ins; the leaves (errors, schemas) import nothing
of kqlwatch. Imports are read with `ast`, so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT / "shared"

# room -> rooms it must never import
FORBIDDEN = {
    "shared.rules": ("shared.runtime", "shared.workbench", "shared.standins"),
    "shared.runtime": ("shared.workbench", "shared.standins"),
    "shared.errors": ("shared.",),
    "shared.schemas": ("shared.",),
}
# The stand-ins serve the offline KQL engine (one home, in the workbench); nothing else of the workbench.
STANDINS_MAY_USE = ("shared.workbench.engine",)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SHARED.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported kqlwatch module, imported at module level) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set(map(id, tree.body))
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in known:
                found.append((name, id(node) in top))
    return found


def test_dependencies_run_one_way() -> None:
    found = modules()
    known = set(found)
    wrong = []
    for name, path in found.items():
        for imported, _ in imports(path, known):
            for room, banned in FORBIDDEN.items():
                if (name == room or name.startswith(room + ".")) and imported.startswith(banned):
                    wrong.append(f"{name} imports {imported}")
            in_workbench = imported.startswith("shared.workbench")
            if name.startswith("shared.standins") and in_workbench and imported not in STANDINS_MAY_USE:
                wrong.append(f"{name} imports {imported}")
    assert wrong == []
    assert {"shared.rules.loader", "shared.rules.prepare", "shared.runtime.detector", "shared.workbench.cli"} <= known


def test_no_import_cycles_at_module_level() -> None:
    found = modules()
    known = set(found)
    graph = {name: {i for i, top in imports(path, known) if top and i != name} for name, path in found.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


HELP_PROBE = """
import json, sys
from shared.workbench.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def test_kqlwatch_help_imports_neither_the_runtime_nor_the_sdks() -> None:
    done = subprocess.run(
        [sys.executable, "-c", HELP_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(done.stdout.splitlines()[-1])
    heavy = [m for m in loaded if m.startswith(("shared.runtime", "shared.standins", "azure", "requests", "duckdb"))]
    assert heavy == []
    assert "shared.workbench.cli" in loaded and "usage: kqlwatch" in done.stdout


def test_tests_resolve_loopback_only() -> None:
    """The guard in tests/conftest.py: a name off this machine never reaches the system resolver."""
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("kqlwatch-no-such-host.invalid", 443)
    assert socket.getaddrinfo("127.0.0.1", 443)


def test_the_unit_tier_imports_no_stand_in() -> None:
    """tests/unit/ runs without a stand-in: it never imports one, nor the fixtures in tests/conftest.py (which
    start them); its fixed inputs come from tests.paths."""
    known = set(modules()) | {"tests.conftest", "tests.paths"}
    for path in sorted((ROOT / "tests" / "unit").glob("test_*.py")):
        for name, _ in imports(path, known):
            assert not name.startswith(("shared.standins", "tests.conftest")), (path.name, name)

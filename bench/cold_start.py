"""Cold start: time to `import function_app` and index its functions (`function_app.app.get_functions()`) in a
fresh interpreter, one subprocess per sample; side by side with the same after importing every SDK eagerly (what
it would cost if shared/ imported them at module level), and what the first timer run then pays for its deferred
imports (`import shared.runner`).

    .venv/bin/python bench/cold_start.py                 # 10 samples of each
    .venv/bin/python bench/cold_start.py --samples 2     # smoke size
    .venv/bin/python bench/cold_start.py --write         # also update docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import _stand  # noqa: E402

GOAL_MS = 150.0
SDKS = ("azure.monitor.query", "azure.data.tables", "azure.identity", "requests", "yaml", "shared.detector")
_NOT_OURS = {"site", "encodings", "os", "__editable___kqlwatch_0_1_0_finder"}  # interpreter start-up, not the app
_EAGER = "import azure.monitor.query, azure.data.tables, azure.identity, requests, yaml, shared.detector\n"
_CHILD = """
import json, sys, time
t0 = time.perf_counter()
{eager}t1 = time.perf_counter()
import function_app
functions = function_app.app.get_functions()
t2 = time.perf_counter()
loaded = [m for m in {sdks!r} if m in sys.modules]
import shared.runner
t3 = time.perf_counter()
import azure.monitor.query, azure.data.tables, azure.identity  # what building the clients imports on a first run
t4 = time.perf_counter()
print(json.dumps({{"sdk": t1 - t0, "index": t2 - t0, "functions": len(functions), "loaded": loaded,
                   "first_run_imports": t3 - t2, "first_run_sdks": t4 - t3}}))
"""


def sample(eager: bool) -> dict[str, object]:
    code = _CHILD.format(eager=_EAGER if eager else "", sdks=SDKS)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process"] = wall
    return result


def slowest_imports(top: int) -> list[tuple[str, float]]:
    """`python -X importtime -c 'import function_app'`: the modules with the largest cumulative import time."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import function_app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rows: list[tuple[str, float]] = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            depth = len(name) - len(name.lstrip())
            if depth <= 9 and name.strip() not in _NOT_OURS:  # function_app's imports, four levels down
                rows.append((name.strip(), int(parts[1]) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10, help="fresh interpreters per variant (default 10)")
    parser.add_argument("--top", type=int, default=6, help="slowest imports to list (0: none)")
    parser.add_argument("--write", action="store_true", help="also write the figures into docs/benchmarks.md")
    args = parser.parse_args(argv)

    sample(False)  # warm the OS file cache and __pycache__ so every measured sample sees the same disk state
    lazy, eager = [], []
    for _ in range(args.samples):  # interleaved, so drift on the machine hits both alike
        lazy.append(sample(False))
        eager.append(sample(True))

    def med(results: list[dict[str, object]], key: str) -> float:
        return _stand.median([float(r[key]) for r in results])  # type: ignore[arg-type]

    lazy_index, eager_index = med(lazy, "index"), med(eager, "index")
    loaded = sorted({m for r in lazy for m in r["loaded"]})  # type: ignore[attr-defined]
    rows = [
        ["import function_app + get_functions()", f"{lazy_index * 1000:.0f} ms", f"{eager_index * 1000:.0f} ms"],
        ["of which SDK imports forced first", "-", f"{med(eager, 'sdk') * 1000:.0f} ms"],
        [
            "whole process: interpreter start, indexing, then the first run's imports",
            f"{med(lazy, 'process') * 1000:.0f} ms",
            f"{med(eager, 'process') * 1000:.0f} ms",
        ],
        [
            "first timer run: deferred `import shared.runner`",
            f"{med(lazy, 'first_run_imports') * 1000:.0f} ms",
            f"{med(eager, 'first_run_imports') * 1000:.0f} ms",
        ],
        [
            "first timer run: then the SDKs its clients import (monitor.query, data.tables, identity)",
            f"{med(lazy, 'first_run_sdks') * 1000:.0f} ms",
            f"{med(eager, 'first_run_sdks') * 1000:.0f} ms",
        ],
        ["functions indexed", str(lazy[0]["functions"]), str(eager[0]["functions"])],
    ]
    verdict = "met" if lazy_index * 1000 < GOAL_MS and not loaded else "MISSED"
    body = [
        f"Median of {args.samples} fresh interpreters per column (interleaved; .pyc files present).",
        "",
        _stand.table(["", "as shipped (SDKs deferred)", "SDKs imported eagerly"], rows),
        "",
        f"SDK modules loaded by `import function_app` as shipped: {', '.join(loaded) if loaded else 'none'}.",
        f"Goal: under {GOAL_MS:.0f} ms with SDK imports deferred to first use - **{verdict}** "
        f"({lazy_index * 1000:.0f} ms; eager would cost {(eager_index - lazy_index) * 1000:+.0f} ms).",
    ]
    if args.top:
        body += [
            "",
            "Slowest imports under `import function_app` (`python -X importtime`, cumulative; the tracing "
            "inflates them):",
            "",
        ]
        body.append(
            _stand.table(
                ["module", "cumulative"],
                [[f"`{name}`", f"{sec * 1000:.0f} ms"] for name, sec in slowest_imports(args.top)],
            )
        )
    _stand.report("cold_start", "\n".join(body), write=args.write)
    if args.write:
        _stand.save_json(
            "cold_start",
            {
                "samples": args.samples,
                "index_ms": lazy_index * 1000,
                "eager_index_ms": eager_index * 1000,
                "loaded": loaded,
                "first_run_imports_ms": med(lazy, "first_run_imports") * 1000,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

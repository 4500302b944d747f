"""Shared plumbing for the benchmarks: a Detector wired to the local stand-ins through counting and timing
proxies, running in a child process of its own, and writing figures into docs/benchmarks.md.

What the proxies measure, per kind of call: how many round-trips, their wall time, and the CPU time our process
spent inside them (SDK serialisation, TLS, JSON parsing: our own cost). wall - CPU is time spent waiting on the
stand-in. The stand-ins (Log Analytics, webhook receiver: the parent process; Azurite: node) never share the
detector's process, so its CPU time is ours alone.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shared.runtime.detector import Detector  # noqa: E402
from shared.runtime.loganalytics import LogsClient, QueryResult, StaticTokenCredential  # noqa: E402
from shared.runtime.runlease import RunLeases  # noqa: E402
from shared.runtime.settings import Settings, load_settings  # noqa: E402
from shared.runtime.store import StateStore, connect  # noqa: E402
from shared.runtime.teams import PostResult, TeamsClient  # noqa: E402
from shared.standins._http import Request, Response  # noqa: E402
from shared.standins.rows import email_row  # noqa: E402
from shared.standins.teams import WebhookReceiver  # noqa: E402

SEED_RULE = ROOT / "rules" / "accepted-domain-dmarc-temperror.yaml"
WORKSPACE = "11111111-2222-3333-4444-555555555555"
DOC = ROOT / "docs" / "benchmarks.md"

# The Table Storage calls StateStore makes (and the ones it could make), each one HTTP round-trip.
TABLE_OPS = (
    "submit_transaction",
    "create_entity",
    "update_entity",
    "upsert_entity",
    "create_table",
    "get_entity",
    "delete_entity",
)


# --- timing -------------------------------------------------------------------------------------------------


@dataclass
class Meter:
    count: int = 0
    wall: float = 0.0
    cpu: float = 0.0

    @property
    def wait(self) -> float:
        return max(self.wall - self.cpu, 0.0)


@dataclass
class Meters:
    by_name: dict[str, Meter] = field(default_factory=lambda: defaultdict(Meter))
    # The process's CPU time: right when the stand-ins run in other processes (the benchmarks run the detector in
    # a child of its own), and it includes the worker threads azure-core starts to encode a batch transaction.
    cpu_clock: Callable[[], float] = time.process_time

    # Each measurement's (start, end): with rules run side by side, waits summed over threads exceed the wall
    # time; `busy` is the wall time during which at least one of them was under way.
    spans: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))

    @contextmanager
    def measure(self, name: str, *, count: bool = True) -> Iterator[None]:
        wall, cpu = time.perf_counter(), self.cpu_clock()
        try:
            yield
        finally:
            end = time.perf_counter()
            meter = self.by_name[name]
            meter.wall += end - wall
            meter.cpu += self.cpu_clock() - cpu
            meter.count += 1 if count else 0
            self.spans[name].append((wall, end))  # list.append is atomic: safe from the rules' threads

    def busy(self, *prefixes: str) -> float:
        """Wall time during which at least one measurement of these prefixes was under way (overlaps once)."""
        spans = sorted(s for name, found in list(self.spans.items()) if name.startswith(prefixes) for s in found)
        total, reach = 0.0, float("-inf")
        for start, end in spans:
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return total

    def total(self, prefix: str) -> Meter:
        out = Meter()
        for name, meter in self.by_name.items():
            if name.startswith(prefix):
                out.count += meter.count
                out.wall += meter.wall
                out.cpu += meter.cpu
        return out

    def counts(self, prefix: str) -> dict[str, int]:
        return {
            name.removeprefix(prefix): m.count
            for name, m in sorted(self.by_name.items())
            if name.startswith(prefix) and m.count
        }

    def reset(self) -> None:
        self.by_name.clear()
        self.spans.clear()

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {k: {"count": v.count, "wall": v.wall, "cpu": v.cpu} for k, v in self.by_name.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, float]]) -> Meters:
        meters = cls()
        for name, m in data.items():
            meters.by_name[name] = Meter(int(m["count"]), float(m["wall"]), float(m["cpu"]))
        return meters


class CountingTable:
    """The real TableClient; every round-trip counted and timed (query_entities: one per page fetched)."""

    def __init__(self, real: Any, meters: Meters) -> None:
        self._real = real
        self._meters = meters

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if name not in TABLE_OPS:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            entities = self._meters.by_name["entities.table"]  # entities read or written, for the estimates
            if name == "submit_transaction" and args:
                operations = list(args[0])
                args = (operations, *args[1:])
                entities.count += len(operations)
            elif name != "create_table":
                entities.count += 1
            with self._meters.measure(f"table.{name}"):
                return attr(*args, **kwargs)

        return call

    def query_entities(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        pages = self._real.query_entities(*args, **kwargs).by_page()
        while True:
            with self._meters.measure("table.query_page", count=False):
                page = next(pages, None)
                if page is not None:
                    page = list(page)
            if page is None:
                return
            self._meters.by_name["table.query_page"].count += 1
            yield from page


class CountingLogs:
    def __init__(self, real: LogsClient, meters: Meters) -> None:
        self._real = real
        self._meters = meters

    def query(
        self,
        workspace_id: str,
        query: str,
        start: datetime,
        end: datetime,
        *,
        additional_workspaces: Sequence[str] = (),
    ) -> QueryResult:
        with self._meters.measure("la.query"):
            return self._real.query(workspace_id, query, start, end, additional_workspaces=additional_workspaces)

    def close(self) -> None:
        self._real.close()


class MeteredTeams(TeamsClient):
    """The real TeamsClient; posts timed, and the deliberate spacing between posts (sleep) timed apart."""

    def __init__(self, meters: Meters, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._meters = meters

    def post(self, url: str, payload: Mapping[str, Any]) -> PostResult:
        with self._meters.measure("hook.post"):
            return super().post(url, payload)

    def _space(self, url: str) -> Any:
        with self._meters.measure("hook.spacing"):
            return super()._space(url)


class TimedReceiver(WebhookReceiver):
    """The stand-in webhook, noting when each accepted post arrived (monotonic seconds). Apart from the base's
    `arrivals`, which note every request: sharing that dict counted each accepted post twice."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted: dict[str, list[float]] = defaultdict(list)
        self._times_lock = threading.Lock()

    def _handle(self, request: Request) -> Response:
        response = super()._handle(request)
        if 200 <= response.status < 300:
            name = request.path.split("/")[2] if request.path.count("/") > 1 else ""
            with self._times_lock:
                self.accepted[name].append(time.monotonic())
        return response

    def __enter__(self) -> TimedReceiver:
        self.start()
        return self

    def clear_arrivals(self) -> None:
        with self._times_lock:
            self.accepted.clear()


def run_child(script: str, mode: str, config: Mapping[str, Any]) -> Any:
    """Run `script --child MODE` with `config` (JSON) on stdin; its last stdout line is its JSON result."""
    done = subprocess.run(
        [sys.executable, script, "--child", mode],
        input=json.dumps(config, default=str),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"{mode} child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_memory_mb() -> tuple[float, float]:
    """This process's peak resident memory: ru_maxrss and /proc VmHWM, in MiB."""
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    hwm = 0.0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    except OSError:
        pass
    return maxrss, hwm


def warm_up(la_endpoint: str, token: str) -> None:
    """One query, so the stand-in's one-off start-up (its KQL engine's import) is not charged to a measurement."""
    client = LogsClient(la_endpoint, StaticTokenCredential(token))
    try:
        now = datetime.now(timezone.utc)
        client.query(WORKSPACE, "EmailEvents | take 1", now - timedelta(hours=1), now)
    finally:
        client.close()


def max_per_second(times: list[float], window: float = 1.0) -> int:
    """The most posts that arrived within any `window` seconds."""
    ordered = sorted(times)
    best, first = 0, 0
    for last, t in enumerate(ordered):
        while t - ordered[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


# --- the stand-ins ------------------------------------------------------------------------------------------


def rules_dir(directory: Path, count: int = 1) -> Path:
    """`count` copies of the seed rule (each with its own id and name) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    text = SEED_RULE.read_text(encoding="utf-8")
    seed_id = re.search(r"^id: (\S+)$", text, re.M)
    assert seed_id is not None
    for index in range(count):
        body = text
        if index:
            body = body.replace(seed_id.group(1), str(uuid.UUID(int=index + 1)), 1)
            body = re.sub(r"^name: (.*)$", rf"name: \1 ({index + 1})", body, count=1, flags=re.M)
        (directory / f"rule-{index:03d}.yaml").write_text(body, encoding="utf-8")
    return directory


def email(now: datetime, **fields: Any) -> dict[str, Any]:
    """An EmailEvents row the seed rule matches (unless fields say otherwise), generated 15 minutes before `now`."""
    return email_row(now - timedelta(minutes=15), **fields)


def quiet_email(when: datetime, index: int) -> dict[str, Any]:
    """Ordinary mail the seed rule does not match (passes SPF/DMARC): what an idle run reads past."""
    return email_row(
        when,
        AuthenticationDetails='{"SPF":"pass","DKIM":"pass","DMARC":"pass","CompAuth":"pass"}',
        SenderMailFromDomain="fabrikam-partner.example",
        RecipientEmailAddress=f"user{index}@contoso.com",
    )


def env_for(
    *, la_endpoint: str, token: str, connection: str, webhook: str, rules: Path, table: str | None = None
) -> dict[str, str]:
    return {
        "KQLWATCH_WORKSPACE_ID": WORKSPACE,
        "KQLWATCH_LOGS_ENDPOINT": la_endpoint,
        "KQLWATCH_ACCESS_TOKEN": token,
        "KQLWATCH_STATE_CONNECTION": connection,
        "KQLWATCH_STATE_TABLE": table or "b" + uuid.uuid4().hex[:20],
        "KQLWATCH_TEAMS_WEBHOOK_URL": webhook,
        "KQLWATCH_RULES_DIR": str(rules),
    }


def wire(
    settings: Settings,
    meters: Meters,
    *,
    clock: Callable[[], datetime] | None = None,
    min_interval: float | None = None,
) -> Detector:
    """A Detector with the real clients (the Function's own settings: retries, timeouts, post spacing), each
    behind a counting proxy."""
    logs = CountingLogs(LogsClient(settings.logs_endpoint, StaticTokenCredential(settings.access_token or "")), meters)
    table = CountingTable(connect(settings.state_connection, settings.state_table), meters)
    store = StateStore(table)  # type: ignore[arg-type]  # a transparent proxy of TableClient
    teams = MeteredTeams(meters) if min_interval is None else MeteredTeams(meters, min_interval=min_interval)
    # Issue 14: the run lease, as the Function wires it (its own client on the same table), counted too.
    leases = RunLeases(CountingTable(connect(settings.state_connection, settings.state_table), meters))  # type: ignore[arg-type]
    if clock is None:
        return Detector(settings, logs=logs, store=store, teams=teams, leases=leases)
    return Detector(settings, logs=logs, store=store, teams=teams, clock=clock, leases=leases)


def close(detector: Detector) -> None:
    for client in (detector.logs, detector.store, detector.teams, detector.leases):
        closer = getattr(client, "close", None)
        if closer is not None:
            closer()


def settings_from(env: Mapping[str, str]) -> Settings:
    return load_settings(env)


# --- reporting ----------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    node = shutil.which("node")
    node_version = ""
    if node:
        node_version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": str(os.cpu_count() or "?"),
        "cpu": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB" if mem_kb else "?",
        "python": platform.python_version(),
        "node": node_version or "?",
        "os": f"{platform.system()} {platform.release()}",
    }


def machine_line() -> str:
    m = machine()
    return (
        f"{m['date']}; {m['cpus']} CPUs ({m['cpu']}), {m['memory']} RAM; Python {m['python']}, "
        f"Node {m['node']}; {m['os']}"
    )


def command_line() -> str:
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(ROOT))
    except ValueError:
        shown = str(script)
    return " ".join([".venv/bin/python", shown, *sys.argv[1:]])


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, path: Path = DOC) -> None:
    """Replace the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in docs/benchmarks.md."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def report(name: str, body: str, *, write: bool) -> None:
    """Print the figures; with --write also put them, with the machine and command, into docs/benchmarks.md."""
    header = f"Measured {machine_line()}.\nCommand: `{command_line()}`\n\n"
    print(header + body)
    if write:
        write_section(name, header + body)
        print(f"\n(written to {DOC.relative_to(ROOT)})")


def save_json(name: str, data: Any) -> Path:
    """Figures other scripts (cost.py) read: bench/results/NAME.json (written with --write only, like the doc)."""
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return out


def load_json(name: str) -> Any:
    path = ROOT / "bench" / "results" / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

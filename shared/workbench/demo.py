"""`kqlwatch demo`: the real detector, run twice on the bundled sample EmailEvents, through local stand-ins.

Starts Azurite, the HTTPS Log Analytics stand-in (serving samples/EmailEvents.jsonl, its 24 hours of mail
compressed into the last hour so the seed rule's window sees all of it) and a Teams receiver; runs the
detector; prints the cards it posted and writes an HTML preview rendered by Microsoft's `adaptivecards`
renderer; runs again to show nothing is posted twice; stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from shared.errors import EXIT_FAILED, EXIT_OK
from shared.rules.durations import parse_time

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "EmailEvents.jsonl"
DEMO_WORKSPACE = "00000000-0000-4000-8000-00000000de00"
DEMO_WORKSPACE_ARM = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/demo"
    "/providers/Microsoft.OperationalInsights/workspaces/demo"
)


def sample_rows(now: datetime, path: Path = SAMPLES) -> list[dict[str, Any]]:
    """The sample rows with their day of mail mapped onto the last 55 minutes (ingested a minute later)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    times = [_time(r["TimeGenerated"]) for r in rows]
    first, last = min(times), max(times)
    span = max((last - first).total_seconds(), 1.0)
    start = now - timedelta(minutes=57)
    for row, when in zip(rows, times, strict=True):
        moved = start + timedelta(minutes=55) * ((when - first).total_seconds() / span)
        row["TimeGenerated"] = row["Timestamp"] = moved
        row["_IngestedAt"] = moved + timedelta(minutes=1)
    return rows


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--out", type=Path, default=ROOT / "demo-output", help="where to write cards.html")
    parser.add_argument("--defender", action="store_true", help="run the seed rule on Defender XDR advanced "
                        "hunting (a local Microsoft Graph stand-in) instead of the workspace (issue 15)")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    with _stop_on_sigterm():
        try:
            return demo(args.out, defender=args.defender)
        except _Terminated:
            print("kqlwatch demo: stopped (SIGTERM); the stand-ins it started are stopped.", file=sys.stderr)
            return 128 + signal.SIGTERM


class _Terminated(BaseException):
    """SIGTERM arrived: unwind so every `with` (Azurite's subprocess, the servers) stops what it started.
    A BaseException, so the detector's per-rule `except Exception` cannot swallow it."""


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """By default SIGTERM kills Python without unwinding, leaving Azurite (a Node subprocess) running."""

    def handler(signum: int, frame: object) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def demo(out_dir: Path | None = None, stream: Any = None, *, defender: bool = False) -> int:
    # Imported here, not at the top: `kqlwatch --help` imports this module and must stay free of the runtime.
    from shared.runtime.loganalytics import StaticTokenCredential
    from shared.runtime.settings import load_settings
    from shared.runtime.wiring import Tuning, clients_for
    from shared.standins.azurite import Azurite
    from shared.standins.dns import DnsStandIn
    from shared.standins.loganalytics import LogAnalyticsStandIn
    from shared.standins.teams import WebhookReceiver

    out = stream or sys.stdout
    out_dir = out_dir or ROOT / "demo-output"
    now = datetime.now(timezone.utc)
    with ExitStack() as stack:
        print("Starting the local stand-ins: Azurite, Log Analytics (HTTPS), Teams receiver, DNS ...", file=out)
        azurite = stack.enter_context(Azurite())
        la = stack.enter_context(LogAnalyticsStandIn())
        hook = stack.enter_context(WebhookReceiver())
        # Issue 16: DNS evidence on the cards; contoso.com resolves, fabrikam.fr's name servers fail.
        dns_server = stack.enter_context(DnsStandIn())
        stack.enter_context(_env("REQUESTS_CA_BUNDLE", la.ca_file))
        rows = sample_rows(now)
        la.ingest("EmailEvents", rows)
        print(f"Serving {len(rows):,} sample EmailEvents rows from {SAMPLES.relative_to(ROOT)}", file=out)
        graph, extra = _defender_setup(stack, la, rows, now, out) if defender else (None, {})
        settings = load_settings(
            {
                "KQLWATCH_WORKSPACE_ID": DEMO_WORKSPACE,
                "KQLWATCH_WORKSPACE_RESOURCE_ID": DEMO_WORKSPACE_ARM,
                "KQLWATCH_LOGS_ENDPOINT": la.endpoint,
                "KQLWATCH_ACCESS_TOKEN": la.token,
                "KQLWATCH_STATE_CONNECTION": azurite.connection_string,
                "KQLWATCH_TEAMS_WEBHOOK_URL": hook.url("soc-channel"),
                "KQLWATCH_RULES_DIR": str(ROOT / "rules"),
                "KQLWATCH_DNS_SERVERS": dns_server.server,  # issue 16
                **{k: v for k, v in os.environ.items() if k.startswith("KQLWATCH_PARAM_")},
                **extra,
            }
        )
        clients = clients_for(
            settings, Tuning(teams={"min_interval": 0.05}, credential=StaticTokenCredential(la.token))
        )
        stack.callback(clients.close)
        return _two_runs(settings, clients, hook, out_dir, out, _seed_queries(la, graph))


def _seed_queries(la: Any, graph: Any) -> Any:
    """Issue 15: after run 1, where the seed rule's query went (None when the demo does not use Defender)."""
    if graph is None:
        return None
    # TriggerResults is the seed rule's own binding: no other rule's query has it.
    return lambda: (len(graph.requests), sum("TriggerResults" in r.query for r in la.requests))


def _two_runs(settings: Any, clients: Any, hook: Any, out_dir: Path, out: Any, seed_queries: Any) -> int:
    from shared.runtime.wiring import build_detector
    from shared.workbench.cli import print_report
    from shared.workbench.preview import card_text, write_preview

    print("\n== Run 1 ==", file=out)
    first = build_detector(settings, clients).run(only_due=False)
    print_report(first, out)
    if seed_queries is not None:
        in_defender, in_workspace = seed_queries()
        print(f"Seed rule: {in_defender} query to Defender advanced hunting, {in_workspace} to the workspace", file=out)
    cards = hook.cards()
    for card in cards:
        print("\n" + card_text(card), file=out)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = write_preview(cards, "kqlwatch demo: cards posted to Teams", out_dir / "cards.html")
    print(f"\n{len(cards)} card(s) posted; HTML preview (adaptivecards renderer): {page}", file=out)

    print("\n== Run 2 (five minutes later, same data) ==", file=out)
    later = build_detector(settings, clients, clock=lambda: datetime.now(timezone.utc) + timedelta(minutes=5))
    second = later.run(only_due=False)
    print_report(second, out)
    reposted = len(hook.cards()) - len(cards)
    print(f"{reposted} card(s) posted by run 2: every hit was already alerted once.", file=out)
    print("\nStopping the stand-ins.", file=out)
    return EXIT_OK if first.ok and second.ok and reposted == 0 else EXIT_FAILED


def _defender_setup(
    stack: ExitStack, la: Any, rows: list[dict[str, Any]], now: datetime, out: Any
) -> tuple[Any, dict[str, str]]:
    """Issue 15: the Graph stand-in serves the same rows as advanced hunting would (Timestamp, no workspace
    columns), and the seed rule, copied into a temporary rules folder, says `kqlwatch.source: defender`."""
    import shutil
    import tempfile

    from shared.standins.graph import GraphStandIn

    graph = stack.enter_context(GraphStandIn(ca=la._ca, token=la.token))  # one CA: REQUESTS_CA_BUNDLE trusts both
    graph.ingest("EmailEvents", rows, at=now)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kqlwatch-demo-rules-")))
    shutil.copytree(ROOT / "rules", folder, dirs_exist_ok=True)
    seed = folder / "accepted-domain-dmarc-temperror.yaml"
    seed.write_text(seed.read_text(encoding="utf-8").replace("kqlwatch:\n", "kqlwatch:\n  source: defender\n", 1))
    print(
        f"Defender XDR advanced hunting (Graph stand-in, HTTPS) serves the same rows; the seed rule runs there "
        f"(kqlwatch.source: defender): {graph.endpoint}/v1.0/security/runHuntingQuery",
        file=out,
    )
    return graph, {"KQLWATCH_GRAPH_ENDPOINT": graph.endpoint, "KQLWATCH_RULES_DIR": str(folder)}


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _time(text: str) -> datetime:
    return parse_time(text)

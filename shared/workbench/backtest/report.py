"""A backtest's report: text for the terminal, JSON, and a self-contained HTML page with a chart of alerts per day.

Hit values (senders, subjects) are attacker-controlled: on the terminal they are made inert (sanitize.clean),
in the HTML every value is escaped and the page forbids scripts and every external load (Content-Security-
Policy `default-src 'none'`), so a subject like `<script>` or `</svg><img src=x>` is shown as text.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from shared.workbench.backtest.replay import Replay

TOP = 5
SENDER_COLUMNS = ("SenderFromAddress", "SenderMailFromAddress", "AccountUpn", "UserPrincipalName")
_CHART_HEIGHT = 160
_BAR_WIDTH = 18
_BAR_GAP = 16  # room for the MM-DD label under each bar


def totals(result: Replay) -> dict[str, int]:
    keys = ("runs", "rows", "alerts", "cards", "notices", "suppressed", "failed_runs")
    return {k: sum(int(getattr(d, k)) for d in result.days) for k in keys}


def top_values(result: Replay) -> dict[str, list[tuple[str, int]]]:
    """The most frequent senders and entity values among the hits: what would have flooded the channel."""
    columns = [c for c in SENDER_COLUMNS if any(c in h for h in result.hits)][:1]
    columns += [c for c in result.rule.entity_columns if c not in columns]
    out: dict[str, list[tuple[str, int]]] = {}
    for column in columns:
        counts = Counter(str(h[column]) for h in result.hits if h.get(column) not in (None, ""))
        if counts:
            out[column] = counts.most_common(TOP)
    return out


def as_json(result: Replay) -> dict[str, Any]:
    return {
        "rule": {"id": result.rule.id, "name": result.rule.name, "path": result.rule.path},
        "from": result.start.isoformat(),
        "to": result.end.isoformat(),
        "source": result.source,
        "every": str(result.rule.query_frequency),
        "days": [
            {
                "day": d.day.isoformat(),
                "runs": d.runs,
                "rows": d.rows,
                "alerts": d.alerts,
                "cards": d.cards,
                "notices": d.notices,
                "suppressed": d.suppressed,
                "failed_runs": d.failed_runs,
            }
            for d in result.days
        ],
        "totals": totals(result),
        "top": {
            column: [{"value": v, "alerts": n} for v, n in values] for column, values in top_values(result).items()
        },
        "exclusions": result.exclusion_counts,
        "expired_exclusions": [{"name": n, "expired": d.isoformat()} for n, d in result.expired],
        "errors": result.errors,
    }


def text_lines(result: Replay) -> list[str]:
    from shared.runtime.sanitize import clean

    total = totals(result)
    lines = [
        f"backtest of {clean(result.rule.name, 120, defang_text=False)} ({result.rule.id})",
        f"period {result.start:%Y-%m-%d %H:%M} .. {result.end:%Y-%m-%d %H:%M} UTC, a run every "
        f"{_duration(result.rule.query_frequency)} ({total['runs']:,} runs), data: {clean(result.source, 200, defang_text=False)}",
        "",
        f"{'day':<10}  {'runs':>5}  {'rows':>7}  {'alerts':>6}  {'cards':>5}  {'notices':>7}  {'suppressed':>10}",
    ]
    for d in result.days:
        lines.append(
            f"{d.day.isoformat():<10}  {d.runs:>5}  {d.rows:>7,}  {d.alerts:>6,}  {d.cards:>5,}  {d.notices:>7,}  "
            f"{d.suppressed:>10,}" + (f"  ({d.failed_runs} failed runs)" if d.failed_runs else "")
        )
    lines.append(
        f"{'total':<10}  {total['runs']:>5}  {total['rows']:>7,}  {total['alerts']:>6,}  {total['cards']:>5,}  "
        f"{total['notices']:>7,}  {total['suppressed']:>10,}"
    )
    for column, values in top_values(result).items():
        lines += ["", f"top {column} (alerts):"]
        lines += [f"  {n:>6,}  {clean(v, 80, defang_text=False)}" for v, n in values]
    if result.exclusion_counts:
        lines += ["", "exclusions (result rows each one removes over the period):"]
        lines += [f"  {n:>6,}  {clean(name, 100, defang_text=False)}" for name, n in result.exclusion_counts.items()]
    if result.expired:
        lines += ["", "expired exclusions (no longer applied from the day after):"]
        lines += [f"  {d.isoformat()}  {clean(name, 100, defang_text=False)}" for name, d in result.expired]
    if result.errors:
        lines += ["", f"errors ({len(result.errors)}):"]
        lines += [f"  {clean(e, 300, defang_text=False)}" for e in result.errors[:10]]
    lines += ["", "nothing was posted; state was kept in memory"]
    return lines


def summary_line(result: Replay) -> str:
    total = totals(result)
    days = len(result.days)
    return (
        f"backtest {result.rule.id}: {total['runs']:,} runs over {days} day{'s' if days != 1 else ''}: "
        f"{total['alerts']:,} alerts, {total['cards']:,} cards ({total['notices']:,} notices), "
        f"busiest day {max(result.days, key=lambda d: d.alerts).day if result.days else '-'}"
        + (f", {len(result.errors)} errors" if result.errors else "")
    )


# --- HTML ---------------------------------------------------------------------------------------------------


def html_page(result: Replay) -> str:
    e = html.escape
    total = totals(result)
    tables = "".join(
        f"<h2>Top {e(column)}</h2>{_table(['alerts', column], [[str(n), v] for v, n in values])}"
        for column, values in top_values(result).items()
    )
    if result.exclusion_counts:
        rows = [[str(n), name] for name, n in result.exclusion_counts.items()]
        tables += f"<h2>Exclusions</h2><p>Result rows each one removes over the period.</p>{_table(['rows', 'exclusion'], rows)}"
    if result.expired:
        tables += f"<h2>Expired exclusions</h2>{_table(['expired', 'exclusion'], [[d.isoformat(), n] for n, d in result.expired])}"
    days = [
        [d.day.isoformat(), str(d.runs), str(d.rows), str(d.alerts), str(d.cards), str(d.notices)] for d in result.days
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>kqlwatch backtest: {e(result.rule.name)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Backtest: {e(result.rule.name)}</h1>"
        f'<p class="meta">{e(result.rule.id)} · {result.start:%Y-%m-%d %H:%M} to {result.end:%Y-%m-%d %H:%M} UTC · '
        f"a run every {e(_duration(result.rule.query_frequency))} · data: {e(result.source)}</p>"
        f'<p class="totals" id="totals">{total["alerts"]:,} alerts, {total["cards"]:,} cards '
        f"({total['notices']:,} kqlwatch notices) in {total['runs']:,} runs. Nothing was posted.</p>"
        f"<h2>Alerts per day</h2>{chart(result)}"
        f"<h2>Per day</h2>{_table(['day', 'runs', 'rows', 'alerts', 'cards', 'notices'], days)}"
        f"{tables}</body></html>\n"
    )


def chart(result: Replay) -> str:
    """An inline SVG bar chart, one bar per day (a `rect.bar` with its day and count as data attributes)."""
    peak = max((d.alerts for d in result.days), default=0) or 1
    step = _BAR_WIDTH + _BAR_GAP
    width = max(step * len(result.days) + 40, 200)
    parts = [
        f'<svg id="alerts-per-day" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{_CHART_HEIGHT + 40}" '
        f'role="img" aria-label="alerts per day">',
        f'<line x1="30" y1="{_CHART_HEIGHT}" x2="{width}" y2="{_CHART_HEIGHT}" stroke="#888"/>',
        f'<text x="0" y="12" class="axis">{peak}</text>',
    ]
    for index, d in enumerate(result.days):
        height = round(d.alerts / peak * (_CHART_HEIGHT - 20))
        x = 34 + index * step
        parts.append(
            f'<rect class="bar" x="{x}" y="{_CHART_HEIGHT - height}" width="{_BAR_WIDTH}" height="{height}" '
            f'data-day="{d.day.isoformat()}" data-alerts="{d.alerts}"><title>{d.day.isoformat()}: {d.alerts} alerts'
            "</title></rect>"
        )
        if d.alerts:
            parts.append(
                f'<text class="value" x="{x + _BAR_WIDTH / 2}" y="{_CHART_HEIGHT - height - 3}">{d.alerts}</text>'
            )
        if index % max(1, len(result.days) // 10) == 0:
            parts.append(f'<text class="axis" x="{x}" y="{_CHART_HEIGHT + 14}">{d.day:%m-%d}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _duration(value: Any) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def dumps(result: Replay) -> str:
    return json.dumps(as_json(result), indent=2, ensure_ascii=True)


_STYLE = (
    "body{font:14px system-ui,sans-serif;margin:2em;color:#222}h1{font-size:20px}h2{font-size:16px;margin-top:1.5em}"
    ".meta{color:#555}.totals{font-weight:600}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
    "padding:2px 8px;text-align:left}.bar{fill:#4a6fa5}.value{font-size:10px;text-anchor:middle}"
    ".axis{font-size:10px;fill:#555}"
)

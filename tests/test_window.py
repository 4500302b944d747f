"""Query windows: overlap for late rows, catch-up after downtime, a cap, and due-ness."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from shared.window import MIN_OVERLAP, is_due, next_window

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
H, M = timedelta(hours=1), timedelta(minutes=1)


def test_first_run_queries_the_period() -> None:
    window = next_window(NOW, period=H, frequency=5 * M, last_end=None, max_catchup=24 * H)
    assert (window.start, window.end) == (NOW - H, NOW)


def test_small_period_still_overlaps_ten_minutes() -> None:
    window = next_window(NOW, period=5 * M, frequency=5 * M, last_end=NOW - 5 * M, max_catchup=24 * H)
    assert window.start == NOW - 5 * M - MIN_OVERLAP


def test_catch_up_after_downtime_and_its_cap() -> None:
    assert (
        next_window(NOW, period=H, frequency=5 * M, last_end=NOW - 5 * H, max_catchup=24 * H).start
        == NOW - 5 * H - 55 * M
    )
    assert next_window(NOW, period=H, frequency=5 * M, last_end=NOW - 50 * H, max_catchup=24 * H).start == NOW - 24 * H


@given(period_m=st.integers(5, 14 * 24 * 60), frequency_m=st.integers(5, 24 * 60), gap_m=st.integers(0, 3000))
def test_consecutive_windows_never_leave_a_gap(period_m: int, frequency_m: int, gap_m: int) -> None:
    period, frequency = max(period_m, frequency_m) * M, frequency_m * M
    first = next_window(NOW, period=period, frequency=frequency, last_end=None, max_catchup=24 * H)
    later = NOW + frequency + gap_m * M
    second = next_window(later, period=period, frequency=frequency, last_end=first.end, max_catchup=24 * H)
    wanted_overlap = max(period - frequency, MIN_OVERLAP)
    if later - (first.end - wanted_overlap) <= max(24 * H, period):  # within the catch-up cap
        assert second.start <= first.end - wanted_overlap
    else:
        assert second.start == later - max(24 * H, period)
    assert second.end == later


def test_due_by_frequency_with_slack_for_timer_jitter() -> None:
    assert is_due(NOW, None, 5 * M)
    assert is_due(NOW, NOW - 5 * M + timedelta(seconds=2), 5 * M)
    assert not is_due(NOW, NOW - 2 * M, 5 * M)

"""Availability calendars: daily closures, maintenance windows and the days clocks change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from adapters.availability import CRA_ONLINE_HOURS, Availability, DailyClosure, MaintenanceWindow

TORONTO = ZoneInfo("America/Toronto")


def toronto(
    year: int, month: int, day: int, hour: int, minute: int, *, second: int = 0, fold: int = 0
) -> datetime:
    """A wall-clock time in Toronto, as the UTC instant it is (`fold=1`: a repeated hour's second pass)."""
    return datetime(year, month, day, hour, minute, second, tzinfo=TORONTO, fold=fold).astimezone(UTC)


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def closed_daily(*closures: str, **extra: Any) -> Availability:
    return Availability.model_validate({"timezone": "America/Toronto", "daily_closures": closures, **extra})


# --- daily closures -------------------------------------------------------------------------------


def test_cra_is_closed_from_three_to_six_eastern() -> None:
    assert CRA_ONLINE_HOURS.closed_until(toronto(2026, 11, 23, 2, 59)) is None
    assert CRA_ONLINE_HOURS.closed_until(toronto(2026, 11, 23, 3, 0)) == toronto(2026, 11, 23, 6, 0)
    assert CRA_ONLINE_HOURS.closed_until(toronto(2026, 11, 23, 5, 59, second=59)) == toronto(
        2026, 11, 23, 6, 0
    )
    assert CRA_ONLINE_HOURS.is_open(toronto(2026, 11, 23, 6, 0))
    # Winter: Eastern Standard Time, 5 hours behind UTC.
    assert CRA_ONLINE_HOURS.closed_until(utc(2026, 11, 23, 9, 0)) == utc(2026, 11, 23, 11, 0)


def test_a_closure_spanning_midnight() -> None:
    nightly = closed_daily("22:00-02:00")
    assert nightly.closed_until(toronto(2026, 6, 10, 21, 59)) is None
    assert nightly.closed_until(toronto(2026, 6, 10, 22, 0)) == toronto(2026, 6, 11, 2, 0)
    assert nightly.closed_until(toronto(2026, 6, 10, 23, 30)) == toronto(2026, 6, 11, 2, 0)
    assert nightly.closed_until(toronto(2026, 6, 11, 1, 15)) == toronto(2026, 6, 11, 2, 0)
    assert nightly.closed_until(toronto(2026, 6, 11, 2, 0)) is None


def test_a_closure_spanning_new_years_eve() -> None:
    nightly = closed_daily("23:00-01:00")
    assert nightly.closed_until(toronto(2026, 12, 31, 23, 45)) == toronto(2027, 1, 1, 1, 0)


def test_closures_that_touch_are_followed_to_the_real_reopening() -> None:
    back_to_back = closed_daily("01:00-03:00", "03:00-04:30")
    assert back_to_back.closed_until(toronto(2026, 6, 10, 1, 30)) == toronto(2026, 6, 10, 4, 30)


def test_the_caller_gets_utc_whatever_zone_it_asks_in() -> None:
    asked = datetime(2026, 11, 23, 4, 0, tzinfo=ZoneInfo("America/Vancouver"))  # 07:00 Eastern
    assert CRA_ONLINE_HOURS.closed_until(asked) is None
    reopens = CRA_ONLINE_HOURS.closed_until(
        datetime(2026, 11, 23, 1, 0, tzinfo=ZoneInfo("America/Vancouver"))
    )
    assert reopens == utc(2026, 11, 23, 11, 0)
    assert reopens is not None
    assert reopens.tzinfo is UTC


# --- the days clocks change in America/Toronto ----------------------------------------------------


def test_spring_forward_day_closes_by_the_wall_clock() -> None:
    # 2026-03-08: at 02:00 EST clocks jump to 03:00 EDT (07:00 UTC).
    assert CRA_ONLINE_HOURS.closed_until(utc(2026, 3, 8, 7, 0)) == utc(2026, 3, 8, 10, 0)  # 03:00-06:00 EDT
    assert CRA_ONLINE_HOURS.closed_until(utc(2026, 3, 8, 6, 59)) is None  # 01:59 EST
    # The day before, the same closure is an hour later in UTC.
    assert CRA_ONLINE_HOURS.closed_until(utc(2026, 3, 7, 8, 0)) == utc(2026, 3, 7, 11, 0)


def test_an_end_the_clock_skips_is_the_jump() -> None:
    # 02:30 does not exist on 2026-03-08: the wall clock passes it at 03:00 EDT, 07:00 UTC.
    closure = closed_daily("01:30-02:30")
    assert closure.closed_until(toronto(2026, 3, 8, 1, 45)) == utc(2026, 3, 8, 7, 0)
    assert closure.is_open(utc(2026, 3, 8, 7, 0))


def test_fall_back_day_closes_by_the_wall_clock() -> None:
    # 2026-11-01: at 02:00 EDT clocks go back to 01:00 EST (06:00 UTC); 03:00-06:00 is EST.
    assert CRA_ONLINE_HOURS.closed_until(utc(2026, 11, 1, 8, 0)) == utc(2026, 11, 1, 11, 0)
    assert CRA_ONLINE_HOURS.closed_until(utc(2026, 11, 1, 7, 59)) is None  # 02:59 EST


def test_an_end_that_occurs_twice_is_the_next_one() -> None:
    closure = closed_daily("00:00-01:30")
    first_pass = toronto(2026, 11, 1, 1, 10)  # 01:10 EDT
    second_pass = toronto(2026, 11, 1, 1, 10, fold=1)  # 01:10 EST, an hour later
    assert closure.closed_until(first_pass) == toronto(2026, 11, 1, 1, 30)
    assert closure.closed_until(second_pass) == toronto(2026, 11, 1, 1, 30, fold=1)
    assert closure.closed_until(second_pass) == utc(2026, 11, 1, 6, 30)


def test_a_closure_across_the_repeated_hour_covers_both_passes() -> None:
    closure = closed_daily("01:00-02:30")
    for at in (toronto(2026, 11, 1, 1, 20), toronto(2026, 11, 1, 1, 20, fold=1)):
        assert closure.closed_until(at) == utc(2026, 11, 1, 7, 30)  # 02:30 EST


# --- maintenance windows --------------------------------------------------------------------------


def test_a_maintenance_window_closes_the_system_until_its_end() -> None:
    window = MaintenanceWindow(start=utc(2026, 11, 23, 14, 0), end=utc(2026, 11, 23, 16, 0))
    calendar = Availability(maintenance=(window,))
    assert calendar.closed_until(utc(2026, 11, 23, 13, 59)) is None
    assert calendar.closed_until(utc(2026, 11, 23, 14, 0)) == utc(2026, 11, 23, 16, 0)
    assert calendar.closed_until(utc(2026, 11, 23, 16, 0)) is None


def test_maintenance_running_into_the_nightly_closure_is_followed_to_six() -> None:
    window = MaintenanceWindow(start=toronto(2026, 11, 23, 1, 0), end=toronto(2026, 11, 23, 4, 0))
    calendar = CRA_ONLINE_HOURS.model_copy(update={"maintenance": (window,)})
    assert calendar.closed_until(toronto(2026, 11, 23, 1, 30)) == toronto(2026, 11, 23, 6, 0)


def test_maintenance_starting_at_the_end_of_the_closure_extends_it() -> None:
    window = MaintenanceWindow(start=toronto(2026, 11, 23, 6, 0), end=toronto(2026, 11, 23, 8, 15))
    calendar = CRA_ONLINE_HOURS.model_copy(update={"maintenance": (window,)})
    assert calendar.closed_until(toronto(2026, 11, 23, 3, 30)) == toronto(2026, 11, 23, 8, 15)


def test_a_chain_longer_than_the_search_gives_up_closed_at_its_end() -> None:
    # Days of back-to-back windows: the calendar answers with a time, never loops forever.
    start = utc(2026, 11, 23, 0, 0)
    windows = tuple(
        MaintenanceWindow(start=start + timedelta(hours=n), end=start + timedelta(hours=n + 1))
        for n in range(100)
    )
    reopens = Availability(maintenance=windows).closed_until(start)
    assert reopens is not None
    assert start < reopens <= start + timedelta(hours=100)


# --- invalid calendars ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"daily_closures": ["3-6"]}, "a daily closure is written HH:MM-HH:MM, got '3-6'"),
        ({"daily_closures": ["25:00-06:00"]}, "hour value is outside expected range"),
        ({"daily_closures": ["03:00-03:00"]}, "must not start and end at the same time"),
        ({"timezone": "Eastern"}, "unknown time zone 'Eastern'"),
        (
            {"maintenance": [{"start": "2026-11-23T10:00:00Z", "end": "2026-11-23T09:00:00Z"}]},
            "a maintenance window must end after it starts",
        ),
        (
            {"maintenance": [{"start": "2026-11-23T10:00:00", "end": "2026-11-23T11:00:00Z"}]},
            "Input should have timezone info",
        ),
        ({"closures": ["03:00-06:00"]}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_calendars_are_refused_with_a_clear_message(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Availability.model_validate(spec)


def test_a_closure_reads_from_its_settings_text() -> None:
    closure = DailyClosure.model_validate(" 22:15-01:45 ")
    assert (closure.start.isoformat(), closure.end.isoformat()) == ("22:15:00", "01:45:00")

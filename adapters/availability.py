"""When a legacy system is open: daily closures and planned maintenance, in the system's own time zone.

Many government systems close every night (CRA's online services from 03:00 to 06:00 Eastern)
and announce maintenance windows ahead. A request sent while a system is closed only burns a
retry; knowing the calendar, tellonce waits until the system opens instead.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

_CLOSURE = re.compile(r"^(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})$")
MAX_STEPS = 64
"""Closures and windows chained end to end are followed at most this many times."""


class DailyClosure(BaseModel):
    """A closure every day from `start` to `end`, local time; `end` before `start` spans midnight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: time
    end: time

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: object) -> object:
        # "03:00-06:00" is how operators write it in settings.
        if isinstance(value, str):
            match = _CLOSURE.match(value.strip())
            if match is None:
                raise ValueError(f"a daily closure is written HH:MM-HH:MM, got {value!r}")
            return {"start": match["start"], "end": match["end"]}
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> DailyClosure:
        if self.start == self.end:
            raise ValueError("a daily closure must not start and end at the same time")
        return self

    def reopens(self, local: datetime) -> datetime | None:
        """When the closure containing `local` ends, or None when open at `local`.

        `local` is an aware time in the system's zone. Times are read off the wall clock: on the
        day clocks spring forward, an end the clock skips is the moment of the jump; on the day
        they fall back, an end that occurs twice is the first one after `local`.
        """
        day = local.date()
        at = local.timetz().replace(tzinfo=None)
        if self.start < self.end:
            if self.start <= at < self.end:
                return _wall_clock_reaches(day, self.end, local)
            return None
        if at >= self.start:  # spans midnight: closed until `end` tomorrow
            return _wall_clock_reaches(day + timedelta(days=1), self.end, local)
        if at < self.end:
            return _wall_clock_reaches(day, self.end, local)
        return None


def _wall_clock_reaches(day: date, end: time, after: datetime) -> datetime:
    """The first instant later than `after` at which its zone's wall clock reads `end` on `day` (UTC).

    A time that occurs twice (clocks fall back) is its first occurrence still ahead; a time that
    never occurs (clocks spring forward) is the moment the clock jumps past it.
    """
    wall = datetime.combine(day, end)
    now = after.astimezone(UTC)
    readings = [wall.replace(tzinfo=after.tzinfo, fold=fold).astimezone(UTC) for fold in (0, 1)]
    real = [instant for instant in readings if _wall(instant, after) == wall]
    if real:
        ahead = [instant for instant in real if instant > now]
        return min(ahead or real)
    # Skipped: fold=1 reads it with the offset after the jump (an instant before it), fold=0 with
    # the offset before (an instant after it); the jump lies between, on a whole second.
    low, high = int(readings[1].timestamp()), int(readings[0].timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(datetime.fromtimestamp(middle, UTC), after) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _wall(instant: datetime, like: datetime) -> datetime:
    """What the wall clock of `like`'s zone reads at `instant` (naive)."""
    return instant.astimezone(like.tzinfo).replace(tzinfo=None)


class MaintenanceWindow(BaseModel):
    """A planned outage from `start` to `end` (absolute times with their offset)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: AwareDatetime
    end: AwareDatetime
    reason: str = Field(default="maintenance", max_length=200)

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceWindow:
        if self.end <= self.start:
            raise ValueError("a maintenance window must end after it starts")
        return self


class Availability(BaseModel):
    """A system's calendar: when it is closed, and so when a request can be sent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str = "America/Toronto"
    daily_closures: tuple[DailyClosure, ...] = ()
    maintenance: tuple[MaintenanceWindow, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    def closed_until(self, now: datetime) -> datetime | None:
        """When the system opens again if it is closed at `now` (UTC), else None.

        Closures that touch (a maintenance window ending inside the nightly closure) are followed
        to the first moment the system is really open.
        """
        zone = ZoneInfo(self.timezone)
        at = now.astimezone(UTC)
        for _ in range(MAX_STEPS):
            local = at.astimezone(zone)
            ends = [end for closure in self.daily_closures if (end := closure.reopens(local)) is not None]
            ends += [window.end for window in self.maintenance if window.start <= at < window.end]
            if not ends:
                break
            at = max(end.astimezone(UTC) for end in ends)
        return at if at > now.astimezone(UTC) else None

    def is_open(self, now: datetime) -> bool:
        """Whether a request can be sent at `now`."""
        return self.closed_until(now) is None


CRA_ONLINE_HOURS = Availability(
    timezone="America/Toronto", daily_closures=(DailyClosure.model_validate("03:00-06:00"),)
)
"""CRA's online services are unavailable every day from 03:00 to 06:00 Eastern time."""

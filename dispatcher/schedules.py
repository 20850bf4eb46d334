"""Deployment schedules: cron with timezone, interval with anchor, RRULE -> upcoming run times (pure).

The three schedule models validate themselves at construction, so a bad schedule is refused with a
``ValueError`` (pydantic's ``ValidationError``) that names the field and says what is allowed.
:func:`upcoming` turns a schedule into its fire times inside a window, as timezone-aware UTC datetimes;
:func:`scheduled_run_id` gives each (deployment, slot) a deterministic run id, so overlapping scheduler
passes create the same run for the same slot.

Daylight saving time, in short (details in :func:`upcoming`):

* cron is evaluated on the wall clock of its ``timezone`` with croniter. A wall time that does not exist
  (spring forward) fires once, at the first valid time after the gap ("0 2 * * *" in America/New_York
  fires at 03:00 EDT that day). A wall time that happens twice (fall back) fires once, at its first
  occurrence, unless the expression fires every hour (hour field ``*``), in which case it fires at both,
  so an hourly or minutely cadence has no hole (close to what Vixie cron does).
* interval schedules count elapsed seconds from their anchor; whole-day intervals do not follow the wall
  clock across DST (a 86400 s interval anchored at 09:00 local fires at 08:00 or 10:00 local after a
  change).
* RRULEs are evaluated on the wall clock of their zone, as RFC 5545 says: a nonexistent local time is
  read with the offset before the gap (02:30 -> 03:30 EDT), an ambiguous one means its first occurrence.

New schedules that can never fire are refused, as cron's "0 0 30 2 *" is: an RRULE (or EXRULE) with COUNT=0,
one that matches no date (Feb 30), one whose UNTIL comes before its first occurrence; so is INTERVAL < 1.
Schedules read back from a store (JSON-mode validation) are not refused for these: a deployment an older
version stored stays readable, so it can be listed, given a new schedule or deleted. At run time an INTERVAL < 1
raises ValueError from :func:`upcoming` (the scheduler reports it for that deployment alone), and a rule
that never fires is left out of its set, which changes none of its occurrences.
"""

from __future__ import annotations

import functools
import itertools
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, datetime, time, timedelta
from typing import Any, Self, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import DAILY, HOURLY, MINUTELY, MONTHLY, SECONDLY, WEEKLY, YEARLY, rrule, rruleset, rrulestr
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

__all__ = [
    "DEFAULT_ANCHOR",
    "RUN_ID_NAMESPACE",
    "CronSchedule",
    "IntervalSchedule",
    "RRuleSchedule",
    "Schedule",
    "describe",
    "parse_schedule",
    "scheduled_run_id",
    "upcoming",
]

DEFAULT_ANCHOR = datetime(2020, 1, 1)
"""Wall time, in the schedule's timezone, of the default interval anchor and of an RRULE without DTSTART."""

RUN_ID_NAMESPACE = uuid.UUID("e706712e-7e06-4cba-85f6-9b406e12e8b7")
"""Fixed pushpool namespace for :func:`scheduled_run_id`; changing it would change every scheduled run id."""

MAX_RRULE_LENGTH = 6500
"""Longest accepted RRULE text (Prefect's limit)."""

_CRON_FIELDS = "minute hour day-of-month month day-of-week"
_CRON_HINT = f"use 5 fields: {_CRON_FIELDS}"
_RRULE_HINT = "e.g. 'FREQ=DAILY;BYHOUR=9;BYMINUTE=0' or 'DTSTART:20240101T090000\\nRRULE:FREQ=WEEKLY;BYDAY=MO'"
_RANDOM_CRON_ITEM = re.compile(r"(?:^|,)R(?:\(|,|$)", re.IGNORECASE)
_MACHINE_DEPENDENT_ZONES = frozenset({"localtime", "posixrules"})
_FAST_FORWARD_UNIT = {
    WEEKLY: timedelta(weeks=1),
    DAILY: timedelta(days=1),
    HOURLY: timedelta(hours=1),
    MINUTELY: timedelta(minutes=1),
    SECONDLY: timedelta(seconds=1),
}
_FAST_FORWARD_MARGIN = timedelta(days=1)
_INTERVAL_PART = re.compile(r"(?<![\w-])INTERVAL=([+-]?\d+)\b", re.IGNORECASE)
_GREGORIAN_CYCLE_YEARS = 400
"""The Gregorian calendar repeats every 400 years: 146097 days, a whole number of weeks."""
_MOST_DAYS_IN_PERIOD = {YEARLY: 366, MONTHLY: 31, WEEKLY: 7}
_MAX_STALLED_CRON_STEPS = 10_000
_ONE_MICROSECOND = timedelta(microseconds=1)


# --------------------------------------------------------------------------------------------- checks


def _zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or a ValueError that says what a time zone looks like."""
    message = f"timezone {name!r} is not a known IANA time zone, e.g. 'UTC' or 'Europe/Berlin'"
    if not isinstance(name, str) or name in _MACHINE_DEPENDENT_ZONES:
        raise ValueError(message)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(message) from exc


def _check_timezone(value: str) -> str:
    """Field validator body: ``value`` must name an IANA zone."""
    _zone(value)
    return value


def _check_cron(value: str) -> str:
    """A 5-field croniter expression (or a croniter nickname such as @daily) that can fire."""
    text = " ".join(value.split())

    def bad(why: str) -> ValueError:
        return ValueError(f"cron {value!r} is not a valid cron expression: {why}; {_CRON_HINT}")

    fields = text.split(" ")
    if not text.startswith("@") and len(fields) != 5:
        raise bad(f"it has {len(fields) if text else 0} fields")
    if any(_RANDOM_CRON_ITEM.search(field) for field in fields):
        raise bad("random 'R' items are not allowed, a schedule must be deterministic")
    from croniter import CroniterBadDateError, CroniterError, croniter  # on first use: cold starts skip it

    try:
        cron = croniter(text, DEFAULT_ANCHOR.replace(tzinfo=UTC))
    except (CroniterError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise bad(str(exc) or type(exc).__name__) from exc
    if len(cron.expanded) != 5:
        raise bad(f"it has {len(cron.expanded)} fields")
    try:
        cron.get_next(datetime)
    except CroniterBadDateError as exc:
        raise ValueError(f"cron {value!r} never fires (no date matches it); {_CRON_HINT}") from exc
    return text


def _aware(name: str, value: datetime) -> datetime:
    """``value`` itself, or a ValueError naming ``name`` when it is not a timezone-aware datetime."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value


# -------------------------------------------------------------------------------------------- models


class _Pausable(BaseModel):
    """What every schedule has: `active` (Prefect's word); false keeps the schedule but it creates no runs.

    `active` is written only when false, so a schedule's JSON (stored, planned by `apply`, shown by `-o
    json`) is what it was before schedules could be paused.
    """

    active: bool = Field(default=True, description="false: the schedule is kept but creates no runs (paused)")

    @model_serializer(mode="wrap")
    def _omit_active(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.active:
            data.pop("active", None)
        return data


class CronSchedule(_Pausable):
    """Fire whenever the wall clock in ``timezone`` matches a 5-field cron expression."""

    model_config = ConfigDict(extra="forbid")
    cron: str = Field(description=f"5-field cron expression ({_CRON_FIELDS}), or @hourly, @daily, ...")
    timezone: str = Field(default="UTC", description="IANA time zone the expression is read in")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        """A valid 5-field expression that fires; whitespace normalised."""
        return _check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        """An IANA zone known to zoneinfo."""
        return _check_timezone(value)


class IntervalSchedule(_Pausable):
    """Fire every ``interval`` elapsed seconds, at ``anchor_date + k * interval`` for every integer k."""

    model_config = ConfigDict(extra="forbid")
    interval: float = Field(
        gt=0, allow_inf_nan=False, description="seconds between runs (elapsed time, resolution 1 µs)"
    )
    anchor_date: datetime | None = Field(
        default=None,
        description="a time the schedule fires at (past or future); naive means wall time in `timezone`; "
        "default 2020-01-01T00:00 in `timezone`",
    )
    timezone: str = Field(default="UTC", description="IANA time zone for a naive or default anchor_date")

    @field_validator("interval")
    @classmethod
    def _valid_interval(cls, value: float) -> float:
        """At least one microsecond, the resolution of datetime."""
        if round(value * 1_000_000) < 1:
            raise ValueError(f"interval must be at least 0.000001 seconds (1 microsecond), got {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        """An IANA zone known to zoneinfo."""
        return _check_timezone(value)


class RRuleSchedule(_Pausable):
    """Fire at the occurrences of an RFC 5545 recurrence rule (``rrulestr`` syntax, DTSTART optional).

    Floating (naive) times and the default DTSTART (2020-01-01T00:00) are read in ``timezone``. A DTSTART
    with ``TZID=...`` is evaluated in that zone: ``timezone`` is taken from it when not given, and must
    name the same zone when given. A UTC (``...Z``) DTSTART is an instant, evaluated in ``timezone``.
    """

    model_config = ConfigDict(extra="forbid")
    rrule: str = Field(max_length=MAX_RRULE_LENGTH, description="RFC 5545 RRULE text, e.g. FREQ=DAILY;BYHOUR=9")
    timezone: str = Field(default="UTC", description="IANA time zone for floating times and the default DTSTART")

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        """An IANA zone known to zoneinfo."""
        return _check_timezone(value)

    @field_validator("rrule")
    @classmethod
    def _valid_rrule(cls, value: str, info: ValidationInfo) -> str:
        """Parses with rrulestr; new input must also have INTERVAL >= 1 and fire at least once.

        JSON-mode validation is how the stores read back what they wrote (every way in for new input, the
        CLI, the HTTP API and `apply`, validates Python objects): there a rule refused only by these newer
        checks is kept, so that a deployment stored by an older version can still be read and then fixed or deleted.
        """
        parsed = _parse_rrule(value, "UTC")  # syntax; validity does not depend on the zone
        if info.mode != "json" and parsed.refusal is not None:
            raise ValueError(parsed.refusal)
        return value

    @model_validator(mode="after")
    def _zone_of_dtstart(self) -> Self:
        """A DTSTART with TZID sets ``timezone`` when it was not given, and must agree with it when it was."""
        parsed = _parse_rrule(self.rrule, self.timezone)
        if parsed.dtstart_zone is not None and parsed.dtstart_zone != self.timezone:
            if "timezone" in self.model_fields_set:
                raise ValueError(
                    f"rrule DTSTART has TZID={parsed.dtstart_zone} but timezone is {self.timezone!r}; "
                    "give the same zone in both, or leave timezone out"
                )
            self.timezone = parsed.dtstart_zone
        return self


Schedule = CronSchedule | IntervalSchedule | RRuleSchedule


# ---------------------------------------------------------------------------------------------- RRULE


@dataclass(frozen=True)
class _ParsedRule:
    """An rrulestr result taken apart, every datetime timezone-aware."""

    rrules: tuple[rrule, ...]
    exrules: tuple[rrule, ...]
    rdates: tuple[datetime, ...]
    exdates: tuple[datetime, ...]
    dtstart_zone: str | None
    """The TZID of an explicit DTSTART, if it had one."""
    invalid: str | None = None
    """Why the rule cannot be evaluated at all (an INTERVAL below 1); :func:`upcoming` raises it."""
    refusal: str | None = None
    """Why new input with this text is refused: ``invalid``, or a rule that never fires (``rrules`` and
    ``exrules`` leave such rules out: they add or remove no occurrence)."""


def _tzid_lookup(name: str) -> ZoneInfo:
    """rrulestr's TZID resolver: zoneinfo zones only; an unknown TZID is an error, never a floating time."""
    try:
        return _zone(name)
    except ValueError:
        raise ValueError(f"TZID {name!r} is not a known IANA time zone") from None


@functools.lru_cache(maxsize=512)
def _parse_rrule(text: str, timezone: str) -> _ParsedRule:
    """Parse ``text`` with rrulestr; floating times are read in ``timezone``.

    Raises a ValueError naming the rrule field and what is allowed.
    """
    zone = _zone(timezone)

    def bad(why: str) -> ValueError:
        return ValueError(f"rrule {text!r} is not a valid RFC 5545 recurrence rule: {why}; {_RRULE_HINT}")

    errors = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, ZeroDivisionError)
    try:
        # A floating default DTSTART first, so that a floating UNTIL is allowed (RFC 5545 §3.3.10) ...
        parsed = rrulestr(text, dtstart=DEFAULT_ANCHOR, forceset=True, tzids=_tzid_lookup)
    except errors as first:
        try:
            # ... then an aware one, for a rule without DTSTART whose UNTIL is in UTC.
            parsed = rrulestr(text, dtstart=DEFAULT_ANCHOR.replace(tzinfo=zone), forceset=True, tzids=_tzid_lookup)
        except errors:
            # dateutil's words for INTERVAL=0;BYHOUR=3 are "byxxx generates an empty set": name the real cause.
            intervals = [int(match) for match in _INTERVAL_PART.findall(text)]
            why = next((_interval_why(n) for n in intervals if n < 1), None)
            raise bad(why or str(first) or type(first).__name__) from first
    if not isinstance(parsed, rruleset):  # pragma: no cover - forceset=True always gives a set
        raise bad("expected a recurrence set")
    rules: list[rrule] = list(getattr(parsed, "_rrule", []))
    exrules: list[rrule] = list(getattr(parsed, "_exrule", []))
    if not rules:
        raise bad("it has no RRULE")
    for rule in (*rules, *exrules):
        if getattr(rule, "_count", None) is not None and getattr(rule, "_until", None) is not None:
            raise bad("COUNT and UNTIL are given together, RFC 5545 allows one of them")
    dtstart: datetime = getattr(rules[0], "_dtstart")  # noqa: B009 - private attribute, not in the stubs
    dtstart_zone = dtstart.tzinfo.key if isinstance(dtstart.tzinfo, ZoneInfo) else None
    local_rules = [_localize_rule(rule, zone) for rule in rules]
    local_exrules = [_localize_rule(rule, zone) for rule in exrules]
    invalid = refusal = None
    bad_interval = next((n for n in map(_interval_of, (*rules, *exrules)) if n < 1), None)
    if bad_interval is not None:
        invalid = refusal = str(bad(_interval_why(bad_interval)))
    else:
        dead_rules = [_never_fires(rule) for rule in local_rules]
        dead_exrules = [_never_fires(rule) for rule in local_exrules]
        refusal = _never_fires_message(text, dead_rules, dead_exrules)
        local_rules = [rule for rule, why in zip(local_rules, dead_rules, strict=True) if why is None]
        local_exrules = [rule for rule, why in zip(local_exrules, dead_exrules, strict=True) if why is None]
    return _ParsedRule(
        rrules=tuple(local_rules),
        exrules=tuple(local_exrules),
        rdates=tuple(_localize(when, zone) for when in getattr(parsed, "_rdate", [])),
        exdates=tuple(_localize(when, zone) for when in getattr(parsed, "_exdate", [])),
        dtstart_zone=dtstart_zone,
        invalid=invalid,
        refusal=refusal,
    )


def _interval_of(rule: rrule) -> int:
    return int(getattr(rule, "_interval"))  # noqa: B009


def _interval_why(interval: int) -> str:
    return f"INTERVAL must be a whole number of 1 or more, got {interval}"


def _never_fires_message(text: str, rules: list[str | None], exrules: list[str | None]) -> str | None:
    """The refusal for ``text`` when one of its RRULEs never fires or one of its EXRULEs never matches."""
    for kind, whys in (("RRULE", rules), ("EXRULE", exrules)):
        for number, why in enumerate(whys, start=1):
            if why is None:
                continue
            if kind == "RRULE" and len(rules) == 1:
                return f"rrule {text!r} never fires ({why}); {_RRULE_HINT}"
            which = f"{kind} number {number}" if len(whys) > 1 else kind
            effect = "never fires" if kind == "RRULE" else "never matches, so it excludes nothing"
            return f"rrule {text!r}: its {which} {effect} ({why}); remove it or fix it, {_RRULE_HINT}"
    return None


def _never_fires(rule: rrule) -> str | None:
    """Why ``rule`` (INTERVAL >= 1) has no occurrence at all, or None when it has one; bounded, not a scan to 9999.

    dateutil looks for a first occurrence up to the year 9999, one period (or one day) at a time: ten
    seconds for "FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=30", forever for "FREQ=SECONDLY;BYSETPOS=2", which has
    a candidate every second and keeps none. So, in turn: COUNT < 1; a BYSETPOS beyond the most candidate
    times one period can hold (counted, not searched); no day at all that the day rules (BYMONTH, BYMONTHDAY,
    BYYEARDAY, BYWEEKNO, BYDAY, BYEASTER, and DTSTART's defaults for them) allow, searched a year per step;
    then the rule itself. The two searches run on the wall clock, moved forward by whole 400-year Gregorian
    cycles (the same dates, weekdays and leap days) to between 400 and 800 years before dateutil's end,
    so neither can step through more than 800 years. A rule whose first occurrence is more than 400 years
    after its DTSTART may so be called one that never fires. BYEASTER rules are not moved (Easter does not
    repeat every 400 years): their search runs from DTSTART, still ending at the year 9999.
    """
    count: int | None = getattr(rule, "_count")  # noqa: B009
    if count is not None and count < 1:
        return f"COUNT is {count}"
    positions: tuple[int, ...] | None = getattr(rule, "_bysetpos")  # noqa: B009
    most = _most_candidates(rule)
    if positions and all(abs(position) > most for position in positions):
        chosen = ",".join(str(position) for position in positions)
        times = "time" if most == 1 else "times"
        return f"BYSETPOS={chosen} picks nothing, a period of this rule has at most {most} candidate {times}"
    try:
        moved = _moved_to_last_cycles(rule)
    except (ValueError, OverflowError):  # pragma: no cover - a rule dateutil built once builds again
        return None
    skeleton = _day_skeleton(moved)
    if skeleton is not None and _first(skeleton) is None:
        return "no date matches it"
    if _first(moved) is not None:
        return None
    if getattr(moved, "_until") is not None and _first(moved.replace(until=None)) is not None:  # noqa: B009
        return "its UNTIL is before its first occurrence"
    return f"no date in the {_GREGORIAN_CYCLE_YEARS} years from its DTSTART matches it"


def _most_candidates(rule: rrule) -> int:
    """The most candidate times one period of ``rule`` can hold: what BYSETPOS picks from."""
    freq: int = getattr(rule, "_freq")  # noqa: B009
    if freq == SECONDLY:
        return 1
    seconds = len(getattr(rule, "_bysecond"))  # noqa: B009
    if freq == MINUTELY:
        return seconds
    if freq == HOURLY:
        return len(getattr(rule, "_byminute")) * seconds  # noqa: B009
    return _MOST_DAYS_IN_PERIOD.get(freq, 1) * len(getattr(rule, "_timeset"))  # noqa: B009


def _moved_to_last_cycles(rule: rrule) -> rrule:
    """``rule`` on the naive wall clock of its DTSTART, moved by whole 400-year cycles to 400-800 years before 9999.

    The move maps every occurrence to the same wall time and date 400 * k years later (BYEASTER rules are
    not moved), so the moved rule fires within its first n years if and only if ``rule`` does.
    """
    dtstart: datetime = getattr(rule, "_dtstart")  # noqa: B009
    until: datetime | None = getattr(rule, "_until")  # noqa: B009
    zone = dtstart.tzinfo
    if until is not None and until.tzinfo is not None and zone is not None:
        try:
            until = until.astimezone(zone)
        except OverflowError:  # an UNTIL at the very end of 9999, past it in this zone: no bound at all
            until = None
    start = dtstart.replace(tzinfo=None)
    until = until.replace(tzinfo=None) if until is not None else None
    cycles = 0
    if not getattr(rule, "_byeaster"):  # noqa: B009
        cycles = max(0, (MAXYEAR - _GREGORIAN_CYCLE_YEARS - start.year) // _GREGORIAN_CYCLE_YEARS)
    years = cycles * _GREGORIAN_CYCLE_YEARS
    if until is not None:
        until = until.replace(year=until.year + years) if until.year + years <= MAXYEAR else None
    return rule.replace(dtstart=start.replace(year=start.year + years), until=until)


def _day_skeleton(rule: rrule) -> rrule | None:
    """A YEARLY rule over the days that ``rule``'s day rules allow, or None when it has none.

    Every day in a year is one period of a YEARLY rule, so a search through the years is a step per year
    where ``rule`` itself may step a day at a time. Its days are a superset of ``rule``'s: INTERVAL,
    BYSETPOS, the time of day and BYDAY's ordinals (1MO) are left out.
    """
    monthdays = (*getattr(rule, "_bymonthday"), *getattr(rule, "_bynmonthday"))  # noqa: B009
    weekdays = set(getattr(rule, "_byweekday") or ())  # noqa: B009
    weekdays.update(day for day, _ in getattr(rule, "_bynweekday") or ())  # noqa: B009
    months, yeardays, weeks, easter = (getattr(rule, f"_by{part}") for part in ("month", "yearday", "weekno", "easter"))
    if not (months or monthdays or yeardays or weeks or weekdays or easter):
        return None
    dtstart: datetime = getattr(rule, "_dtstart")  # noqa: B009
    return rrule(
        YEARLY,
        dtstart=datetime.combine(dtstart.date(), time()),
        wkst=getattr(rule, "_wkst"),  # noqa: B009
        bymonth=months,
        bymonthday=monthdays or None,
        byyearday=yeardays,
        byweekno=weeks,
        byweekday=sorted(weekdays) or range(7),  # every weekday: no filter, and no default from DTSTART
        byeaster=easter,
        byhour=0,
        byminute=0,
        bysecond=0,
    )


def _first(rule: rrule) -> datetime | None:
    """The first occurrence of ``rule``, or None (also when dateutil runs past the year 9999 looking)."""
    try:
        first: datetime | None = next(iter(rule), None)
    except (ValueError, OverflowError):
        return None
    return first


def _localize(when: datetime, zone: ZoneInfo) -> datetime:
    """A floating time is wall time in ``zone``; any other aware time keeps its instant."""
    return when.replace(tzinfo=zone) if when.tzinfo is None else when


def _localize_rule(rule: rrule, zone: ZoneInfo) -> rrule:
    """Make DTSTART (and UNTIL) aware: floating -> ``zone``; UTC or offset -> same instant in ``zone``."""
    dtstart: datetime = getattr(rule, "_dtstart")  # noqa: B009
    until: datetime | None = getattr(rule, "_until")  # noqa: B009
    if isinstance(dtstart.tzinfo, ZoneInfo):  # TZID=..., or the aware default: evaluated in that zone
        return rule
    if dtstart.tzinfo is None:
        return rule.replace(dtstart=dtstart.replace(tzinfo=zone), until=until and _localize(until, zone))
    return rule.replace(dtstart=dtstart.astimezone(zone))


def _fast_forward(rule: rrule, after: datetime) -> rrule:
    """The same rule with DTSTART moved forward to just before ``after``, when that keeps its meaning.

    dateutil iterates a rule from its DTSTART, so a minutely rule from 2020 asked about 2026 would step
    through millions of minutes. For WEEKLY/DAILY/HOURLY/MINUTELY/SECONDLY rules without COUNT the
    periods form a fixed lattice on the wall clock (INTERVAL x the frequency, from DTSTART) and the
    defaults that DTSTART supplies (time of day, weekday) repeat on every lattice point, so DTSTART can
    move by whole lattice steps without changing any occurrence after the new DTSTART. It moves to a
    lattice point at least a day (of wall clock, more than any DST fold) before ``after``. Rules with
    COUNT, and MONTHLY/YEARLY rules (a few hundred periods per century), are iterated from DTSTART.
    """
    freq: int = getattr(rule, "_freq")  # noqa: B009
    unit = _FAST_FORWARD_UNIT.get(freq)
    interval = _interval_of(rule)
    # INTERVAL < 1 never gets here (_rrule_times raises); were it to, no lattice: leave DTSTART where it is.
    if unit is None or interval < 1 or getattr(rule, "_count", None) is not None:
        return rule
    dtstart: datetime = getattr(rule, "_dtstart")  # noqa: B009
    zone = dtstart.tzinfo
    try:
        step = unit * interval
    except OverflowError:  # a step of over 999999999 days: any time before 9999 is within the first one
        return rule
    start = dtstart.replace(tzinfo=None)
    target = after.astimezone(zone).replace(tzinfo=None) - _FAST_FORWARD_MARGIN
    if target <= start + step:
        return rule
    return rule.replace(dtstart=(start + step * ((target - start) // step)).replace(tzinfo=zone))


def _rrule_times(schedule: RRuleSchedule, after: datetime, until: datetime) -> Iterator[datetime]:
    """The rule's occurrences up to ``until`` in UTC, ascending, strictly increasing, from shortly before ``after``.

    dateutil yields wall-clock order; a nonexistent time read with the offset before the gap lands in
    the next hour, so occurrences not later than one already yielded are dropped (an hourly or minutely
    rule then fires once per real hour or minute across spring forward). Each RRULE and EXRULE is cut at
    ``until`` (a rule set takes any iterable): an EXRULE that removes every occurrence would otherwise
    leave dateutil searching to the year 9999 for one that is not excluded.
    """
    parsed = _parse_rrule(schedule.rrule, schedule.timezone)
    if parsed.invalid is not None:  # stored by an older version: the scheduler reports it for this deployment
        raise ValueError(parsed.invalid)

    def cut(rule: rrule) -> rrule:
        return cast(rrule, itertools.takewhile(lambda when: when <= until, _fast_forward(rule, after)))

    rules = rruleset()
    for rule in parsed.rrules:
        rules.rrule(cut(rule))
    for rule in parsed.exrules:
        rules.exrule(cut(rule))
    for when in parsed.rdates:
        rules.rdate(when)
    for when in parsed.exdates:
        rules.exdate(when)
    return _strictly_increasing(when.astimezone(UTC) for when in rules)


def _strictly_increasing(times: Iterable[datetime]) -> Iterator[datetime]:
    """``times`` without any item that is not later than every item before it."""
    last: datetime | None = None
    for when in times:
        if last is None or when > last:
            last = when
            yield when


# ----------------------------------------------------------------------------------------------- cron


def _cron_times(schedule: CronSchedule, after: datetime) -> Iterator[datetime]:
    """The cron's fire times after ``after``, in UTC, ascending (see :func:`upcoming` for DST)."""
    from croniter import CroniterBadDateError, croniter

    zone = _zone(schedule.timezone)
    cron = croniter(schedule.cron, after.astimezone(zone))
    every_hour = cron.expanded[1] == ["*"]
    last: datetime | None = None
    stalled = 0
    while stalled < _MAX_STALLED_CRON_STEPS:
        try:
            local: datetime = cron.get_next(datetime)
        except (CroniterBadDateError, OverflowError):
            return
        when = local.astimezone(UTC)
        local = when.astimezone(zone)  # fold set from the instant, whatever croniter did
        second_pass = local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()
        if (last is not None and when <= last) or when <= after or (second_pass and not every_hour):
            stalled += 1
            continue
        stalled = 0
        last = when
        yield when


# ------------------------------------------------------------------------------------------- interval


def _anchor(schedule: IntervalSchedule) -> datetime:
    """The interval anchor as a UTC instant (naive or default anchor read in the schedule's timezone)."""
    anchor = schedule.anchor_date or DEFAULT_ANCHOR
    if anchor.tzinfo is None or anchor.utcoffset() is None:
        anchor = anchor.replace(tzinfo=_zone(schedule.timezone))
    return anchor.astimezone(UTC)


def _interval_times(schedule: IntervalSchedule, after: datetime, until: datetime) -> Iterator[datetime]:
    """``anchor + k * interval`` for the integers k with after < time <= until, exact to the microsecond."""
    step = round(schedule.interval * 1_000_000)
    anchor = _anchor(schedule)
    first_k = (after - anchor) // _ONE_MICROSECOND // step + 1
    last_offset = (until - anchor) // _ONE_MICROSECOND
    k = first_k
    while k * step <= last_offset:
        yield anchor + timedelta(microseconds=k * step)
        k += 1


# ------------------------------------------------------------------------------------------------ API


def upcoming(schedule: Schedule, after: datetime, until: datetime, limit: int) -> list[datetime]:
    """The schedule's fire times ``t`` with ``after < t <= until``, ascending, at most ``limit`` of them.

    ``after`` and ``until`` must be timezone-aware (ValueError otherwise); the result is timezone-aware
    UTC, strictly increasing. An empty window (``until <= after``), ``limit == 0`` or a paused schedule
    (``active`` false) gives ``[]``; a negative ``limit`` is a ValueError.

    Cron (croniter, on the wall clock of ``schedule.timezone``):

    * a wall time that does not exist (spring forward) fires once, at the first valid time after the gap:
      "0 2 * * *" and "30 2 * * *" in America/New_York fire at 03:00 EDT on that day; times that fold
      onto the same instant fire once;
    * a wall time that happens twice (fall back) fires once, at its first occurrence ("30 1 * * *" fires
      at 01:30 EDT, not again at 01:30 EST), unless the hour field is ``*`` (fires every hour): then it
      fires at both occurrences, so "*/15 * * * *" keeps firing every 15 elapsed minutes;
    * "0 9 * * *" in Europe/Berlin fires at 08:00 UTC in winter and 07:00 UTC in summer.

    Interval: ``anchor + k * interval`` for every integer k (the anchor may be in the past or the
    future), counted in elapsed seconds to the microsecond. The anchor defaults to 2020-01-01T00:00 in
    ``schedule.timezone``; a naive anchor is wall time there (an ambiguous one means its first
    occurrence). Whole-day intervals are elapsed time too: they do not keep the wall-clock time of day
    across DST changes (Prefect does; use cron or RRULE for "every day at 09:00 local").

    RRULE (dateutil, with tz-aware datetimes): occurrences keep their wall-clock time across DST. A
    nonexistent local time is read with the offset before the gap (RFC 5545: 02:30 -> 03:30 EDT), an
    ambiguous one is its first occurrence; an occurrence that would not be later than the previous one
    (an hourly rule in the skipped hour) is dropped. COUNT, UNTIL, EXDATE/RDATE/EXRULE are honoured.
    Rules without COUNT at WEEKLY frequency or finer are fast-forwarded to ``after`` (see
    :func:`_fast_forward`); rules with COUNT are iterated from DTSTART, so their cost grows with COUNT.
    A rule that never fires is left out (it would make dateutil search up to the year 9999); an RRULE
    schedule with INTERVAL < 1 (only ever stored by an older version) raises ValueError.
    """
    _aware("after", after)
    _aware("until", until)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a whole number of 0 or more, got {limit!r}")
    if limit == 0 or until <= after or not schedule.active:
        return []
    times: Iterator[datetime]
    if isinstance(schedule, CronSchedule):
        times = _cron_times(schedule, after)
    elif isinstance(schedule, IntervalSchedule):
        times = _interval_times(schedule, after, until)
    elif isinstance(schedule, RRuleSchedule):
        times = _rrule_times(schedule, after, until)
    else:
        raise TypeError(f"not a schedule: {schedule!r}")
    result: list[datetime] = []
    for when in times:
        if when <= after:
            continue
        if when > until:
            break
        result.append(when.astimezone(UTC))
        if len(result) >= limit:
            break
    return result


def scheduled_run_id(deployment_id: str, when: datetime) -> str:
    """The run id of ``deployment_id``'s scheduled slot at ``when`` (aware): a deterministic UUID5.

    Built over :data:`RUN_ID_NAMESPACE` and ``f"{deployment_id}|{when in UTC, ISO 8601 with
    microseconds}"``, so the same slot always gets the same id, whatever zone ``when`` is expressed in.
    """
    _aware("when", when)
    stamp = when.astimezone(UTC).isoformat(timespec="microseconds")
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"{deployment_id}|{stamp}"))


def _seconds(value: float) -> str:
    """300.0 -> '300', 1.5 -> '1.5'."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def describe(schedule: Schedule) -> str:
    """Short human text for tables: "cron 0 9 * * * (Europe/Berlin)", "every 300s", "rrule FREQ=DAILY (UTC)".

    A paused schedule (``active`` false) ends in " [paused]".
    """
    text = _describe(schedule)
    return text if schedule.active else f"{text} [paused]"


def _describe(schedule: Schedule) -> str:
    if isinstance(schedule, CronSchedule):
        return f"cron {schedule.cron} ({schedule.timezone})"
    if isinstance(schedule, IntervalSchedule):
        text = f"every {_seconds(schedule.interval)}s"
        if schedule.anchor_date is not None:
            anchor = schedule.anchor_date.isoformat()
            text += f" from {anchor}" + (f" ({schedule.timezone})" if schedule.anchor_date.tzinfo is None else "")
        return text
    if isinstance(schedule, RRuleSchedule):
        return f"rrule {' '.join(schedule.rrule.split())} ({schedule.timezone})"
    raise TypeError(f"not a schedule: {schedule!r}")


_KINDS: dict[str, type[CronSchedule] | type[IntervalSchedule] | type[RRuleSchedule]] = {
    "cron": CronSchedule,
    "interval": IntervalSchedule,
    "rrule": RRuleSchedule,
}


def parse_schedule(data: Mapping[str, Any]) -> Schedule:
    """Build the schedule model that ``data`` describes, chosen by its key: cron, interval or rrule.

    Raises ValueError when ``data`` has none or several of those keys, or when the model refuses it
    (pydantic's ValidationError, a ValueError, names the field).
    """
    allowed = ", ".join(repr(key) for key in _KINDS)
    if not isinstance(data, Mapping):
        raise ValueError(f"a schedule must be an object with one of {allowed}, got {type(data).__name__}")
    kinds = [key for key in _KINDS if key in data]
    if len(kinds) != 1:
        found = "none" if not kinds else "several (" + ", ".join(repr(key) for key in kinds) + ")"
        raise ValueError(f"a schedule needs exactly one of {allowed}; got {found} in keys {list(data)}")
    return _KINDS[kinds[0]].model_validate(dict(data))

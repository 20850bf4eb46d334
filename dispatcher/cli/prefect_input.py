"""Values typed the way Prefect's CLI takes them: `k=v` pairs, "5 minutes" delays, start times.

Each parser refuses what it cannot read with one sentence naming the option and what it takes; nothing is
guessed. Prefect reads `--start-in` and `--start-at` with dateparser, which accepts free text in many
languages ("tomorrow", "next friday"); pushpool takes the forms people type into a deployment run (a number
with a unit, optionally after "in", and ISO 8601 times) and says so when given anything else.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import json_input
from ..errors import InvalidInput

_UNITS: dict[str, float] = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), 7 * 86400),
}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_DELAY_FORMS = "a number of seconds, or amounts with units like '5 minutes', 'in 2 hours', '1h30m' or '90s'"


def key_values(option: str, items: list[str] | None) -> dict[str, Any]:
    """`k=v` items as a dict; each value is JSON when it parses as JSON, else the text itself (as Prefect does).

    `--param n=3` gives 3, `--param flag=true` gives True, `--param name=world` gives "world",
    `--param 'xs=[1, 2]'` gives a list. A key given twice keeps the last, as Prefect does.
    """
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"{option} must be KEY=VALUE (like {option} name=world), got {item!r}.")
        try:
            value: Any = json_input.loads(raw, option)
        except (ValueError, InvalidInput, RecursionError):
            value = raw  # not JSON (or NaN/Infinity, which JSON objects may not hold): the text itself
        result[key.strip()] = value
    return result


def parse_delay(option: str, text: str, most: timedelta) -> timedelta:
    """'300', '5 minutes', 'in 2 hours', '1h', '1h30m', '2 days 3 hours' as a delay from 0 to `most`."""
    words = " ".join(text.lower().replace(",", " ").split())
    body = words.removeprefix("in ").strip()
    try:
        seconds = float(body)
    except ValueError:
        seconds = _with_units(option, text, body)
    if not 0 <= seconds <= most.total_seconds():  # NaN fails it too
        years = f" ({most.days // 365} years)" if most.days >= 365 else ""
        raise InvalidInput(
            f"{option} must be from 0 to {int(most.total_seconds())} seconds{years} from now, got {text!r}; "
            f"give {_DELAY_FORMS}."
        )
    return timedelta(seconds=seconds)


def _with_units(option: str, text: str, body: str) -> float:
    parts = list(_PART.finditer(body))
    leftover = _PART.sub("", body).replace("and", "").strip()
    if not parts or leftover or any(p.group(2) not in _UNITS for p in parts):
        raise InvalidInput(f"{option} cannot read {text!r}; give {_DELAY_FORMS}.")
    return sum(float(p.group(1)) * _UNITS[p.group(2)] for p in parts)


def parse_time(option: str, text: str, first: datetime, last: datetime) -> datetime:
    """An ISO 8601 time ('2025-01-31T09:30', '2025-01-31 09:30:00+01:00', '...Z'); UTC when it has no offset."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"{option} {text!r} is not an ISO 8601 time such as 2025-01-31T09:30:00+01:00 "
            "(for a delay from now, use --start-in)."
        ) from None
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    if not first <= when <= last:  # instants compared, so 9999-12-31T23:59:59-05:00 (no UTC form) is after
        raise InvalidInput(
            f"{option} must be a time from {first:%Y-%m-%dT%H:%M:%SZ} to {last:%Y-%m-%dT%H:%M:%SZ} in UTC, "
            f"got {text!r}."
        )
    return when

"""Pages from Jinja2 templates (autoescaped: every name, message and job value is text, never markup).

Every page answer carries an ETag of its body, and a request whose If-None-Match names it gets 304 with no
body: the live-refresh script polls each open page that way, so a page where nothing changed costs a render
and a few bytes on the wire.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from ..api import Request, Response
from ..render_tables import NO_LIMIT, STATE_STYLES, STATUS_STYLES, schedules_text

HTML = "text/html; charset=utf-8"
LIVE_HEADER = "X-Pushpool-Live"
"""Sent by the live-refresh script: the answer is the page's <main> content only (a fragment)."""
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _short(value: datetime | None) -> str:
    """Today's times as HH:MM:SS (UTC), other days with the date: for tight columns (the full time is the title)."""
    if value is None:
        return "-"
    value = value.astimezone(UTC)
    return value.strftime("%H:%M:%S") if value.date() == datetime.now(UTC).date() else value.strftime("%b %d %H:%M")


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("dispatcher.ui", "templates"),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(time=_time, short=_short, iso=_iso, json=_json, seg=lambda value: quote(str(value), safe=""))
    env.globals.update(
        state_colour=lambda state: STATE_STYLES.get(str(state), "dim"),
        status_colour=lambda status: STATUS_STYLES.get(str(status), "dim"),
        no_limit=NO_LIMIT,
        static=static_url,
        schedules_text=schedules_text,
    )
    return env


@cache
def static_file(name: str) -> bytes | None:
    """A file of ui/static, or None for a name that is not one (no path leaves the folder)."""
    if "/" in name or "\\" in name or name.startswith(".") or not any(name.endswith(s) for s in STATIC_TYPES):
        return None
    resource = files("dispatcher.ui").joinpath("static", name)
    return resource.read_bytes() if resource.is_file() else None


def static_url(name: str) -> str:
    """The file's URL with a hash of its content, so a browser never keeps an old stylesheet after an upgrade."""
    content = static_file(name) or b""
    return f"/ui/static/{name}?v={hashlib.sha256(content).hexdigest()[:12]}"


def page(
    request: Request, template: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> Response:
    """A rendered page (its fragment for a live poll), or 304 when the browser already has exactly this body."""
    live = request.headers.get(LIVE_HEADER) == "1"
    body = environment().get_template(template).render(live=live, **context)
    return cached(request, Response(status, body, {"Vary": LIVE_HEADER, **(headers or {})}, content_type=HTML))


def cached(request: Request, response: Response) -> Response:
    """Adds the ETag (and no-cache: always ask again); 304 for a GET whose If-None-Match matches."""
    tag = '"' + hashlib.sha256(response.encoded()).hexdigest()[:32] + '"'
    headers = {"ETag": tag, "Cache-Control": "private, no-cache", **response.headers}
    if request.method in ("GET", "HEAD") and response.status == 200 and request.headers.get("if-none-match") == tag:
        return Response(304, None, headers)
    response.headers = headers
    return response

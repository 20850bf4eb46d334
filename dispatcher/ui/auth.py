"""The dashboard's sign-in: a session cookie derived from the management API's bearer token, and CSRF checks.

- Signing in checks the token as the API does (constant time) and sets `pushpool_session` to
  `<issued>.<HMAC(token, "session|<issued>")>`: the token itself never sits in the browser, a session ends
  after SESSION_SECONDS, and rotating the token ends every session at once.
- The cookie is HttpOnly and SameSite=Strict, scoped to /ui, and Secure whenever the request came over
  HTTPS (an adapter behind TLS, or X-Forwarded-Proto: https from a proxy). Over plain HTTP only a loopback
  host may sign in (`pushpool serve` on 127.0.0.1), where a Secure cookie would not be kept by every browser.
- Every POST carries a CSRF token, HMAC(token, "csrf|<session>"), compared in constant time, and its
  Origin (or, without one, its Referer) must be this host: a page elsewhere can neither read nor forge it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from ipaddress import ip_address
from urllib.parse import urlsplit

from ..api import Request

COOKIE = "pushpool_session"
SESSION_SECONDS = 12 * 3600
"""How long a sign-in lasts (a working day and then some)."""
CSRF_FIELD = "csrf"


def _mac(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def new_session(token: str, now: float | None = None) -> str:
    """A session value for a browser that proved it knows `token`."""
    issued = int(time.time() if now is None else now)
    return f"{issued}.{_mac(token, f'session|{issued}')}"


def valid_session(token: str, value: str | None, now: float | None = None) -> bool:
    """Whether a cookie value was made from this token and has not expired."""
    if not value:
        return False
    issued, _, mac = value.partition(".")
    if not (issued.isascii() and issued.isdigit()):
        return False
    age = (time.time() if now is None else now) - int(issued)
    if not 0 <= age <= SESSION_SECONDS:
        return False
    return hmac.compare_digest(mac.encode(), _mac(token, f"session|{issued}").encode())


def token_matches(token: str, given: str) -> bool:
    """The sign-in form's check: the same constant-time comparison as the API's bearer check."""
    return hmac.compare_digest(given.strip().encode(), token.encode())


def csrf_token(token: str, session: str) -> str:
    """The CSRF token of one session: forms carry it, and only a page of this session can read it."""
    return _mac(token, f"csrf|{session}")


def csrf_ok(token: str, session: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), csrf_token(token, session).encode())


def session_cookie(request: Request) -> str | None:
    """The session cookie's value, or None (a malformed Cookie header counts as none)."""
    try:
        jar = SimpleCookie(request.headers.get("cookie", ""))
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def is_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.scheme == "https" or forwarded == "https"


def is_loopback(request: Request) -> bool:
    """Whether the Host the browser used is this machine (localhost, 127.0.0.0/8, ::1)."""
    host = urlsplit(f"//{request.headers.get('host', '')}").hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def set_cookie(request: Request, value: str, max_age: int = SESSION_SECONDS) -> str:
    """The Set-Cookie header for the session (an empty value with max_age 0 signs out)."""
    secure = "; Secure" if is_https(request) else ""
    return f"{COOKIE}={value}; Path=/ui; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"


def same_origin(request: Request) -> bool:
    """Whether a POST comes from a page of this host: Origin, else Referer, must name the Host header's host."""
    headers: Mapping[str, str] = request.headers
    source = headers.get("origin") or headers.get("referer")
    host = headers.get("host")
    if not source or not host or source == "null":
        return False
    return urlsplit(source).netloc.lower() == host.lower()

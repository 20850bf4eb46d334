"""Which function answers each /ui request, and the checks in front of it (sign-in, CSRF, errors as pages)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote

from ..api import API_TOKEN_ENV, Api, Request, Response
from ..errors import PushpoolError
from . import auth
from .render import HTML, STATIC_TYPES, cached, page, static_file

log = logging.getLogger("pushpool.ui")

SECURITY_HEADERS = {
    # Only our own stylesheet and script run; no page may frame the dashboard; forms post only here.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class Context:
    """What a page or action handler gets: the API (its store), the request, path parameters, the session."""

    api: Api
    request: Request
    params: dict[str, str]
    csrf: str
    form: dict[str, str]


UiHandler = Callable[[Context], Response]


@dataclass(frozen=True)
class UiRoute:
    method: str
    pattern: re.Pattern[str]
    handler: UiHandler


ROUTES: list[UiRoute] = []


def ui_route(method: str, path: str) -> Callable[[UiHandler], UiHandler]:
    """Register a page (GET) or an action (POST) under /ui; `{name}` matches one path segment."""
    pattern = re.compile("^/ui" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")

    def register(handler: UiHandler) -> UiHandler:
        ROUTES.append(UiRoute(method, pattern, handler))
        return handler

    return register


def handle_ui(api: Api, request: Request, path: str) -> Response:
    """Answer one /ui request; never raises (an unexpected error is a logged 500 page)."""
    try:
        response = _answer(api, request, path)
    except Exception:  # even the error page failed to render: say so in plain text
        log.exception("unexpected error answering %s %s", request.method, path)
        response = Response(500, "internal error; see the server log", content_type="text/plain; charset=utf-8")
    response.headers = {**SECURITY_HEADERS, **response.headers}
    return response


def _answer(api: Api, request: Request, path: str) -> Response:
    if path.startswith("/ui/static/"):
        return _static(request, path.removeprefix("/ui/static/"))
    if api.gateway_authorized:
        # Behind API Gateway's IAM authorizer every request must be SigV4-signed, which a browser cannot do.
        return message_page(
            request,
            404,
            "The dashboard is not served here",
            "This deployment authorises management calls with IAM at the gateway, and a browser cannot sign "
            "its requests; run `pushpool serve --no-dispatch` against the same store to use the dashboard "
            "(see docs/dashboard.md).",
        )
    if api.api_token is None:
        return message_page(
            request, 403, "Dashboard disabled", f"The management API is disabled: set {API_TOKEN_ENV} to sign in."
        )
    method = "GET" if request.method == "HEAD" else request.method
    matches = [(r, m) for r in ROUTES if (m := r.pattern.match(path))]
    if not matches:
        return message_page(request, 404, "Not found", f"There is no dashboard page at {path}.")
    chosen = next(((r, m) for r, m in matches if r.method == method), None)
    if chosen is None:
        allowed = ", ".join(sorted({r.method for r, _ in matches}))
        return message_page(
            request, 405, "Method not allowed", f"{request.method} is not allowed on {path}; use {allowed}."
        )
    route, match = chosen
    params = {k: unquote(v) for k, v in match.groupdict().items()}
    form = _form(request) if method == "POST" else {}
    session = auth.session_cookie(request)
    signed_in = auth.valid_session(api.api_token, session)
    public = route.handler.__name__ in PUBLIC
    if not public and not signed_in:
        if method == "GET":
            target = path + (
                ("?" + "&".join(f"{k}={quote(v)}" for k, v in request.query.items())) if request.query else ""
            )
            return Response(303, None, {"Location": f"/ui/login?next={quote(target, safe='')}"})
        return message_page(
            request, 401, "Sign in first", "This action needs a signed-in session; nothing was changed."
        )
    csrf = auth.csrf_token(api.api_token, session) if signed_in and session else ""
    if method == "POST":
        if not auth.same_origin(request):
            return message_page(
                request, 403, "Refused", "The form was not sent from a page of this dashboard; nothing was changed."
            )
        if not public and not auth.csrf_ok(api.api_token, session or "", form.get(auth.CSRF_FIELD)):
            return message_page(
                request,
                403,
                "Refused",
                "The form's CSRF token is missing or wrong (an old page?); reload the page and try again. "
                "Nothing was changed.",
            )
    context = Context(api, request, params, csrf, form)
    try:
        return route.handler(context)
    except PushpoolError as exc:
        title = "Not found" if exc.http_status == 404 else "Cannot do that"
        return message_page(request, exc.http_status, title, str(exc), csrf=csrf)
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, path)
        return message_page(request, 500, "Internal error", "Something went wrong; see the server log.", csrf=csrf)


PUBLIC = {"login_form", "login"}
"""Handlers a browser reaches before signing in."""


def _form(request: Request) -> dict[str, str]:
    """A urlencoded form body, one value per field (the first)."""
    try:
        text = request.body.decode()
    except UnicodeDecodeError:
        return {}
    form: dict[str, str] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        form.setdefault(key, value)
    return form


def _static(request: Request, name: str) -> Response:
    content = static_file(name)
    if content is None or request.method not in ("GET", "HEAD"):
        return Response(404, f"no file {name}", content_type="text/plain; charset=utf-8")
    kind = next(t for suffix, t in STATIC_TYPES.items() if name.endswith(suffix))
    return cached(request, Response(200, content, content_type=kind))


def message_page(request: Request, status: int, title: str, message: str, *, csrf: str = "") -> Response:
    """A page that says one thing: a 404 naming what was not found, a refusal, an error."""
    return page(request, "message.html", status, title=title, message=message, csrf=csrf, nav="")


__all__ = ["HTML", "Context", "handle_ui", "message_page", "ui_route"]

"""The dashboard's pages (GET) and its sign-in and sign-out."""

from __future__ import annotations

from ..api import _state_param
from ..errors import InvalidInput
from . import auth, views
from .render import page
from .router import Context, Response, ui_route


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path only, never another site (//evil, /\\evil, https:...)."""
    if not target or not target.startswith("/ui") or target.startswith(("//", "/\\")) or "\\" in target:
        return "/ui"
    return target


def redirect(location: str, headers: dict[str, str] | None = None) -> Response:
    return Response(303, None, {"Location": location, **(headers or {})})


# sign-in ---------------------------------------------------------------------------------------------------
@ui_route("GET", "/login")
def login_form(c: Context) -> Response:
    target = safe_next(c.request.query.get("next"))
    if c.csrf:  # already signed in
        return redirect(target)
    return page(c.request, "login.html", next=target, error=None, csrf="")


@ui_route("POST", "/login")
def login(c: Context) -> Response:
    token = c.api.api_token
    assert token is not None  # the router answers before any route when the API is disabled
    target = safe_next(c.form.get("next"))
    if not auth.is_https(c.request) and not auth.is_loopback(c.request):
        error = (
            "Signing in over plain HTTP is only allowed on this machine (localhost); "
            "serve the dashboard behind HTTPS to sign in from elsewhere."
        )
        return page(c.request, "login.html", 403, next=target, error=error, csrf="")
    if not auth.token_matches(token, c.form.get("token", "")):
        error = "Wrong token: use the management API's bearer token (PUSHPOOL_API_TOKEN)."
        return page(c.request, "login.html", 401, next=target, error=error, csrf="")
    cookie = auth.set_cookie(c.request, auth.new_session(token))
    return redirect(target, {"Set-Cookie": cookie})


@ui_route("POST", "/logout")
def logout(c: Context) -> Response:
    return redirect("/ui/login", {"Set-Cookie": auth.set_cookie(c.request, "", max_age=0)})


# pages -----------------------------------------------------------------------------------------------------
@ui_route("GET", "")
def pools(c: Context) -> Response:
    return page(c.request, "pools.html", rows=views.pool_rows(c.api.store), csrf=c.csrf, nav="pools")


@ui_route("GET", "/pools")
def pools_alias(c: Context) -> Response:
    return redirect("/ui")


@ui_route("GET", "/pools/{pool}")
def pool(c: Context) -> Response:
    return pool_view(c)


def pool_view(c: Context, *, status: int = 200, error: str | None = None) -> Response:
    """The pool page; actions re-render it with their error when they refuse a value."""
    data = views.pool_page(c.api.store, c.params["pool"])
    return page(c.request, "pool.html", status, p=data, csrf=c.csrf, nav="pools", error=error)


@ui_route("GET", "/runs")
def runs(c: Context) -> Response:
    q = {k: v for k, v in c.request.query.items() if v != ""}  # a filter left at "any" is sent empty
    allowed = ("pool", "queue", "deployment", "state", "cursor")
    unknown = sorted(set(q) - set(allowed))
    if unknown:
        raise InvalidInput(f"unknown query parameter {unknown[0]!r}; allowed: {', '.join(allowed)}.")
    f = views.RunFilter(
        pool=q.get("pool"),
        queue=q.get("queue"),
        deployment=q.get("deployment"),
        state=_state_param(q),
        cursor=q.get("cursor"),
    )
    if f.queue is not None and f.pool is None:
        raise InvalidInput("query parameter queue needs pool: a queue name is only unique within its pool.")
    return page(c.request, "runs.html", r=views.runs_page(c.api.store, f), csrf=c.csrf, nav="runs")


@ui_route("GET", "/runs/{run_id}")
def run(c: Context) -> Response:
    return run_view(c)


def run_view(c: Context, *, status: int = 200, error: str | None = None) -> Response:
    data = views.run_page(c.api.store, c.params["run_id"])
    return page(c.request, "run.html", status, r=data, csrf=c.csrf, nav="runs", error=error)


@ui_route("GET", "/runs/{run_id}/logs")
def run_logs(c: Context) -> Response:
    data = views.run_page(c.api.store, c.params["run_id"], with_logs=True)
    return page(c.request, "logs.html", r=data, csrf=c.csrf, nav="runs")

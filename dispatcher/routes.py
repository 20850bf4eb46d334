"""The HTTP route table: what each route of `api.py` takes and gives, declared once, beside its handler.

`@table.route(...)` registers a handler with everything a client needs to know about it: the path template,
the query parameters with their types, the body model, the response type and status, and whether the bearer
token guards it. `Api.handle` routes with it and `openapi.document` describes it, so a route cannot exist
without being documented, nor be documented without existing. The handler's docstring is the operation's
summary (its first line) and description (the rest); a handler without one is refused when registered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

H = TypeVar("H", bound=Callable[..., Any])

NO_CONTENT = None
"""`response=NO_CONTENT`: the route answers 204 without a body."""


@dataclass(frozen=True)
class QueryParam:
    """One query parameter: its name, its JSON Schema (what the route accepts) and what it means."""

    name: str
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    """The template as documented, `{name}` for a path segment: `/work_pools/{pool}/queues/{queue}`."""
    pattern: re.Pattern[str]
    handler: Callable[..., Any]
    management: bool
    """True: the bearer token (or the gateway's IAM) guards it. False: open, or signed (the callbacks)."""
    query: tuple[QueryParam, ...]
    body: type[BaseModel] | None
    """The JSON body the route reads, as a model (validation mode); None: no body."""
    response: Any
    """What a success returns, as a type pydantic can describe (a model, `list[Model]`, a dataclass, a
    TypedDict, `dict[str, Any]`, `str` for a page); NO_CONTENT for 204."""
    status: int
    content_type: str
    signed: bool
    """A callback route: authenticated by the run's HMAC signature header instead of the bearer token."""
    headers: tuple[tuple[str, str], ...] = ()
    """Headers a success may carry besides Content-Type: (name, what it says)."""

    @property
    def query_names(self) -> tuple[str, ...]:
        return tuple(q.name for q in self.query)

    @property
    def path_parameters(self) -> list[str]:
        return list(self.pattern.groupindex)

    @property
    def summary(self) -> str:
        return (self.handler.__doc__ or "").strip().splitlines()[0].strip()

    @property
    def description(self) -> str:
        lines = (self.handler.__doc__ or "").strip().splitlines()[1:]
        return " ".join(line.strip() for line in lines if line.strip())


class RouteTable:
    """The routes of one API, in registration order (the order the document lists them)."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def route(
        self,
        method: str,
        path: str,
        *,
        response: Any,
        status: int = 200,
        body: type[BaseModel] | None = None,
        query: tuple[QueryParam, ...] = (),
        management: bool = True,
        signed: bool = False,
        content_type: str = "application/json",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Callable[[H], H]:
        """Register a handler; `{name}` in `path` matches one path segment, handed over URL-decoded.

        `response` is required (NO_CONTENT for a 204), so no route is added without saying what it returns.
        """
        pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")

        def register(handler: H) -> H:
            if not (handler.__doc__ or "").strip():
                raise TypeError(f"route {method} {path}: its handler needs a docstring (the operation's summary)")
            if any(r.method == method and r.path == path for r in self._routes):
                raise ValueError(f"route {method} {path} is registered twice")
            self._routes.append(
                Route(
                    method,
                    path,
                    pattern,
                    handler,
                    management,
                    query,
                    body,
                    response,
                    status,
                    content_type,
                    signed,
                    headers,
                )
            )
            return handler

        return register

    def match(self, path: str) -> list[tuple[Route, re.Match[str]]]:
        """Every route whose pattern matches `path` (any method), with its match."""
        return [(r, m) for r in self._routes if (m := r.pattern.match(path))]

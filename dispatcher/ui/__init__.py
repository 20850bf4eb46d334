"""The web dashboard under /ui: server-rendered pages over the same store and core as the API.

`Api.handle` hands every /ui request to `handle_ui`, so `pushpool serve`, the AWS http function and the
Azure app serve it alike. Routes live in `pages` (GET) and `actions` (POST forms); `auth` signs browsers in
and checks CSRF; templates and the static stylesheet and script ship inside the package.
"""

from __future__ import annotations

from . import actions, pages  # noqa: F401 - importing them registers their routes
from .router import handle_ui

__all__ = ["handle_ui"]

"""The interactive page for the OpenAPI document (`GET /docs`): one small hand-written HTML file, package data.

No CDN and no vendored Swagger UI (docs/decisions.md, "OpenAPI"): the page fetches `openapi.json` beside it,
lists the operations by tag with their parameters and schemas, and has a form per operation that sends the
request with the bearer token typed into the page (kept in the page's memory only, never stored). Its one
inline script and stylesheet are allowed by hash in a Content-Security-Policy that allows nothing else
but requests to this origin.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

PAGE_FILE = "docs_page.html"


def _hashes(html: str, tag: str) -> list[str]:
    """CSP source expressions for each inline `<tag>` block of the page."""
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    return [f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks]


@dataclass(frozen=True)
class DocsPage:
    html: str

    def headers(self) -> dict[str, str]:
        """The page's security headers: only its own script and style run; it talks to this origin only."""
        csp = "; ".join(
            [
                "default-src 'none'",
                "script-src " + " ".join(_hashes(self.html, "script")),
                "style-src " + " ".join(_hashes(self.html, "style")),
                "connect-src 'self'",
                "base-uri 'none'",
                "form-action 'none'",
                "frame-ancestors 'none'",
            ]
        )
        return {
            "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        }


def page() -> DocsPage:
    """The page, read from the package."""
    return DocsPage(resources.files(__package__).joinpath(PAGE_FILE).read_text(encoding="utf-8"))

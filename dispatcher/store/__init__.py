"""Stores, chosen by URL: `sqlite:///PATH` (the embedded default) or `dynamodb://TABLE?region=R`.

Backends are imported on demand, so the SQLite CLI never loads boto3 and a Lambda never loads sqlite code.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ConfigError
from .base import Store

DEFAULT_URL = "sqlite:///" + str(Path("~/.pushpool/pushpool.db"))
ENV_VAR = "PUSHPOOL_STORE"


_USE = "use sqlite:///PATH or dynamodb://TABLE?region=REGION"


def store_url(explicit: str | None = None) -> str:
    """The store URL from the flag, else PUSHPOOL_STORE, else the default SQLite file.

    Only an absent flag and an unset variable mean the default: an empty one is passed on, for `open_store` to
    refuse, rather than quietly opening ~/.pushpool/pushpool.db.
    """
    if explicit is not None:
        return explicit
    return os.environ.get(ENV_VAR, DEFAULT_URL)


def open_store(url: str | None = None) -> Store:
    url = store_url(url)
    if not url.strip():
        raise ConfigError(f"the store URL (--store or {ENV_VAR}) is empty; {_USE}, or leave both unset for the default")
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        # Exactly `sqlite:///` then a path: `sqlite://` or `SQLITE:///x` would otherwise open a file named after
        # the URL in the working directory.
        if not url.startswith("sqlite:///") or url == "sqlite:///":
            raise ConfigError(f"store URL {url!r} names no file; {_USE}")
        from .sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if scheme == "dynamodb":
        from .dynamodb import DynamoDBStore

        return DynamoDBStore.from_url(url)
    raise ConfigError(f"store URL {url!r} is not supported; {_USE}")


__all__ = ["DEFAULT_URL", "ENV_VAR", "Store", "open_store", "store_url"]

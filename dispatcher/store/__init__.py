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


def store_url(explicit: str | None = None) -> str:
    """The store URL from the flag, else PUSHPOOL_STORE, else the default SQLite file."""
    return explicit or os.environ.get(ENV_VAR) or DEFAULT_URL


def open_store(url: str | None = None) -> Store:
    url = store_url(url)
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if scheme == "dynamodb":
        from .dynamodb import DynamoDBStore

        return DynamoDBStore.from_url(url)
    raise ConfigError(f"store URL {url!r} is not supported; use sqlite:///PATH or dynamodb://TABLE?region=REGION")


__all__ = ["DEFAULT_URL", "ENV_VAR", "Store", "open_store", "store_url"]

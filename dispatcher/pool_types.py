"""Pool types and their default base job templates (the JSON files in `templates/`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError, InvalidInput

KNOWN_TYPES = ("process", "ecs:push", "cloud-run-v2:push", "azure-container-instance:push", "modal:push")


def _template_dirs() -> list[Path]:
    # A source checkout keeps templates/ beside the package; a wheel installs them under share/.
    return [Path(__file__).resolve().parents[1] / "templates", Path(sys.prefix) / "share" / "pushpool" / "templates"]


def check_type(pool_type: str) -> str:
    if pool_type not in KNOWN_TYPES:
        raise InvalidInput(f"type {pool_type!r} is not a pool type; use one of: {', '.join(KNOWN_TYPES)}")
    return pool_type


def default_template(pool_type: str) -> dict[str, Any]:
    """The default base job template of a type, as shipped in `templates/<type with : as ->.json`."""
    check_type(pool_type)
    filename = pool_type.replace(":", "-") + ".json"
    for folder in _template_dirs():
        path = folder / filename
        if path.is_file():
            data: dict[str, Any] = json.loads(path.read_text())
            return data
    raise ConfigError(
        f"type {pool_type!r} has no default base job template in this release; pass --base-job-template FILE"
    )

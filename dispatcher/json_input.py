"""JSON text from a user (a CLI option, an HTTP request body) holds standard JSON numbers only.

Python's `json` module and pydantic's parser both take `NaN`, `Infinity` and `-Infinity`, and read `1e999` as
infinity; none of them is a JSON number (RFC 8259), and once stored they come back as `null`. `loads` refuses
them in one sentence naming where the text came from; `refuse_non_finite` does the same for data parsed some
other way (YAML's `.nan` and `.inf`; an HTTP body pydantic has parsed, in `callbacks.parse_json_body`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NoReturn

from .errors import InvalidInput

NOT_NUMBERS = "NaN/Infinity are not numbers"
MAX_FILE_BYTES = 1024 * 1024
"""The most pushpool reads of a file a user names (@FILE, a template, an apply document): the HTTP body bound.
A JSON value in it is still held to the models' bounds (64 KB; a run's parameters 512 KB); this bound only stops an
endless or huge file (`@/dev/zero`) from being read into memory at all."""


def non_finite_sentence(what: str, kind: str = "JSON") -> str:
    """`--parameters is not valid JSON: NaN/Infinity are not numbers.`"""
    return f"{what} is not valid {kind}: {NOT_NUMBERS}."


def loads(text: str | bytes, what: str, *, error: type[InvalidInput] = InvalidInput) -> Any:
    """`json.loads`, except that NaN, Infinity, -Infinity and numbers beyond a float (1e999) raise `error`.

    `what` names the source in the sentence ("--parameters", "the request body"). Text that is not JSON at all
    raises `json.JSONDecodeError` (a ValueError) as usual, and nesting deeper than Python's parser goes raises
    RecursionError, for the caller to word.
    """

    def refuse(_: str) -> NoReturn:
        raise error(non_finite_sentence(what))

    def finite(number: str) -> float:
        value = float(number)
        if not math.isfinite(value):
            refuse(number)
        return value

    return json.loads(text, parse_constant=refuse, parse_float=finite)


def refuse_non_finite(data: Any, what: str, kind: str = "JSON", *, error: type[InvalidInput] = InvalidInput) -> None:
    """Raise `error` if `data` (dicts, lists and scalars, as a parser returns them) holds a NaN or infinite float."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise error(non_finite_sentence(what, kind))
        if isinstance(item, dict):
            stack.extend(item.keys())  # YAML takes `.nan: 1` as a key
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def read_text(path: Path, option: str | None = None) -> str:
    """A file's UTF-8 text, read with a bound: past MAX_FILE_BYTES it is refused in one sentence naming the
    file (and the option that named it).

    Raises OSError and UnicodeDecodeError as `Path.read_text` does, for the caller to word.
    """
    with path.open("rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInput(
            f"{option + ': ' if option else ''}{str(path)!r} is larger than {MAX_FILE_BYTES // 1024} KB, the most "
            "pushpool reads from one file."
        )
    return data.decode("utf-8")

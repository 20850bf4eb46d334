"""Text a job wrote, made safe to show on an operator's terminal (SPEC §8).

A job controls its callback `message`, its output and, through the provider, some of the words in a run's
state history. Shown raw, `ESC[2J` clears the operator's screen, an OSC sequence retitles the window or
plants a link, and a bidi override (U+202E) makes a line read other than it is. Every output path that
shows such text (`flow-run inspect`, `ls`, `logs`, timelines, pass summaries, errors) passes it through
`safe_text` first; rich renderings are also made with markup off, so `[red]` or `[link=...]` is only text.
"""

from __future__ import annotations

import re

__all__ = ["escape_json_text", "safe_text"]

_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"  # C0 (but tab and newline, handled below), DEL, C1 (CSI, OSC, ...)
    "\u00ad\u061c\u115f\u1160\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ufeff\ufff9-\ufffb"
    "\U000e0000-\U000e007f]"  # bidi, zero-width and other invisible format characters, tags
)
_LINE_BREAKS = re.compile("[\t\n]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def safe_text(text: str, *, keep_lines: bool = False) -> str:
    """`text` with every control and invisible format character written as an escape (`\\x1b`, `\\u202e`).

    Tabs and newlines are escaped too, so one message stays one line, unless `keep_lines` (a job's output,
    shown as the lines it wrote).
    """
    escaped = _UNSAFE.sub(_escape, text)
    return escaped if keep_lines else _LINE_BREAKS.sub(_escape, escaped)


def escape_json_text(text: str) -> str:
    """JSON text with the characters json.dumps leaves raw under ensure_ascii=False (C1, bidi, format) as
    `\\uXXXX` escapes: still the same valid JSON, and nothing a terminal would act on."""
    return _UNSAFE.sub(lambda m: "".join(f"\\u{unit:04x}" for unit in _utf16(m.group(0))), text)


def _utf16(char: str) -> list[int]:
    data = char.encode("utf-16-be")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]

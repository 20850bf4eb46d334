"""Commands in base job templates (SPEC §8): a value is never more than one argument and never shell syntax.

A template's `command` (also `args` and `entryPoint`, which container platforms join to it) is split into
arguments *before* values are put in, so a value with spaces or `;` stays inside the argument it was written
in. When the command runs a shell on a script (`sh -c '... {{ x }} ...'`, also bash, dash, zsh, ksh, ash,
mksh, by path or through `env`), each value put into that script is quoted (`shlex.quote`): the shell reads
it as one word, whatever it holds. Where quoting cannot make a value one word (inside quotes, after `\\` or
`$`, in a comment, inside backticks, after a here-document, in a fish or csh script), and where a value
would become code of another language (`python -c`, `perl -e`, `node -e`, ...), the template is refused
when it is written, and again when it is rendered. The rules live here, once; `templating` calls them.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from .errors import TemplateError

__all__ = ["ARGV_KEYS", "Argument", "plan"]

ARGV_KEYS = ("entryPoint", "command", "args")
"""Keys whose value is a command line, in the order a container platform joins them into one."""

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "busybox"})
"""Shells whose `-c` script gets its values quoted: all of them read `'...'` as one literal word."""

UNQUOTABLE_SHELLS = frozenset({"fish", "csh", "tcsh"})
"""Shells whose quoting differs (a backslash escapes inside fish's single quotes): no value goes in a script."""

_INTERPRETER_FLAGS = (
    (re.compile(r"python[0-9.]*|pypy[0-9.]*"), "c"),
    (re.compile(r"perl[0-9.]*"), "eE"),
    (re.compile(r"ruby[0-9.]*"), "e"),
    (re.compile(r"node(js)?|deno|bun"), "ep"),
    (re.compile(r"php[0-9.]*"), "r"),
)
"""Programs that take code in an argument, and the option letters that introduce it."""

_PROTECT = "\ue000{}\ue001"
"""Stands in for a placeholder while the template is split: no whitespace or quote a split would act on."""


@dataclass(frozen=True)
class Argument:
    """One argument of a command template: its text with placeholders, and whether it is a shell script."""

    text: Any
    script: bool = False


def plan(
    node: Any, placeholder: re.Pattern[str], where: str, *, before: list[str] | None = None
) -> tuple[list[Argument], bool] | None:
    """The arguments of a command template, or None when it needs no argument-aware rendering.

    `node` is a string or a list (the value of an `ARGV_KEYS` key); `before` holds the literal arguments of
    the keys a platform puts in front of it (a container's `entryPoint` before its `command`), so that
    `entryPoint: [sh, -c]` is seen too. The answer is the arguments and whether they came from splitting a
    string; None for a string without a placeholder (the provider splits it) or that is exactly one
    placeholder (the value is the whole command, with its type).
    Raises TemplateError, naming `where` and the placeholder, for a template no value can safely fill.
    """
    if isinstance(node, str):
        if not placeholder.search(node) or placeholder.fullmatch(node):
            return None
        texts, from_string = _split(node, placeholder, where), True
    elif isinstance(node, list):
        texts, from_string = list(node), False
    else:
        return None
    front = before or []
    strings = [text if isinstance(text, str) else "" for text in texts]
    script_at, program = _script_position(front + strings)
    arguments = []
    for index, text in enumerate(texts, start=len(front)):
        is_script = index == script_at
        if is_script and isinstance(text, str) and placeholder.search(text):
            _check_script(text, program, placeholder, where)
        arguments.append(Argument(text, script=is_script and program in SHELLS))
    return arguments, from_string


def _split(text: str, placeholder: re.Pattern[str], where: str) -> list[str]:
    """Split like a shell would (no shell runs), each placeholder kept whole inside its argument."""
    found: list[str] = []

    def protect(match: re.Match[str]) -> str:
        found.append(match.group(0))
        return _PROTECT.format(len(found) - 1)

    try:
        parts = shlex.split(placeholder.sub(protect, text))
    except ValueError as exc:
        raise TemplateError(f"{where}: cannot be split like a shell command line ({exc}).") from None
    restore = re.compile(_PROTECT.format(r"(\d+)"))
    return [restore.sub(lambda m: found[int(m.group(1))], part) for part in parts]


def _program(argument: str) -> str:
    return argument.rsplit("/", 1)[-1]


def _script_position(args: list[str]) -> tuple[int | None, str]:
    """Where the script or code argument is (`sh -c SCRIPT`, `python -c CODE`), and the program's name."""
    start = 0
    if args and _program(args[0]) == "env":
        start = 1
        while start < len(args) and (args[start].startswith("-") or "=" in args[start]):
            start += 1
    if start >= len(args):
        return None, ""
    program = _program(args[start])
    if program == "busybox" and start + 1 < len(args):  # `busybox sh -c ...`
        start += 1
        program = _program(args[start])
    if program in SHELLS or program in UNQUOTABLE_SHELLS:
        letters = "c"
    else:
        letters = next((flags for pattern, flags in _INTERPRETER_FLAGS if pattern.fullmatch(program)), "")
        if not letters:
            return None, program
    index = start + 1
    while index < len(args):
        option = args[index]
        if option in ("--eval", "--print", "--command"):
            return index + 1, program
        if option == "--" or not option.startswith(("-", "+")) or len(option) < 2:
            return None, program
        if not option.startswith("--") and set(option[1:]) & set(letters):
            return index + 1, program
        # A shell's -o/-O take a value of their own (`bash -o pipefail -c ...`).
        index += 2 if option in ("-o", "+o", "-O", "+O") else 1
    return None, program


def _check_script(script: str, program: str, placeholder: re.Pattern[str], where: str) -> None:
    """Refuse a script in which a placeholder cannot be filled as one quoted word."""
    first = placeholder.search(script)
    name = first.group(0) if first else "a placeholder"
    if program in UNQUOTABLE_SHELLS:
        raise TemplateError(
            f"{where}: {name} is inside a {program} script, whose quoting pushpool cannot make safe; pass the "
            f"value as an argument after the script or in env instead."
        )
    if program not in SHELLS:
        raise TemplateError(
            f"{where}: {name} is inside code that {program} runs, where a value would become code; pass the "
            f"value as an argument after the code or in env instead."
        )
    problem = _unsafe_spot(script, placeholder)
    if problem is not None:
        found, why = problem
        raise TemplateError(
            f"{where}: {found} is {why} in the {program} script, where quoting cannot keep a value one word; "
            f"write it bare (pushpool quotes each value itself) or pass it in env."
        )


def _unsafe_spot(script: str, placeholder: re.Pattern[str]) -> tuple[str, str] | None:
    """The first placeholder a shell would not read as a plain word once quoted, and why; None if none."""
    state = "plain"
    heredoc = False
    index = 0
    while index < len(script):
        match = placeholder.match(script, index)
        if match is not None:
            before = script[index - 1] if index else ""
            if state != "plain":
                return match.group(0), state
            if heredoc:
                return match.group(0), "after a here-document (<<)"
            if before == "$":
                return match.group(0), "right after '$'"
            index = match.end()
            continue
        char = script[index]
        if char == "\\" and state != "inside single quotes" and state != "in a comment":
            escaped = placeholder.match(script, index + 1)
            if escaped is not None:
                return escaped.group(0), "right after a backslash"
            index += 2  # the escaped character is text, whatever it is
            continue
        if state == "plain":
            if script.startswith("<<<", index):
                index += 3
                continue
            if script.startswith("<<", index):
                heredoc = True
            elif char == "'":
                state = "inside single quotes"
            elif char == '"':
                state = "inside double quotes"
            elif char == "`":
                state = "inside backticks"
            elif char == "#" and (index == 0 or script[index - 1] in " \t\n;&|()"):
                state = "in a comment"
        elif state == "inside single quotes":
            if char == "'":
                state = "plain"
        elif state == "in a comment":
            if char == "\n":
                state = "plain"
        elif char == ('"' if state == "inside double quotes" else "`"):  # inside double quotes or backticks
            state = "plain"
        index += 1
    return None

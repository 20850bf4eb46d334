"""Hypothesis fuzzing of every HTTP route and every CLI command: templates, variables, names and bodies.

Routes: every route registered in dispatcher/api.py, through a real `pushpool serve` HTTP server on a free
local port, with fuzzed path segments, query strings and JSON bodies (base job templates with random
placeholders and schemas, job variables, parameters, limits, schedules, callback bodies) and raw bytes.
Commands: every `pushpool` command (typer's CliRunner, in process) with fuzzed arguments and options,
files holding fuzzed YAML/JSON for the options that read one. `serve`, `dispatch` and `--watch` are left out
(they run jobs or wait for them in a loop; the other scenarios drive those), and `import prefect`, which
talks to a Prefect server at a URL.

Figures: 5xx answers (0), tracebacks (unhandled exceptions, or "Traceback" in the output: 0), partial writes
(a refused call that changed the store: 0).
"""

from __future__ import annotations

import http.client
import json
import logging
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import pytest
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import Figures, size
from typer.testing import CliRunner

from dispatcher import deployments, pools
from dispatcher.api import ROUTES, Api
from dispatcher.callbacks import master_secret
from dispatcher.cli import app
from dispatcher.http_server import make_server
from dispatcher.models import utcnow
from dispatcher.store.sqlite import SQLiteStore

TOKEN = "fuzz-token"
FIELDS = [
    "name", "type", "description", "concurrency_limit", "paused", "base_job_template", "job_variables",
    "parameters", "priority", "queue", "pool", "schedules", "schedule_paused", "tags", "state", "exit_code",
    "message", "at", "start_in", "scheduled_time", "cron", "interval", "rrule", "timezone", "command", "env",
]  # fmt: skip
LEFT_OUT = ("serve", "dispatch", "import")
"""Commands the CLI fuzz leaves out: they run jobs or loops, or talk to a server (`import prefect --api-url`)."""
LOOPING_OPTIONS = {"--watch"}
"""Options that make a command wait in a loop for something only a dispatcher would do."""
NAMES = ["p", "default", "q", "d", "nope", "", " ", "a/b", "%2F", "..", "x" * 101, "pushpool-x", "\u200b", "é"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(NAMES + ["{{ x }}", "{{ $HOME }}", "{{ command }}", "prod; id", "$(id)", "#/definitions/X"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=10)), inner, max_size=5),
    ),
    max_leaves=12,
)
properties = st.dictionaries(
    st.sampled_from(["command", "env", "x", "name", "image", "$ref"]),
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["string", "integer", "object", "array", "boolean", "nope"]),
            "default": json_values,
            "$ref": st.sampled_from(["#/definitions/X", "#", "#/properties/x", "http://127.0.0.1:1/x"]),
            "enum": st.lists(scalars, max_size=3),
            "minimum": st.integers(),
            "pattern": st.sampled_from(["^a", "(", ".*"]),
        },
    ),
    max_size=3,
)
templates = st.fixed_dictionaries(
    {
        "job_configuration": st.dictionaries(
            st.sampled_from(["command", "env", "name", "working_dir", "x"]),
            st.one_of(
                st.sampled_from(["{{ command }}", "{{ x }}", "{{ $HOME }}", "a {{ name }} b", "{{"]), json_values
            ),
            max_size=4,
        ),
        "variables": st.fixed_dictionaries({"type": st.just("object"), "properties": properties}),
    },
    optional={"extra": json_values},
)
bodies = st.one_of(
    st.dictionaries(
        st.sampled_from(FIELDS),
        st.one_of(json_values, templates, st.lists(st.fixed_dictionaries({"cron": st.text(max_size=12)}), max_size=2)),
        max_size=6,
    ).map(lambda d: json.dumps(d).encode()),
    templates.map(lambda t: json.dumps({"name": "n", "base_job_template": t}).encode()),
    st.binary(max_size=60),
    st.sampled_from([b"", b"{", b"[]", b"null", b'{"concurrency_limit": 1e999}', b'{"a": NaN}', b"\xff\xfe"]),
)


def dump(db: Path) -> list[str]:
    """The whole store as SQL statements: two equal dumps mean nothing was written."""
    with sqlite3.connect(db) as conn:
        return list(conn.iterdump())


def seeded_store(db: Path) -> SQLiteStore:
    store = SQLiteStore(str(db))
    pools.create_pool(store, "p", concurrency_limit=2)
    pools.create_queue(store, "p", "q", priority=2)
    deployments.create_deployment(store, "d", pool="p", job_variables={"command": "echo hi"})
    deployments.run_deployment(store, "d", scheduled_time=utcnow() + timedelta(days=1))
    # The callback secret is made on first use, by whichever call needs it first (even a refused callback):
    # made here, so that a refused call's write means a half-written change.
    master_secret(store)
    return store


class Traceback(logging.Handler):
    """Counts records logged with an exception (what an unexpected error in a handler produces)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += record.exc_info is not None


@pytest.fixture
def tracebacks() -> Iterator[Traceback]:
    handler = Traceback()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


def test_fuzzed_requests_on_every_route(tmp_path: Path, figures: Figures, tracebacks: Traceback) -> None:
    db = tmp_path / "fuzz.db"
    store = seeded_store(db)
    run_id = store.list_runs("p")[0].id
    server = make_server(Api(store, api_token=TOKEN), "127.0.0.1", 0, read_timeout=5)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    seen = {"requests": 0, "5xx": 0, "partial writes": 0}
    wrote: list[str] = []
    routes = [(r.method, r.pattern.pattern.strip("^$"), r.query_names) for r in ROUTES]

    @settings(max_examples=size(250, 1500), deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        st.sampled_from(routes),
        st.lists(
            st.one_of(st.sampled_from([*NAMES, run_id]), st.text(min_size=1, max_size=20)), min_size=3, max_size=3
        ),
        bodies,
        st.dictionaries(
            st.sampled_from(["hours", "queue", "pool", "state", "limit", "parameters", "job_variables", "x"]),
            st.text(max_size=8),
            max_size=2,
        ),
        st.booleans(),
    )
    def request(
        route: tuple[str, str, tuple[str, ...]], segments: list[str], body: bytes, query: dict[str, str], auth: bool
    ) -> None:
        method, pattern, _ = route
        path = pattern
        for segment in segments:
            path = (
                path.replace(
                    path[path.find("(?P<") : path.find(")", path.find("(?P<")) + 1],
                    urllib.parse.quote(segment, safe=""),
                    1,
                )
                if "(?P<" in path
                else path
            )
        if query:
            path += "?" + urllib.parse.urlencode(query)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN if auth else 'wrong'}"}
        before = dump(db)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(method, path, body=body if method in ("POST", "PATCH", "PUT") else None, headers=headers)
        status = conn.getresponse().status
        conn.close()
        seen["requests"] += 1
        seen["5xx"] += status >= 500
        after = dump(db)
        if status >= 400 and after != before:
            seen["partial writes"] += 1
            changed = sorted(set(after) ^ set(before))
            wrote.append(f"{method} {path} {body[:300]!r} -> {status}; changed: {changed[:4]}")
        assert status < 500, (method, path, body[:200])

    try:
        request()
    finally:
        server.shutdown()
        server.server_close()
        store.close()
        figures.record("fuzz, HTTP routes", f"requests over {len(routes)} routes", seen["requests"])
        figures.record("fuzz, HTTP routes", "5xx answers", seen["5xx"], target=0)
        figures.record("fuzz, HTTP routes", "tracebacks logged", tracebacks.count, target=0)
        figures.record("fuzz, HTTP routes", "refused calls that wrote", seen["partial writes"], target=0)
    assert wrote == [] and tracebacks.count == 0


def _commands() -> list[tuple[tuple[str, ...], list[click.Parameter]]]:
    found: list[tuple[tuple[str, ...], list[click.Parameter]]] = []

    def walk(command: Any, prefix: tuple[str, ...]) -> None:
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, (*prefix, name))
        elif prefix[0] not in LEFT_OUT:
            found.append((prefix, list(command.params)))

    walk(typer.main.get_command(app), ())
    return found


def test_fuzzed_arguments_on_every_command(tmp_path: Path, figures: Figures, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "fuzz.db"
    seeded_store(db).close()
    monkeypatch.setenv("PUSHPOOL_STORE", f"sqlite:///{db}")
    monkeypatch.setenv("PUSHPOOL_PROCESS_DIR", str(tmp_path / "processes"))
    files = tmp_path / "files"
    files.mkdir()
    commands = _commands()
    runner = CliRunner()
    seen = {"calls": 0, "tracebacks": 0, "partial writes": 0}
    counter = iter(range(10**9))

    def as_file(text: str) -> str:
        path = files / f"f{next(counter)}.yaml"
        path.write_text(text)
        return str(path)

    file_content = st.one_of(
        templates.map(json.dumps), json_values.map(json.dumps), st.text(max_size=80), st.just("work_pools: [{name: x}]")
    )
    option_value = st.one_of(
        st.sampled_from([*NAMES, "1", "0", "-1", "1e309", "nan", "2", "ecs:push", "process", "json", "*/5 * * * *"]),
        st.text(max_size=30),
        json_values.map(json.dumps),
        file_content.map(lambda t: "@" + as_file(t)),
    )

    @settings(max_examples=size(250, 1500), deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.sampled_from(commands), st.data())
    def invoke(command: tuple[tuple[str, ...], list[click.Parameter]], data: st.DataObject) -> None:
        words, params = command
        args: list[str] = list(words)
        for param in params:
            name = param.opts[0] if param.opts else param.name
            if name in LOOPING_OPTIONS:
                continue
            is_file = name in ("file", "--base-job-template")
            if isinstance(param, click.Argument) or name == "file":
                args.append(as_file(data.draw(file_content)) if is_file else data.draw(option_value))
            elif getattr(param, "is_flag", False):
                if data.draw(st.booleans()):
                    args.append(name)
            elif name == "--file":
                if data.draw(st.booleans()):
                    args += [name, str(files / f"out{next(counter)}.json")]
            elif data.draw(st.booleans()):
                args += [name, as_file(data.draw(file_content)) if is_file else data.draw(option_value)]
        before = dump(db)
        result = runner.invoke(app, args)
        seen["calls"] += 1
        unhandled = result.exception is not None and not isinstance(result.exception, SystemExit)
        traced = unhandled or "Traceback" in (result.output or "")
        seen["tracebacks"] += traced
        if result.exit_code != 0 and dump(db) != before:
            seen["partial writes"] += 1
        assert not traced, (args, result.output[-500:], repr(result.exception))

    try:
        invoke()
    finally:
        figures.record("fuzz, CLI commands", f"calls over {len(commands)} commands", seen["calls"])
        figures.record("fuzz, CLI commands", "tracebacks", seen["tracebacks"], target=0)
        figures.record("fuzz, CLI commands", "refused calls that wrote", seen["partial writes"], target=0)
    assert seen["partial writes"] == 0

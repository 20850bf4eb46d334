"""Top-level commands that act on the whole store: `dispatch`, `serve`, `apply`, and `store init`."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .. import apply as apply_ops
from .. import render_tables as render
from ..errors import InvalidInput, NotFound
from ..store.base import Store
from ..wake_socket import WakeListener, wake_socket_path
from ..wakeups import APPLIED, PassRequests
from .common import Output, OutputOpt, app, opened, print_json, say, store_app, wake

if TYPE_CHECKING:
    from ..dispatch import Dispatcher, PassSummary

log = logging.getLogger("pushpool.dispatch")


@app.command("dispatch")
def dispatch(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit (the default).")] = False,
    interval: Annotated[
        float | None, typer.Option(metavar="SECONDS", min=0.1, help="Run a pass every SECONDS until Ctrl-C.")
    ] = None,
    pool: Annotated[str | None, typer.Option("--pool", "-p", help="Only this pool.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only this queue of --pool.")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Run dispatch passes: schedule, admit by priority under every limit, submit, reconcile."""
    from ..dispatch import Dispatcher

    if once and interval is not None:
        raise InvalidInput("pass either --once or --interval SECONDS, not both.")
    if queue is not None and pool is None:
        raise InvalidInput("--queue needs --pool: queue names are only unique inside a pool.")

    def show(summary: PassSummary) -> None:
        if output is Output.json:
            typer.echo(json.dumps(summary.as_dict()))
        else:
            render.show(render.pass_summary(summary))

    with opened(ctx) as store:
        dispatcher = Dispatcher(store)
        try:
            if interval is None:
                show(dispatcher.run_pass(pool=pool, queue=queue))
            else:
                dispatch_loop(store, dispatcher, interval, pool=pool, queue=queue, show=show)
        except KeyboardInterrupt:
            say("Stopped.")
        finally:
            dispatcher.close()


def dispatch_loop(
    store: Store,
    dispatcher: Dispatcher,
    interval: float,
    *,
    pool: str | None,
    queue: str | None,
    show: Callable[[PassSummary], None],
) -> None:
    """`dispatch --interval`: a pass every `interval` seconds, and one over a pool at once when the CLI wakes it.

    A CLI command writing to the same SQLite store wakes this loop through the store's wake socket, as it wakes
    `serve` (dispatcher/wake_socket.py); only one of them listens there. With --pool, wakes for other pools are
    ignored. Until Ctrl-C (KeyboardInterrupt).
    """
    requests = PassRequests()
    path = wake_socket_path(store.url)
    listener = None if path is None else WakeListener(path, requests)
    if listener is not None:
        listener.start()
    try:
        next_full = time.monotonic()
        while True:
            everything, woken = requests.take()
            if everything or time.monotonic() >= next_full:
                show(dispatcher.run_pass(pool=pool, queue=queue))
                next_full = time.monotonic() + interval
            else:
                for name in woken if pool is None else [p for p in woken if p == pool]:
                    try:
                        show(dispatcher.run_pass(pool=name, queue=queue))
                    except NotFound as exc:  # deleted since the wake, or a name the waking CLI got wrong
                        log.info("woken for a pool that is gone: %s", exc)
            requests.wait(next_full - time.monotonic())
    finally:
        if listener is not None:
            listener.close()


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")] = 4300,
    interval: Annotated[
        float,
        typer.Option(metavar="SECONDS", min=0.1, help="Seconds between timed passes (changes and due times wake it)."),
    ] = 5.0,
    duration: Annotated[
        float | None, typer.Option(metavar="SECONDS", min=0.1, help="Stop by itself after this long.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print only the start and stop lines.")] = False,
    no_dispatch: Annotated[
        bool,
        typer.Option(
            "--no-dispatch",
            help="Serve the API and the dashboard only: no passes (another dispatcher, e.g. on AWS, serves the pools).",
        ),
    ] = False,
) -> None:
    """Dispatch loop plus the callback and management HTTP API on one machine; stops on Ctrl-C or SIGTERM."""
    from ..serve import Server, api_token_from_env

    token, generated = api_token_from_env()
    with opened(ctx) as store:
        server = Server(
            store,
            host=host,
            port=port,
            interval=interval,
            api_token=token,
            on_pass=None if quiet else lambda s: say(f"{render.time_text(s.started)} {s.headline()}"),
            dispatch=not no_dispatch,
        )
        passes = "no dispatch passes" if no_dispatch else f"passes on changes, due times and every {interval:g}s"
        say(f"pushpool serving on {server.url} ({passes}); Ctrl-C stops.")
        if generated:
            say(f"Management API bearer token for this session: {token} (set PUSHPOOL_API_TOKEN to choose one).")
        server.run(duration)
    say("Stopped.")


@app.command("apply")
def apply_file(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="YAML or JSON with pools, queues, deployments; or a prefect.yaml.")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Create or update pools, queues and deployments to match FILE, and print the plan.

    FILE may be a prefect.yaml: its deployments are applied (onto pools that exist), and what pushpool does
    not use (build/push/pull steps, entrypoint, ...) is listed as not applied.
    """
    with opened(ctx) as store:
        plan = apply_ops.apply(store, file, dry_run=dry_run)
    if plan.has_changes and not dry_run:
        wake(ctx, None, APPLIED)  # pools resumed, limits raised, schedules set: any of them, over every pool
    if output is Output.json:
        return print_json({"dry_run": dry_run, "actions": plan.as_dicts(), "ignored": plan.notes})
    for line in plan.lines():
        typer.echo(line)
    for note in plan.notes:
        typer.echo(f"Not applied: {note}")
    if dry_run:
        say("Dry run: nothing written.")
    else:
        say("Applied." if plan.has_changes else "Nothing to change.")


@store_app.command("init")
def store_init(ctx: typer.Context) -> None:
    """Prepare the store (DynamoDB: create the table and indexes; SQLite: nothing to do)."""
    with opened(ctx) as store:
        if store.url.startswith("sqlite:"):
            return say(f"SQLite store ready at {store.url.removeprefix('sqlite:///')}.")
        init = getattr(store, "init", None)
        if callable(init):
            init()
    say(f"Store ready at {store.url}.")

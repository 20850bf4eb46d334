"""`pushpool flow-run ...`: list, inspect, cancel, retry and delete flow runs, and print their logs."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import render_tables as render
from ..cancelling import cancel_run, get_run
from ..config import Settings
from ..errors import InvalidInput, PushpoolError
from ..flow_runs import delete_run, retry_run, state_filter
from ..models import FlowRun, utcnow
from ..preview import shown_state_name
from ..providers.base import provider_logs
from ..run_browser import MAX_PAGE, browse_runs
from ..states import NAMES_BY_TYPE, StateType
from ..store.base import RunPosition, with_parameters
from ..terminal import safe_text
from ..wakeups import RUN_CANCELLED, RUN_CREATED
from .common import HELP_ONLY_LONG, Output, OutputOpt, opened, print_json, run_app, say, wake

NAME_SCAN = 10_000
"""Runs read at most when `--state` names a state (Late, AwaitingRetry, ...): the name is matched after reading
runs of its type, newest first, so more than the shown page may be read."""


@run_app.command("ls")
def run_ls(
    ctx: typer.Context,
    pool: Annotated[str | None, typer.Option("--pool", "-p", help="Only this pool's runs.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only runs of queues with this name.")] = None,
    deployment: Annotated[str | None, typer.Option("--deployment", help="Only this deployment's runs.")] = None,
    state: Annotated[
        list[str] | None,
        typer.Option(help="A state name (Late, AwaitingRetry, Completed, ...) or type (SCHEDULED, ...); repeatable."),
    ] = None,
    state_type: Annotated[
        list[str] | None, typer.Option("--state-type", help="A state type (SCHEDULED, RUNNING, ...); repeatable.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=NAME_SCAN, help="Show at most this many runs.")] = 50,
    cursor: Annotated[
        str | None, typer.Option(help="Continue where an earlier listing stopped (the cursor it printed).")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every matching run, page after page (no --limit).")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """List flow runs, newest scheduled time first (every pool's, merged, without --pool or --deployment).

    When more runs match than were shown, the cursor that continues the listing is printed on stderr.
    """
    types, names = state_filter(state or [], state_type or [])
    # A name is read through its type: Late and AwaitingRetry are SCHEDULED runs, InfrastructurePending PENDING.
    kinds = sorted(types | {t for t, ns in NAMES_BY_TYPE.items() if names & set(ns)})
    now, settings = utcnow(), Settings.from_env()
    shown: list[FlowRun] = []
    read, following = 0, cursor
    with opened(ctx) as store:
        while True:
            page = browse_runs(
                store,
                pool=pool,
                queue=queue,
                deployment=deployment,
                states=kinds,
                limit=MAX_PAGE if every or names else limit,
                cursor=following,
            )
            read += len(page.runs)
            shown += [
                r for r in page.runs if not names or r.state in types or shown_state_name(r, now, settings) in names
            ]
            following = page.next_cursor
            if following is None or (not every and (len(shown) >= limit or read >= NAME_SCAN)):
                break
    if not every and len(shown) > limit:
        shown, following = shown[:limit], RunPosition.of(shown[limit - 1]).token()
    if output is Output.json:
        print_json(shown)
    else:
        render.show(render.runs_table(shown))
    if following is not None:
        typer.echo(f"More runs match: add --cursor {following}", err=True)


@run_app.command("inspect")
def run_inspect(
    ctx: typer.Context, run_id: Annotated[str, typer.Argument(metavar="ID")], output: OutputOpt = Output.table
) -> None:
    """Show a flow run and its state history."""
    with opened(ctx) as store:
        run = with_parameters(store, get_run(store, run_id))
    if output is Output.json:
        return print_json(run)
    render.show(render.run_detail(run))


@run_app.command("cancel")
def run_cancel(
    ctx: typer.Context, run_id: Annotated[str, typer.Argument(metavar="ID")], output: OutputOpt = Output.table
) -> None:
    """Cancel a flow run: a scheduled one at once, a started one once its infrastructure has stopped."""
    with opened(ctx) as store:
        run = cancel_run(store, run_id, message="cancelled from the CLI")
    # A CANCELLING run still holds its slot: the pass stops its infrastructure, which frees it.
    wake(ctx, run.pool, RUN_CANCELLED if run.state is StateType.CANCELLING else None)
    if output is Output.json:
        return print_json(run)
    if run.state is StateType.CANCELLED:
        say(f"Cancelled flow run {run.name!r} ({run.id}).")
    else:
        say(f"Cancelling flow run {run.name!r} ({run.id}); it becomes Cancelled once its infrastructure stops.")


@run_app.command("logs", context_settings=HELP_ONLY_LONG)
def run_logs(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="ID")],
    head: Annotated[bool, typer.Option("--head", "-h", help="Only the first lines (20, or -n).")] = False,
    tail: Annotated[bool, typer.Option("--tail", "-t", help="Only the last lines (20, or -n).")] = False,
    num_logs: Annotated[
        int | None, typer.Option("--num-logs", "-n", min=1, help="How many lines --head or --tail shows.")
    ] = None,
) -> None:
    """Print a flow run's state history, then its output where the provider keeps it (process pools).

    --head/-h and --tail/-t (with -n) keep the first or last lines, as in Prefect; --help is the help.
    """
    if head and tail:
        raise InvalidInput("pass either --head or --tail, not both.")
    if num_logs is not None and not (head or tail):
        tail = True  # Prefect's -n alone shows the most recent lines
    with opened(ctx) as store:
        run = get_run(store, run_id)
        pool = store.get_pool(run.pool)
    lines = render.log_lines(run)
    note = None
    if run.infrastructure_id is not None:
        if pool is None:
            note = f"No output shown: pool {run.pool!r} no longer exists, so its provider is unknown."
        else:
            try:
                output = provider_logs(pool.type, run.infrastructure_id)
            except PushpoolError as exc:
                output, note = None, f"No output shown: {exc}"
            if output is not None:
                lines += [f"--- output of {run.infrastructure_id} ---", *output.splitlines()]
    count = num_logs or DEFAULT_LOG_LINES
    if head:
        lines = lines[:count]
    elif tail:
        lines = lines[-count:]
    for line in lines:
        typer.echo(safe_text(line, keep_lines=True))  # the job's output: its escapes are shown, never obeyed
    if note is not None:
        typer.echo(safe_text(note), err=True)


DEFAULT_LOG_LINES = 20
"""Lines `flow-run logs --head/--tail` shows without -n (Prefect's default)."""


@run_app.command("retry")
def run_retry(
    ctx: typer.Context, run_id: Annotated[str, typer.Argument(metavar="ID")], output: OutputOpt = Output.table
) -> None:
    """Send an ended run (Completed, Failed, Crashed, Cancelled) back to Scheduled/AwaitingRetry, due now."""
    with opened(ctx) as store:
        run = retry_run(store, run_id)
    wake(ctx, run.pool, RUN_CREATED, run.scheduled_time)
    if output is Output.json:
        return print_json(run)
    say(f"Flow run {run.name!r} ({run.id}) is {run.state_name} again; the next dispatch pass admits it.")


@run_app.command("delete")
def run_delete(ctx: typer.Context, run_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Delete a flow run that is not active (refused while Pending, Running or Cancelling)."""
    with opened(ctx) as store:
        run = delete_run(store, run_id)
    say(f"Deleted flow run {run.name!r} ({run.id}).")

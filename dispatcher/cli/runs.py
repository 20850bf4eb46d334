"""`pushpool flow-run ...`: list, inspect and cancel flow runs, and print their logs."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import pools as pool_ops
from .. import render_tables as render
from ..cancelling import cancel_run, get_run
from ..errors import PushpoolError
from ..providers.base import provider_logs
from ..states import StateType
from .common import Output, OutputOpt, opened, print_json, run_app, say


@run_app.command("ls")
def run_ls(
    ctx: typer.Context,
    pool: Annotated[str | None, typer.Option("--pool", "-p", help="Only this pool's runs.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only runs of queues with this name.")] = None,
    state: Annotated[StateType | None, typer.Option(case_sensitive=False, help="Only runs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many runs.")] = 50,
    output: OutputOpt = Output.table,
) -> None:
    """List flow runs, newest scheduled time first (every pool's, merged, without --pool)."""
    with opened(ctx) as store:
        if pool is not None:
            pool_ops.get_pool(store, pool)
            if queue is not None:
                pool_ops.get_queue(store, pool, queue)
        names = [pool] if pool is not None else [p.name for p in store.list_pools()]
        runs = [r for p in names for r in store.list_runs(p, queue=queue, state=state, limit=limit)]
    runs = sorted(runs, key=lambda r: (r.scheduled_time, r.id), reverse=True)[:limit]
    if output is Output.json:
        return print_json(runs)
    render.show(render.runs_table(runs))


@run_app.command("inspect")
def run_inspect(
    ctx: typer.Context, run_id: Annotated[str, typer.Argument(metavar="ID")], output: OutputOpt = Output.table
) -> None:
    """Show a flow run and its state history."""
    with opened(ctx) as store:
        run = get_run(store, run_id)
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
    if output is Output.json:
        return print_json(run)
    if run.state is StateType.CANCELLED:
        say(f"Cancelled flow run {run.name!r} ({run.id}).")
    else:
        say(f"Cancelling flow run {run.name!r} ({run.id}); it becomes Cancelled once its infrastructure stops.")


@run_app.command("logs")
def run_logs(ctx: typer.Context, run_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Print a flow run's state history, then its output where the provider keeps it (process pools)."""
    with opened(ctx) as store:
        run = get_run(store, run_id)
        pool = store.get_pool(run.pool)
    for line in render.log_lines(run):
        typer.echo(line)
    if run.infrastructure_id is None:
        return
    if pool is None:
        typer.echo(f"No output shown: pool {run.pool!r} no longer exists, so its provider is unknown.", err=True)
        return
    try:
        output = provider_logs(pool.type, run.infrastructure_id)
    except PushpoolError as exc:
        typer.echo(f"No output shown: {exc}", err=True)
        return
    if output is not None:
        typer.echo(f"--- output of {run.infrastructure_id} ---")
        typer.echo(output, nl=False)

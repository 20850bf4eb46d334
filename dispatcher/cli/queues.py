"""`pushpool work-queue ...`: the queues of a pool, their priorities and limits."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import pools as pool_ops
from .. import render_tables as render
from ..store.base import queue_slot
from .common import (
    HELP_ONLY_LONG,
    NEGATIVE_ARGS,
    DescriptionOpt,
    HoursOpt,
    LimitArg,
    NameArg,
    Output,
    OutputOpt,
    PoolOpt,
    jsonable,
    name_counts,
    opened,
    print_json,
    queue_app,
    say,
    show_preview,
    update_queue,
)

QueueLimitOpt = Annotated[
    int | None,
    typer.Option("--concurrency-limit", "--limit", "-l", help="Most active runs at once; 0 delivers nothing."),
]


@queue_app.command("create")
def queue_create(
    ctx: typer.Context,
    name: NameArg,
    pool: PoolOpt,
    priority: Annotated[int | None, typer.Option(help="1 is the highest; a taken one is inserted at.")] = None,
    concurrency_limit: QueueLimitOpt = None,
    description: DescriptionOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create a queue; without --priority it goes last."""
    with opened(ctx) as store:
        queue = pool_ops.create_queue(
            store, pool, name, priority=priority, concurrency_limit=concurrency_limit, description=description
        )
    if output is Output.json:
        return print_json(queue)
    say(f"Created work queue {queue.name!r} in pool {pool!r} at priority {queue.priority}.")


@queue_app.command("update")
def queue_update(
    ctx: typer.Context,
    name: NameArg,
    pool: PoolOpt,
    priority: Annotated[int | None, typer.Option(help="1 is the highest; a taken one is inserted at.")] = None,
    description: DescriptionOpt = None,
    concurrency_limit: QueueLimitOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Change a queue's priority, description or limit; the rest stays."""
    limit = pool_ops.UNSET if concurrency_limit is None else concurrency_limit
    with opened(ctx) as store:
        queue = update_queue(
            ctx, store, pool, name, priority=priority, description=description, concurrency_limit=limit
        )
    if output is Output.json:
        return print_json(queue)
    say(f"Updated work queue {queue.name!r} in pool {pool!r}; priority {queue.priority}.")


@queue_app.command("ls")
def queue_ls(
    ctx: typer.Context,
    pool: Annotated[
        str | None, typer.Option("--pool", "-p", help="Only this pool's queues; default: every pool.")
    ] = None,
    output: OutputOpt = Output.table,
) -> None:
    """List queues in priority order: one pool's, or every pool's (one table per pool) without --pool."""
    with opened(ctx) as store:
        work_pools = [pool_ops.get_pool(store, pool)] if pool is not None else store.list_pools()
        listed = []
        for work_pool in work_pools:
            queues = store.list_queues(work_pool.name)
            listed.append((queues, name_counts(work_pool, queues, pool_ops.active_counts(store, work_pool, queues))))
    if output is Output.json:
        return print_json([q for queues, _ in listed for q in queues])
    if not listed:
        return say("No work pools yet; create one with `pushpool work-pool create NAME`.")
    render.show(*(render.queues_table(queues, counts) for queues, counts in listed))


@queue_app.command("inspect")
def queue_inspect(ctx: typer.Context, name: NameArg, pool: PoolOpt, output: OutputOpt = Output.table) -> None:
    """Show a queue and its active runs against its limit."""
    with opened(ctx) as store:
        queue = pool_ops.get_queue(store, pool, name)
        counts = pool_ops.active_counts(store, pool_ops.get_pool(store, pool), [queue])
    active = counts.get(queue_slot(pool, name), 0)
    if output is Output.json:
        return print_json({**jsonable(queue), "active": active})
    render.show(render.queue_detail(queue, active))


@queue_app.command("pause")
def queue_pause(ctx: typer.Context, name: NameArg, pool: PoolOpt) -> None:
    """Pause one queue; the pool's other queues go on."""
    with opened(ctx) as store:
        update_queue(ctx, store, pool, name, paused=True)
    say(f"Paused work queue {name!r} in pool {pool!r}.")


@queue_app.command("resume")
def queue_resume(ctx: typer.Context, name: NameArg, pool: PoolOpt) -> None:
    """Resume a paused queue."""
    with opened(ctx) as store:
        queue = update_queue(ctx, store, pool, name, paused=False)
    say(f"Resumed work queue {name!r} in pool {pool!r}; its status is {queue.status}.")


@queue_app.command("delete")
def queue_delete(ctx: typer.Context, name: NameArg, pool: PoolOpt) -> None:
    """Delete a queue (never `default`; refused while deployments or runs use it)."""
    with opened(ctx) as store:
        pool_ops.delete_queue(store, pool, name)
    say(f"Deleted work queue {name!r} from pool {pool!r}.")


@queue_app.command("preview", context_settings=HELP_ONLY_LONG)
def queue_preview(
    ctx: typer.Context,
    name: NameArg,
    pool: PoolOpt,
    hours: HoursOpt = 1.0,
    output: OutputOpt = Output.table,
) -> None:
    """Upcoming runs of one queue and, for each due run, why it waits."""
    show_preview(ctx, pool, hours, name, output)


@queue_app.command("set-concurrency-limit", context_settings=NEGATIVE_ARGS)
def queue_set_limit(ctx: typer.Context, name: NameArg, limit: LimitArg, pool: PoolOpt) -> None:
    """Set a queue's concurrency limit (0 delivers nothing)."""
    with opened(ctx) as store:
        update_queue(ctx, store, pool, name, concurrency_limit=limit)
    say(f"Set the concurrency limit of work queue {name!r} in pool {pool!r} to {limit}.")


@queue_app.command("clear-concurrency-limit")
def queue_clear_limit(ctx: typer.Context, name: NameArg, pool: PoolOpt) -> None:
    """Remove a queue's concurrency limit (unlimited)."""
    with opened(ctx) as store:
        update_queue(ctx, store, pool, name, concurrency_limit=None)
    say(f"Cleared the concurrency limit of work queue {name!r} in pool {pool!r}.")

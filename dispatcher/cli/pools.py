"""`pushpool work-pool ...`: create, change, inspect, preview and chart work pools."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from .. import ecs_quickstart
from .. import pools as pool_ops
from .. import render_tables as render
from ..errors import InvalidInput
from ..models import utcnow
from ..pool_types import KNOWN_TYPES, default_template
from ..store.base import pool_slot
from .common import (
    HELP_ONLY_LONG,
    NEGATIVE_ARGS,
    TEN_YEARS,
    DescriptionOpt,
    HoursOpt,
    JsonOpt,
    LimitArg,
    LimitOpt,
    NameArg,
    Output,
    OutputOpt,
    TemplateOpt,
    json_object,
    jsonable,
    load_template,
    name_counts,
    opened,
    pool_app,
    print_json,
    say,
    show_preview,
    update_pool,
)

FROM_STACK_HELP = (
    "An ecs:push pool whose job variables default to the outputs of a pushpool stack deployed with "
    "CreateEcsQuickstart=true (its cluster, roles and network), read with CloudFormation DescribeStacks."
)


@pool_app.command("create")
def pool_create(
    ctx: typer.Context,
    name: NameArg,
    type: Annotated[
        str | None,
        typer.Option("--type", "-t", help=f"One of: {', '.join(KNOWN_TYPES)}; process, or ecs:push with --from-stack."),
    ] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    set_as_default: Annotated[bool, typer.Option("--set-as-default", help="Default pool of deployments.")] = False,
    base_job_template: TemplateOpt = None,
    concurrency_limit: LimitOpt = None,
    description: DescriptionOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing pool's settings.")] = False,
    job_variables: JsonOpt = None,
    from_stack: Annotated[str | None, typer.Option("--from-stack", metavar="STACK", help=FROM_STACK_HELP)] = None,
    region: Annotated[
        str | None,
        typer.Option("--region", help="AWS region of --from-stack's stack; default: your AWS configuration."),
    ] = None,
    provision_infra: Annotated[
        bool,
        typer.Option(
            "--provision-infra", "--provision-infrastructure", hidden=True, help="Prefect's; see --from-stack."
        ),
    ] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Create a work pool with its `default` queue."""
    if provision_infra:
        raise InvalidInput(
            "--provision-infra: pushpool's CLI creates no AWS resources; deploy the stack with "
            "CreateEcsQuickstart=true (docs/deploy.md), then pass --from-stack STACK."
        )
    if region is not None and from_stack is None:
        raise InvalidInput("--region is the region of --from-stack's stack; pass it with --from-stack STACK.")
    pool_type = type or (ecs_quickstart.POOL_TYPE if from_stack is not None else "process")
    if from_stack is not None and pool_type != ecs_quickstart.POOL_TYPE:
        raise InvalidInput(
            f"--from-stack reads the ECS quickstart of a pushpool stack, for --type {ecs_quickstart.POOL_TYPE} only, "
            f"not --type {pool_type}."
        )
    template = load_template(base_job_template)
    variables = json_object("--job-variables", job_variables)
    from_outputs: dict[str, object] = {}
    if from_stack is not None:
        # Read before the store is opened: a stack that cannot be used leaves nothing written.
        template, from_outputs = ecs_quickstart.template_from_stack(from_stack, template, region=region)
    with opened(ctx) as store:
        pool = pool_ops.create_pool(
            store,
            name,
            type=pool_type,
            paused=paused,
            base_job_template=template,
            job_variables=variables,
            concurrency_limit=concurrency_limit,
            description=description,
            set_as_default=set_as_default,
            overwrite=overwrite,
        )
    if output is Output.json:
        return print_json(pool)
    default = " and set it as the default pool" if set_as_default else ""
    say(f"Created work pool {pool.name!r} of type {pool.type}{default}.")
    if from_stack is not None:
        say(f"Its job variables default to the outputs of stack {from_stack!r}: {', '.join(sorted(from_outputs))}.")


@pool_app.command("update")
def pool_update(
    ctx: typer.Context,
    name: NameArg,
    base_job_template: TemplateOpt = None,
    description: DescriptionOpt = None,
    concurrency_limit: LimitOpt = None,
    job_variables: JsonOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Change a pool's template, pool-level job variables, description or limit; the rest stays."""
    template = load_template(base_job_template)
    variables = json_object("--job-variables", job_variables)
    limit = pool_ops.UNSET if concurrency_limit is None else concurrency_limit
    with opened(ctx) as store:
        pool = update_pool(
            ctx,
            store,
            name,
            base_job_template=template,
            job_variables=variables,
            description=description,
            concurrency_limit=limit,
        )
    if output is Output.json:
        return print_json(pool)
    say(f"Updated work pool {pool.name!r}.")


@pool_app.command("ls")
def pool_ls(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also paused, variables, created, updated.")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """List work pools."""
    with opened(ctx) as store:
        pools = store.list_pools()
        slots = store.slots([pool_slot(p.name) for p in pools])
    if output is Output.json:
        return print_json(pools)
    active = {p.name: s.active for p in pools if (s := slots.get(pool_slot(p.name))) is not None}
    render.show(render.pools_table(pools, active, verbose=verbose))


@pool_app.command("inspect")
def pool_inspect(ctx: typer.Context, name: NameArg, output: OutputOpt = Output.table) -> None:
    """Show a pool, its active runs against its limit, and its queues in priority order."""
    with opened(ctx) as store:
        pool = pool_ops.get_pool(store, name)
        queues = store.list_queues(name)
        counts = pool_ops.active_counts(store, pool, queues)
    active = counts.get(pool_slot(name), 0)
    per_queue = name_counts(pool, queues, counts)
    reason = pool_ops.status_reason(pool)
    if output is Output.json:
        queue_data = [{**jsonable(q), "active": per_queue[q.name]} for q in queues]
        return print_json({**jsonable(pool), "status_reason": reason, "active": active, "queues": queue_data})
    render.show(render.pool_detail(pool, active, queues, per_queue, status_reason=reason))


@pool_app.command("pause")
def pool_pause(ctx: typer.Context, name: NameArg) -> None:
    """Pause a pool: it delivers nothing; schedules keep creating runs, which wait."""
    with opened(ctx) as store:
        update_pool(ctx, store, name, paused=True)
    say(f"Paused work pool {name!r}.")


@pool_app.command("resume")
def pool_resume(ctx: typer.Context, name: NameArg) -> None:
    """Resume a paused pool."""
    with opened(ctx) as store:
        pool = update_pool(ctx, store, name, paused=False)
    say(f"Resumed work pool {name!r}; its status is {pool.status}.")


@pool_app.command("delete")
def pool_delete(ctx: typer.Context, name: NameArg) -> None:
    """Delete a pool and its queues (refused while deployments use it or runs are active)."""
    with opened(ctx) as store:
        pool_ops.delete_pool(store, name)
    say(f"Deleted work pool {name!r}.")


@pool_app.command("preview", context_settings=HELP_ONLY_LONG)
def pool_preview(
    ctx: typer.Context,
    name: NameArg,
    hours: HoursOpt = 1.0,
    output: OutputOpt = Output.table,
) -> None:
    """Upcoming runs per queue and, for each due run, why it waits."""
    show_preview(ctx, name, hours, None, output)


@pool_app.command("set-concurrency-limit", context_settings=NEGATIVE_ARGS)
def pool_set_limit(ctx: typer.Context, name: NameArg, limit: LimitArg) -> None:
    """Set a pool's concurrency limit (0 delivers nothing)."""
    with opened(ctx) as store:
        update_pool(ctx, store, name, concurrency_limit=limit)
    say(f"Set the concurrency limit of work pool {name!r} to {limit}.")


@pool_app.command("clear-concurrency-limit")
def pool_clear_limit(ctx: typer.Context, name: NameArg) -> None:
    """Remove a pool's concurrency limit (unlimited)."""
    with opened(ctx) as store:
        update_pool(ctx, store, name, concurrency_limit=None)
    say(f"Cleared the concurrency limit of work pool {name!r}.")


@pool_app.command("get-default-base-job-template")
def pool_default_template(
    type: Annotated[str, typer.Option("--type", "-t", help=f"One of: {', '.join(KNOWN_TYPES)}.")],
    file: Annotated[Path | None, typer.Option("--file", "-f", metavar="OUT", help="Write it here.")] = None,
) -> None:
    """Print the default base job template of a pool type as JSON, or write it to a file."""
    text = json.dumps(default_template(type), indent=2) + "\n"
    if file is None:
        return typer.echo(text, nl=False)
    try:
        file.write_text(text)
    except OSError as exc:
        raise InvalidInput(f"--file: cannot write {str(file)!r} ({exc.strerror or exc}).") from None
    say(f"Wrote the default base job template of type {type} to {file}.")


@pool_app.command("timeline")
def pool_timeline(
    ctx: typer.Context,
    name: NameArg,
    since: Annotated[
        str, typer.Option(metavar="DURATION", help=f"How far back: 90s, 10m, 2h, 1d; at most {TEN_YEARS.days}d.")
    ] = "1h",
    output: OutputOpt = Output.table,
) -> None:
    """A terminal chart: one row per run, grouped by queue, a bar from admission to end."""
    from .. import timeline

    try:
        window = timeline.parse_duration(since)
    except OverflowError:  # more days than a timedelta holds
        window = timedelta.max
    if window > TEN_YEARS:
        raise InvalidInput(f"--since must be at most {TEN_YEARS.days}d (10 years), got {since!r}.")
    now = utcnow()
    with opened(ctx) as store:
        pool_ops.get_pool(store, name)
        queues = [q.name for q in store.list_queues(name)]
        bars = timeline.bars(store.list_runs(name, limit=timeline.MAX_RUNS), now - window, now)
    if output is Output.json:
        return print_json([b.__dict__ for b in bars])
    render.show(timeline.render(bars, queues, now, render.console().width))

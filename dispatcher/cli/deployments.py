"""`pushpool deployment ...`: what to run, on which pool and queue, on which schedule; run one now or later."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from pydantic import ValidationError

from .. import deployments as deployment_ops
from .. import pools as pool_ops
from .. import render_tables as render
from ..errors import InvalidInput
from ..models import utcnow
from ..schedules import CronSchedule, IntervalSchedule, RRuleSchedule, Schedule
from .common import (
    TEN_YEARS,
    DescriptionOpt,
    JsonOpt,
    LimitOpt,
    NameArg,
    Output,
    OutputOpt,
    deployment_app,
    json_object,
    opened,
    print_json,
    say,
)


def _schedule(cron: str | None, interval: float | None, rrule: str | None, timezone: str | None) -> Schedule | None:
    given = [(opt, v) for opt, v in (("--cron", cron), ("--interval", interval), ("--rrule", rrule)) if v is not None]
    if len(given) > 1:
        raise InvalidInput(f"pass one of --cron, --interval or --rrule, not {' and '.join(o for o, _ in given)}.")
    if not given:
        if timezone is not None:
            raise InvalidInput("--timezone needs a schedule: pass --cron, --interval or --rrule with it.")
        return None
    option, value = given[0]
    tz = {"timezone": timezone} if timezone is not None else {}
    try:
        if option == "--cron":
            return CronSchedule(cron=str(value), **tz)
        if option == "--interval":
            return IntervalSchedule(interval=float(value), **tz)
        return RRuleSchedule(rrule=str(value), **tz)
    except ValidationError as exc:
        err = exc.errors()[0]
        message = str(err["msg"]).removeprefix("Value error, ").rstrip(".")
        if err["type"] != "value_error":  # pydantic's own words do not name the option; ours do
            message = f"{option} {value}: {message[:1].lower()}{message[1:]}"
        raise InvalidInput(f"{message}.") from None


@deployment_app.command("create")
def deployment_create(
    ctx: typer.Context,
    name: NameArg,
    pool: Annotated[str | None, typer.Option("--pool", "-p", help="The work pool; default: the default pool.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Queue of the pool; default: default.")] = None,
    job_variables: JsonOpt = None,
    parameters: JsonOpt = None,
    cron: Annotated[str | None, typer.Option(help="Cron expression, e.g. '0 * * * *'.")] = None,
    interval: Annotated[float | None, typer.Option(metavar="SECONDS", help="Seconds between runs.")] = None,
    rrule: Annotated[str | None, typer.Option(help="An RFC 5545 RRULE.")] = None,
    timezone: Annotated[str | None, typer.Option(help="Timezone of the schedule (default UTC).")] = None,
    concurrency_limit: LimitOpt = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag; repeat for more.")] = None,
    description: DescriptionOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create a deployment on a pool and one of its queues, with an optional schedule."""
    schedule = _schedule(cron, interval, rrule, timezone)
    variables = json_object("--job-variables", job_variables)
    params = json_object("--parameters", parameters)
    with opened(ctx) as store:
        deployment = deployment_ops.create_deployment(
            store,
            name,
            pool=pool,
            queue=queue,
            job_variables=variables,
            parameters=params,
            schedules=[schedule] if schedule else None,
            concurrency_limit=concurrency_limit,
            tags=tag,
            description=description,
        )
    if output is Output.json:
        return print_json(deployment)
    say(f"Created deployment {deployment.name!r} on pool {deployment.pool!r}, queue {deployment.queue!r}.")


@deployment_app.command("ls")
def deployment_ls(
    ctx: typer.Context,
    pool: Annotated[str | None, typer.Option("--pool", "-p", help="Only this pool's deployments.")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """List deployments."""
    with opened(ctx) as store:
        if pool is not None:
            pool_ops.get_pool(store, pool)
        deployments = store.list_deployments(pool)
    if output is Output.json:
        return print_json(deployments)
    render.show(render.deployments_table(deployments))


@deployment_app.command("inspect")
def deployment_inspect(ctx: typer.Context, name: NameArg, output: OutputOpt = Output.table) -> None:
    """Show a deployment."""
    with opened(ctx) as store:
        deployment = deployment_ops.get_deployment(store, name)
    if output is Output.json:
        return print_json(deployment)
    render.show(render.deployment_detail(deployment))


@deployment_app.command("pause-schedule")
def deployment_pause(ctx: typer.Context, name: NameArg) -> None:
    """Stop a deployment's schedules from creating runs (runs created ahead of time are cancelled)."""
    with opened(ctx) as store:
        deployment_ops.update_deployment(store, name, schedule_paused=True)
    say(f"Paused the schedule of deployment {name!r}.")


@deployment_app.command("resume-schedule")
def deployment_resume(ctx: typer.Context, name: NameArg) -> None:
    """Let a deployment's schedules create runs again."""
    with opened(ctx) as store:
        deployment_ops.update_deployment(store, name, schedule_paused=False)
    say(f"Resumed the schedule of deployment {name!r}.")


@deployment_app.command("delete")
def deployment_delete(ctx: typer.Context, name: NameArg) -> None:
    """Delete a deployment; its scheduled runs are cancelled (refused while runs are active)."""
    with opened(ctx) as store:
        deployment_ops.delete_deployment(store, name)
    say(f"Deleted deployment {name!r}.")


MAX_START_IN = int(TEN_YEARS.total_seconds())
FIRST_AT, LAST_AT = datetime(1970, 1, 1, tzinfo=UTC), datetime(9998, 12, 31, 23, 59, 59, tzinfo=UTC)
"""The times `--at` takes: years 1970 to 9998 in UTC, so that adding to a run's time never overflows."""


def _when(start_in: float | None, at: str | None) -> datetime | None:
    if start_in is not None and at is not None:
        raise InvalidInput("pass either --start-in or --at, not both.")
    if start_in is not None:
        if not 0 <= start_in <= MAX_START_IN:  # NaN fails it too
            raise InvalidInput(
                f"--start-in must be a number of seconds from 0 to {MAX_START_IN} (10 years), got {start_in:.12g}."
            )
        return utcnow() + timedelta(seconds=start_in)
    if at is None:
        return None
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise InvalidInput(f"--at {at!r} is not an ISO 8601 time such as 2025-01-31T09:30:00+01:00.") from None
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    if not FIRST_AT <= when <= LAST_AT:  # instants compared, so 9999-12-31T23:59:59-05:00 (no UTC form) is after
        raise InvalidInput(
            f"--at must be a time from {FIRST_AT:%Y-%m-%dT%H:%M:%SZ} to {LAST_AT:%Y-%m-%dT%H:%M:%SZ} in UTC, "
            f"got {at!r}."
        )
    return when


@deployment_app.command("run")
def deployment_run(
    ctx: typer.Context,
    name: NameArg,
    parameters: JsonOpt = None,
    job_variables: JsonOpt = None,
    start_in: Annotated[float | None, typer.Option(metavar="SECONDS", help="Start this many seconds from now.")] = None,
    at: Annotated[str | None, typer.Option(metavar="ISO8601", help="Start at this time (UTC if no offset).")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create a flow run of a deployment, now or later."""
    when = _when(start_in, at)
    params = json_object("--parameters", parameters)
    variables = json_object("--job-variables", job_variables)
    with opened(ctx) as store:
        run = deployment_ops.run_deployment(
            store, name, parameters=params, job_variables=variables, scheduled_time=when
        )
    if output is Output.json:
        return print_json(run)
    say(
        f"Created flow run {run.name!r} ({run.id}) of deployment {name!r}, "
        f"scheduled for {render.time_text(run.scheduled_time)}."
    )

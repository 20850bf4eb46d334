"""`pushpool deployment ...`: what to run, on which pool and queue, on which schedule; run one now or later."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from .. import deployments as deployment_ops
from .. import pools as pool_ops
from .. import render_tables as render
from ..errors import InvalidInput
from ..models import Deployment, FlowRun, utcnow
from ..schedules import CronSchedule, IntervalSchedule, RRuleSchedule, Schedule, describe
from ..states import StateType
from ..store.base import Store
from ..wakeups import RUN_CREATED, deployment_wake_reason
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
    update_deployment,
    wake,
)
from .prefect_input import key_values, parse_delay, parse_time


def _schedule(
    cron: str | None,
    interval: float | None,
    rrule: str | None,
    timezone: str | None,
    anchor_date: str | None = None,
    active: bool = True,
) -> Schedule | None:
    given = [(opt, v) for opt, v in (("--cron", cron), ("--interval", interval), ("--rrule", rrule)) if v is not None]
    if len(given) > 1:
        raise InvalidInput(f"pass one of --cron, --interval or --rrule, not {' and '.join(o for o, _ in given)}.")
    if not given:
        if timezone is not None:
            raise InvalidInput("--timezone needs a schedule: pass --cron, --interval or --rrule with it.")
        return None
    option, value = given[0]
    if anchor_date is not None and option != "--interval":
        raise InvalidInput(f"--anchor-date goes with --interval only, not with {option}.")
    extra: dict[str, Any] = {"timezone": timezone} if timezone is not None else {}
    if not active:
        extra["active"] = False
    try:
        if option == "--cron":
            return CronSchedule(cron=str(value), **extra)
        if option == "--interval":
            if anchor_date is not None:
                extra["anchor_date"] = anchor_date
            return IntervalSchedule(interval=float(value), **extra)
        return RRuleSchedule(rrule=str(value), **extra)
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
    wake(ctx, deployment.pool, deployment_wake_reason(None, deployment))
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
    """Show a deployment (NAME, or FLOW/NAME as Prefect spells it)."""
    with opened(ctx) as store:
        deployment = deployment_ops.get_deployment(store, deployment_ops.resolve_name(store, name))
    if output is Output.json:
        return print_json(deployment)
    render.show(render.deployment_detail(deployment))


@deployment_app.command("pause-schedule")
def deployment_pause(ctx: typer.Context, name: NameArg) -> None:
    """Stop a deployment's schedules from creating runs (runs created ahead of time are cancelled)."""
    with opened(ctx) as store:
        name = deployment_ops.resolve_name(store, name)
        update_deployment(ctx, store, name, schedule_paused=True)
    say(f"Paused the schedule of deployment {name!r}.")


@deployment_app.command("resume-schedule")
def deployment_resume(ctx: typer.Context, name: NameArg) -> None:
    """Let a deployment's schedules create runs again."""
    with opened(ctx) as store:
        name = deployment_ops.resolve_name(store, name)
        update_deployment(ctx, store, name, schedule_paused=False)
    say(f"Resumed the schedule of deployment {name!r}.")


@deployment_app.command("delete")
def deployment_delete(ctx: typer.Context, name: NameArg) -> None:
    """Delete a deployment; its scheduled runs are cancelled (refused while runs are active)."""
    with opened(ctx) as store:
        name = deployment_ops.resolve_name(store, name)
        deployment_ops.delete_deployment(store, name)
    say(f"Deleted deployment {name!r}.")


FIRST_AT, LAST_AT = datetime(1970, 1, 1, tzinfo=UTC), datetime(9998, 12, 31, 23, 59, 59, tzinfo=UTC)
"""The times `--start-at` takes: years 1970 to 9998 in UTC, so that adding to a run's time never overflows."""


def _when(start_in: str | None, at: str | None) -> datetime | None:
    if start_in is not None and at is not None:
        raise InvalidInput("pass either --start-in or --start-at/--at, not both.")
    if start_in is not None:
        return utcnow() + parse_delay("--start-in", start_in, TEN_YEARS)
    if at is None:
        return None
    return parse_time("--start-at/--at", at, FIRST_AT, LAST_AT)


def _merged(option: str, given: str | None, pairs_option: str, pairs: list[str] | None) -> dict[str, Any] | None:
    """A JSON object option and its `k=v` spelling together; a pair wins over the same key in the object."""
    data = json_object(option, given)
    extra = key_values(pairs_option, pairs)
    if data is None and not extra:
        return None
    return {**(data or {}), **extra}


@deployment_app.command("render")
def deployment_render(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="NAME, or FLOW/NAME as Prefect spells it.")],
    job_variables: Annotated[
        str | None, typer.Option("--job-variables", metavar="JSON|@FILE", help="Run job variables, a JSON object.")
    ] = None,
    job_variable: Annotated[
        list[str] | None, typer.Option("--job-variable", "-jv", metavar="KEY=VALUE", help="One run job variable.")
    ] = None,
    parameters: Annotated[
        str | None,
        typer.Option("--parameters", "--params", metavar="JSON|@FILE", help="Run parameters, a JSON object."),
    ] = None,
    param: Annotated[list[str] | None, typer.Option("--param", metavar="KEY=VALUE", help="One parameter.")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Print the job a run of this deployment would submit: rendered, validated by its provider, credentials
    and tokens masked. Nothing is submitted or written; an invalid job exits 2 with the provider's sentence."""
    variables = _merged("--job-variables", job_variables, "--job-variable", job_variable)
    params = _merged("--parameters", parameters, "--param", param)
    with opened(ctx) as store:
        name = deployment_ops.resolve_name(store, name)
        job = deployment_ops.render_deployment(store, name, parameters=params, job_variables=variables)
    if output is Output.json:
        return print_json(job)
    typer.echo(json.dumps(job, indent=2, ensure_ascii=False, sort_keys=False))
    return None


@deployment_app.command("run")
def deployment_run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="NAME, or FLOW/NAME as Prefect spells it.")],
    parameters: Annotated[
        str | None,
        typer.Option("--parameters", "--params", metavar="JSON|@FILE", help="Parameters as a JSON object."),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", metavar="KEY=VALUE", help="One parameter; VALUE is read as JSON if it parses, else text."
        ),
    ] = None,
    job_variables: Annotated[
        str | None, typer.Option("--job-variables", metavar="JSON|@FILE", help="Job variables as a JSON object.")
    ] = None,
    job_variable: Annotated[
        list[str] | None,
        typer.Option(
            "--job-variable", "-jv", metavar="KEY=VALUE", help="One job variable; VALUE is JSON if it parses, else text"
        ),
    ] = None,
    start_in: Annotated[
        str | None,
        typer.Option(metavar="DELAY", help="Start later: '300' (seconds), '5 minutes', 'in 2 hours', '1h30m'."),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option("--start-at", "--at", metavar="ISO8601", help="Start at this time (UTC if no offset)."),
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag of the flow run; repeat for more.")] = None,
    flow_run_name: Annotated[str | None, typer.Option("--flow-run-name", help="Name of the flow run.")] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Follow the run to its end; exit 0 if it completed, 1 otherwise.")
    ] = False,
    watch_interval: Annotated[
        float, typer.Option(metavar="SECONDS", min=0.05, max=3600, help="With --watch: seconds between looks.")
    ] = 2.0,
    watch_timeout: Annotated[
        float | None,
        typer.Option(metavar="SECONDS", min=0.05, help="With --watch: give up (exit 1) after this long."),
    ] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create a flow run of a deployment, now or later; with --watch, follow it to its end."""
    when = _when(start_in, at)
    params = _merged("--parameters", parameters, "--param", param)
    variables = _merged("--job-variables", job_variables, "--job-variable", job_variable)
    with opened(ctx) as store:
        name = deployment_ops.resolve_name(store, name)
        run = deployment_ops.run_deployment(
            store,
            name,
            parameters=params,
            job_variables=variables,
            scheduled_time=when,
            run_name=flow_run_name,
            tags=tag,
        )
        wake(ctx, run.pool, RUN_CREATED, run.scheduled_time)
        if output is Output.json and not watch:
            return print_json(run)
        if output is not Output.json:
            say(
                f"Created flow run {run.name!r} ({run.id}) of deployment {name!r}, "
                f"scheduled for {render.time_text(run.scheduled_time)}."
            )
        if not watch:
            return None
        final = watch_run(store, run, watch_interval, watch_timeout, quiet=output is Output.json)
    if output is Output.json:
        print_json(final)
    if final is None or final.state is not StateType.COMPLETED:
        raise typer.Exit(1)
    return None


def watch_run(store: Store, run: FlowRun, interval: float, timeout: float | None, *, quiet: bool) -> FlowRun | None:
    """Print each state the run enters, as it happens, until it ends; the ended run, or None on timeout.

    The store is read every `interval` seconds (a dispatcher, `serve` or the cloud function, moves the run).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = len(run.state_history)
    while True:
        current = store.get_run(run.id)
        if current is None:
            typer.echo(f"Flow run {run.id} was deleted while it was watched.", err=True)
            return None
        if not quiet:
            for record in current.state_history[shown:]:
                if record.applied:
                    message = f": {record.message}" if record.message else ""
                    say(f"{render.time_text(record.time)} {record.name} ({record.state.value}){message}")
        shown = len(current.state_history)
        if current.is_terminal:
            if not quiet:
                say(f"Flow run {current.name!r} ended {current.state_name} ({current.state.value}).")
            return current
        if deadline is not None and time.monotonic() >= deadline:
            typer.echo(
                f"Flow run {current.name!r} is still {current.state_name} after the --watch-timeout of {timeout:g}s.",
                err=True,
            )
            return None
        time.sleep(interval)


# deployment schedule ... (Prefect's `prefect deployment schedule`) -----------------------------------------
schedule_app = typer.Typer(
    no_args_is_help=True,
    help="A deployment's schedules, as Prefect's `deployment schedule`; SCHEDULE is the number `ls` shows.",
)
deployment_app.add_typer(schedule_app, name="schedule")
ScheduleArg = Annotated[
    int, typer.Argument(metavar="SCHEDULE", help="The schedule's number, as `deployment schedule ls` shows it.")
]


def _picked(deployment: Deployment, number: int) -> int:
    count = len(deployment.schedules)
    if not 1 <= number <= count:
        have = f"its schedules are numbered 1 to {count}" if count else "it has no schedules"
        raise InvalidInput(f"SCHEDULE {number} is not a schedule of deployment {deployment.name!r}; {have}.")
    return number - 1


def _set_schedules(ctx: typer.Context, store: Store, name: str, schedules: list[Schedule]) -> Deployment:
    return update_deployment(ctx, store, name, schedules=schedules)


@schedule_app.command("create")
def schedule_create(
    ctx: typer.Context,
    name: NameArg,
    cron: Annotated[str | None, typer.Option(help="Cron expression, e.g. '0 * * * *'.")] = None,
    interval: Annotated[float | None, typer.Option(metavar="SECONDS", help="Seconds between runs.")] = None,
    rrule: Annotated[str | None, typer.Option(help="An RFC 5545 RRULE.")] = None,
    timezone: Annotated[str | None, typer.Option(help="Timezone of the schedule (default UTC).")] = None,
    anchor_date: Annotated[
        str | None, typer.Option(metavar="ISO8601", help="With --interval: a time it fires at.")
    ] = None,
    active: Annotated[bool, typer.Option("--active/--inactive", help="Inactive: kept, creates no runs.")] = True,
    replace: Annotated[bool, typer.Option("--replace", help="Replace every schedule with this one.")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Add a schedule to a deployment (or, with --replace, make it the only one)."""
    schedule = _schedule(cron, interval, rrule, timezone, anchor_date, active)
    if schedule is None:
        raise InvalidInput("pass one of --cron, --interval or --rrule.")
    with opened(ctx) as store:
        deployment = deployment_ops.get_deployment(store, deployment_ops.resolve_name(store, name))
        kept = [] if replace else list(deployment.schedules)
        updated = _set_schedules(ctx, store, deployment.name, [*kept, schedule])
    if output is Output.json:
        return print_json(updated.schedules)
    say(f"Created schedule {len(updated.schedules)} of deployment {deployment.name!r}: {describe(schedule)}.")


@schedule_app.command("ls")
def schedule_ls(ctx: typer.Context, name: NameArg, output: OutputOpt = Output.table) -> None:
    """List a deployment's schedules, numbered."""
    with opened(ctx) as store:
        deployment = deployment_ops.get_deployment(store, deployment_ops.resolve_name(store, name))
    if output is Output.json:
        return print_json([{"number": i + 1, **s.model_dump(mode="json")} for i, s in enumerate(deployment.schedules)])
    table = Table(title=f"Schedules of {deployment.name}", title_justify="left")
    for column in ("#", "Schedule", "Active"):
        table.add_column(column)
    for index, schedule in enumerate(deployment.schedules, 1):
        table.add_row(str(index), describe(schedule).removesuffix(" [paused]"), str(schedule.active))
    render.show(table)
    if deployment.schedule_paused:
        say("The deployment's schedule is paused as a whole (`deployment resume-schedule` resumes it).")


@schedule_app.command("delete")
def schedule_delete(
    ctx: typer.Context,
    name: NameArg,
    number: ScheduleArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Accepted for Prefect's habits; nothing is asked.")] = False,
) -> None:
    """Delete one schedule of a deployment."""
    with opened(ctx) as store:
        deployment = deployment_ops.get_deployment(store, deployment_ops.resolve_name(store, name))
        index = _picked(deployment, number)
        _set_schedules(ctx, store, deployment.name, [s for i, s in enumerate(deployment.schedules) if i != index])
    say(f"Deleted schedule {number} of deployment {deployment.name!r}.")


def _set_active(ctx: typer.Context, name: str, number: int, active: bool) -> str:
    with opened(ctx) as store:
        deployment = deployment_ops.get_deployment(store, deployment_ops.resolve_name(store, name))
        index = _picked(deployment, number)
        schedules = list(deployment.schedules)
        schedules[index] = schedules[index].model_copy(update={"active": active})
        _set_schedules(ctx, store, deployment.name, schedules)
    return deployment.name


@schedule_app.command("pause")
def schedule_pause(ctx: typer.Context, name: NameArg, number: ScheduleArg) -> None:
    """Pause one schedule: kept, but it creates no runs (runs it created ahead of time are cancelled)."""
    deployment = _set_active(ctx, name, number, False)
    say(f"Paused schedule {number} of deployment {deployment!r}.")


@schedule_app.command("resume")
def schedule_resume(ctx: typer.Context, name: NameArg, number: ScheduleArg) -> None:
    """Resume a paused schedule."""
    deployment = _set_active(ctx, name, number, True)
    say(f"Resumed schedule {number} of deployment {deployment!r}.")


@schedule_app.command("clear")
def schedule_clear(
    ctx: typer.Context,
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Accepted for Prefect's habits; nothing is asked.")] = False,
) -> None:
    """Delete every schedule of a deployment."""
    with opened(ctx) as store:
        deployment = deployment_ops.get_deployment(store, deployment_ops.resolve_name(store, name))
        _set_schedules(ctx, store, deployment.name, [])
    say(f"Cleared the schedules of deployment {deployment.name!r}.")

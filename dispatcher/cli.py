"""The `pushpool` command: parse options, call the core, print a table or JSON.

Rules live in the core (`pools`, `deployments`, `preview`, `apply`); each command here reads its options,
calls one operation and prints the result. Errors the core raises on purpose (`PushpoolError`) are caught
in one place, `_Group.invoke`, and printed as one sentence on stderr with the error's exit code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python
from rich.console import Console
from typer.core import TyperGroup

from . import apply as apply_ops
from . import deployments as deployment_ops
from . import pools as pool_ops
from . import render_tables as render
from .cancelling import cancel_run, get_run
from .errors import InvalidInput, PushpoolError
from .models import WorkPool, WorkQueue, utcnow, validation_sentence
from .pool_types import KNOWN_TYPES, default_template
from .preview import preview_pool
from .providers.base import provider_logs
from .schedules import CronSchedule, IntervalSchedule, RRuleSchedule, Schedule
from .states import StateType
from .store import open_store, store_url
from .store.base import Store, pool_slot, queue_slot


class _Group(TyperGroup):
    """The root group: turns a PushpoolError raised by any command into `Error: ...` and its exit code."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except PushpoolError as exc:
            _fail(str(exc), exc.exit_code)
        except ValidationError as exc:
            _fail(validation_sentence(exc, "input"), InvalidInput.exit_code)


def _fail(message: str, code: int) -> NoReturn:
    Console(stderr=True).print(f"Error: {message}", style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


app = typer.Typer(
    cls=_Group, no_args_is_help=True, add_completion=False, help="Work pools without workers: pools, queues, runs."
)
pool_app = typer.Typer(no_args_is_help=True, help="Work pools: where and under which limits runs execute.")
queue_app = typer.Typer(no_args_is_help=True, help="Work queues: priorities and limits inside a pool.")
deployment_app = typer.Typer(no_args_is_help=True, help="Deployments: what to run, on which pool, when.")
run_app = typer.Typer(no_args_is_help=True, help="Flow runs: list, inspect, cancel, logs.")
store_app = typer.Typer(no_args_is_help=True, help="The store that holds pools, deployments and runs.")
app.add_typer(pool_app, name="work-pool")
app.add_typer(queue_app, name="work-queue")
app.add_typer(deployment_app, name="deployment")
app.add_typer(run_app, name="flow-run")
app.add_typer(store_app, name="store")


class Output(StrEnum):
    table = "table"
    json = "json"


OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="table, or json for scripts.", case_sensitive=False)]
NameArg = Annotated[str, typer.Argument(metavar="NAME", show_default=False)]
LimitArg = Annotated[int, typer.Argument(metavar="N", help="0 or more; 0 delivers nothing.")]
PoolOpt = Annotated[str, typer.Option("--pool", "-p", help="The work pool.")]
LimitOpt = Annotated[
    int | None, typer.Option("--concurrency-limit", help="Most active runs at once; 0 delivers nothing.")
]
DescriptionOpt = Annotated[str | None, typer.Option("--description", "-d", help="Free text.")]
JsonOpt = Annotated[str | None, typer.Option(metavar="JSON|@FILE", help="A JSON object, or @FILE holding one.")]
TemplateOpt = Annotated[
    Path | None, typer.Option("--base-job-template", metavar="FILE", help="Base job template (JSON, or YAML).")
]
# A negative limit given as a positional argument must reach the core (which names the rule), not the parser.
_NEGATIVE_ARGS = {"ignore_unknown_options": True}
STORE_HELP = "sqlite:///PATH or dynamodb://TABLE?region=R; default: $PUSHPOOL_STORE, else ~/.pushpool/pushpool.db."


@app.callback()
def root(
    ctx: typer.Context,
    store: Annotated[str | None, typer.Option("--store", metavar="URL", help=STORE_HELP)] = None,
) -> None:
    """pushpool: admit runs by queue priority under limits and submit them straight to the infrastructure."""
    ctx.obj = store_url(store)


def main() -> None:
    """Console script entry point (`pushpool`)."""
    app()


# helpers ---------------------------------------------------------------------------------------------------
@contextmanager
def _opened(ctx: typer.Context) -> Iterator[Store]:
    store = open_store(ctx.obj)
    try:
        yield store
    finally:
        store.close()


def _jsonable(data: Any) -> Any:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, list):
        return [_jsonable(item) for item in data]
    if isinstance(data, dict):
        return {key: _jsonable(value) for key, value in data.items()}
    return to_jsonable_python(data)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(_jsonable(data), indent=2, ensure_ascii=False))


def _say(message: str) -> None:
    render.console().print(message, markup=False, highlight=False, soft_wrap=True)


def _read_file(option: str, path: Path) -> str:
    try:
        return path.expanduser().read_text()
    except OSError as exc:
        raise InvalidInput(f"{option}: cannot read {str(path)!r} ({exc.strerror or exc}).") from None


def _parse(option: str, text: str, *, yaml_ok: bool, what: str) -> Any:
    try:
        return yaml.safe_load(text) if yaml_ok else json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{option} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                           f"pass {what}.") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{option} is not valid YAML ({' '.join(str(exc).split())}); pass {what}.") from None


def _json_object(option: str, value: str | None) -> dict[str, Any] | None:
    """Parse a `JSON` or `@FILE` option (an .yaml/.yml file may hold YAML) into an object."""
    if value is None:
        return None
    text, yaml_ok = value, False
    if value.startswith("@"):
        path = Path(value[1:])
        text, yaml_ok = _read_file(option, path), path.suffix in (".yaml", ".yml")
    data = _parse(option, text, yaml_ok=yaml_ok, what="a JSON object or @FILE")
    if not isinstance(data, dict):
        raise InvalidInput(f"{option} must be a JSON object like {{\"key\": \"value\"}}, got {type(data).__name__}.")
    return data


def _template(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    option = f"--base-job-template {path}"
    data = _parse(option, _read_file("--base-job-template", path), yaml_ok=path.suffix in (".yaml", ".yml"),
                  what="a JSON object with job_configuration and variables")
    if not isinstance(data, dict):
        raise InvalidInput(f"{option} must hold a JSON object with job_configuration and variables.")
    return data


def _name_counts(pool: WorkPool, queues: list[WorkQueue], counts: dict[str, int]) -> dict[str, int]:
    return {q.name: counts.get(queue_slot(pool.name, q.name), 0) for q in queues}


# work-pool -------------------------------------------------------------------------------------------------
@pool_app.command("create")
def pool_create(
    ctx: typer.Context,
    name: NameArg,
    type: Annotated[str, typer.Option("--type", "-t", help=f"One of: {', '.join(KNOWN_TYPES)}.")] = "process",
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    set_as_default: Annotated[bool, typer.Option("--set-as-default", help="Default pool of deployments.")] = False,
    base_job_template: TemplateOpt = None,
    concurrency_limit: LimitOpt = None,
    description: DescriptionOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing pool's settings.")] = False,
    job_variables: JsonOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create a work pool with its `default` queue."""
    template = _template(base_job_template)
    variables = _json_object("--job-variables", job_variables)
    with _opened(ctx) as store:
        pool = pool_ops.create_pool(
            store, name, type=type, paused=paused, base_job_template=template, job_variables=variables,
            concurrency_limit=concurrency_limit, description=description, set_as_default=set_as_default,
            overwrite=overwrite,
        )
    if output is Output.json:
        return _print_json(pool)
    default = " and set it as the default pool" if set_as_default else ""
    _say(f"Created work pool {pool.name!r} of type {pool.type}{default}.")


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
    template = _template(base_job_template)
    variables = _json_object("--job-variables", job_variables)
    limit = pool_ops.UNSET if concurrency_limit is None else concurrency_limit
    with _opened(ctx) as store:
        pool = pool_ops.update_pool(
            store, name, base_job_template=template, job_variables=variables, description=description,
            concurrency_limit=limit,
        )
    if output is Output.json:
        return _print_json(pool)
    _say(f"Updated work pool {pool.name!r}.")


@pool_app.command("ls")
def pool_ls(ctx: typer.Context, output: OutputOpt = Output.table) -> None:
    """List work pools."""
    with _opened(ctx) as store:
        pools = store.list_pools()
        slots = store.slots([pool_slot(p.name) for p in pools])
    if output is Output.json:
        return _print_json(pools)
    active = {p.name: s.active for p in pools if (s := slots.get(pool_slot(p.name))) is not None}
    render.show(render.pools_table(pools, active))


@pool_app.command("inspect")
def pool_inspect(ctx: typer.Context, name: NameArg, output: OutputOpt = Output.table) -> None:
    """Show a pool, its active runs against its limit, and its queues in priority order."""
    with _opened(ctx) as store:
        pool = pool_ops.get_pool(store, name)
        queues = store.list_queues(name)
        counts = pool_ops.active_counts(store, pool, queues)
    active = counts.get(pool_slot(name), 0)
    per_queue = _name_counts(pool, queues, counts)
    if output is Output.json:
        queue_data = [{**_jsonable(q), "active": per_queue[q.name]} for q in queues]
        return _print_json({**_jsonable(pool), "active": active, "queues": queue_data})
    render.show(render.pool_detail(pool, active, queues, per_queue))


@pool_app.command("pause")
def pool_pause(ctx: typer.Context, name: NameArg) -> None:
    """Pause a pool: it delivers nothing; schedules keep creating runs, which wait."""
    with _opened(ctx) as store:
        pool_ops.update_pool(store, name, paused=True)
    _say(f"Paused work pool {name!r}.")


@pool_app.command("resume")
def pool_resume(ctx: typer.Context, name: NameArg) -> None:
    """Resume a paused pool."""
    with _opened(ctx) as store:
        pool = pool_ops.update_pool(store, name, paused=False)
    _say(f"Resumed work pool {name!r}; its status is {pool.status}.")


@pool_app.command("delete")
def pool_delete(ctx: typer.Context, name: NameArg) -> None:
    """Delete a pool and its queues (refused while deployments use it or runs are active)."""
    with _opened(ctx) as store:
        pool_ops.delete_pool(store, name)
    _say(f"Deleted work pool {name!r}.")


@pool_app.command("preview")
def pool_preview(
    ctx: typer.Context,
    name: NameArg,
    hours: Annotated[float, typer.Option("--hours", min=0, help="How far ahead to look.")] = 1.0,
    output: OutputOpt = Output.table,
) -> None:
    """Upcoming runs per queue and, for each due run, why it waits."""
    _preview(ctx, name, hours, None, output)


def _preview(ctx: typer.Context, pool: str, hours: float, queue: str | None, output: Output) -> None:
    with _opened(ctx) as store:
        preview = preview_pool(store, pool, hours, queue=queue)
    if output is Output.json:
        return _print_json({
            "pool": _jsonable(preview.pool),
            "active": preview.active,
            "hours": preview.hours,
            "queues": [
                {"queue": _jsonable(qp.queue), "active": qp.active, "runs": to_jsonable_python(qp.runs)}
                for qp in preview.queues
            ],
        })
    render.show(*render.preview_tables(preview))


@pool_app.command("set-concurrency-limit", context_settings=_NEGATIVE_ARGS)
def pool_set_limit(ctx: typer.Context, name: NameArg, limit: LimitArg) -> None:
    """Set a pool's concurrency limit (0 delivers nothing)."""
    with _opened(ctx) as store:
        pool_ops.update_pool(store, name, concurrency_limit=limit)
    _say(f"Set the concurrency limit of work pool {name!r} to {limit}.")


@pool_app.command("clear-concurrency-limit")
def pool_clear_limit(ctx: typer.Context, name: NameArg) -> None:
    """Remove a pool's concurrency limit (unlimited)."""
    with _opened(ctx) as store:
        pool_ops.update_pool(store, name, concurrency_limit=None)
    _say(f"Cleared the concurrency limit of work pool {name!r}.")


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
    _say(f"Wrote the default base job template of type {type} to {file}.")


# work-queue ------------------------------------------------------------------------------------------------
@queue_app.command("create")
def queue_create(
    ctx: typer.Context,
    name: NameArg,
    pool: PoolOpt,
    priority: Annotated[int | None, typer.Option(help="1 is the highest; a taken one is inserted at.")] = None,
    concurrency_limit: LimitOpt = None,
    description: DescriptionOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create a queue; without --priority it goes last."""
    with _opened(ctx) as store:
        queue = pool_ops.create_queue(
            store, pool, name, priority=priority, concurrency_limit=concurrency_limit, description=description
        )
    if output is Output.json:
        return _print_json(queue)
    _say(f"Created work queue {queue.name!r} in pool {pool!r} at priority {queue.priority}.")


@queue_app.command("update")
def queue_update(
    ctx: typer.Context,
    name: NameArg,
    pool: PoolOpt,
    priority: Annotated[int | None, typer.Option(help="1 is the highest; a taken one is inserted at.")] = None,
    description: DescriptionOpt = None,
    concurrency_limit: LimitOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Change a queue's priority, description or limit; the rest stays."""
    limit = pool_ops.UNSET if concurrency_limit is None else concurrency_limit
    with _opened(ctx) as store:
        queue = pool_ops.update_queue(
            store, pool, name, priority=priority, description=description, concurrency_limit=limit
        )
    if output is Output.json:
        return _print_json(queue)
    _say(f"Updated work queue {queue.name!r} in pool {pool!r}; priority {queue.priority}.")


@queue_app.command("ls")
def queue_ls(ctx: typer.Context, pool: PoolOpt, output: OutputOpt = Output.table) -> None:
    """List a pool's queues in priority order."""
    with _opened(ctx) as store:
        work_pool = pool_ops.get_pool(store, pool)
        queues = store.list_queues(pool)
        counts = pool_ops.active_counts(store, work_pool, queues)
    if output is Output.json:
        return _print_json(queues)
    render.show(render.queues_table(queues, _name_counts(work_pool, queues, counts)))


@queue_app.command("inspect")
def queue_inspect(ctx: typer.Context, name: NameArg, pool: PoolOpt, output: OutputOpt = Output.table) -> None:
    """Show a queue and its active runs against its limit."""
    with _opened(ctx) as store:
        queue = pool_ops.get_queue(store, pool, name)
        counts = pool_ops.active_counts(store, pool_ops.get_pool(store, pool), [queue])
    active = counts.get(queue_slot(pool, name), 0)
    if output is Output.json:
        return _print_json({**_jsonable(queue), "active": active})
    render.show(render.queue_detail(queue, active))


@queue_app.command("pause")
def queue_pause(ctx: typer.Context, name: NameArg, pool: PoolOpt) -> None:
    """Pause one queue; the pool's other queues go on."""
    with _opened(ctx) as store:
        pool_ops.update_queue(store, pool, name, paused=True)
    _say(f"Paused work queue {name!r} in pool {pool!r}.")


@queue_app.command("resume")
def queue_resume(ctx: typer.Context, name: NameArg, pool: PoolOpt) -> None:
    """Resume a paused queue."""
    with _opened(ctx) as store:
        queue = pool_ops.update_queue(store, pool, name, paused=False)
    _say(f"Resumed work queue {name!r} in pool {pool!r}; its status is {queue.status}.")


@queue_app.command("delete")
def queue_delete(ctx: typer.Context, name: NameArg, pool: PoolOpt) -> None:
    """Delete a queue (never `default`; refused while deployments or runs use it)."""
    with _opened(ctx) as store:
        pool_ops.delete_queue(store, pool, name)
    _say(f"Deleted work queue {name!r} from pool {pool!r}.")


@queue_app.command("preview")
def queue_preview(
    ctx: typer.Context,
    name: NameArg,
    pool: PoolOpt,
    hours: Annotated[float, typer.Option("--hours", min=0, help="How far ahead to look.")] = 1.0,
    output: OutputOpt = Output.table,
) -> None:
    """Upcoming runs of one queue and, for each due run, why it waits."""
    _preview(ctx, pool, hours, name, output)


@queue_app.command("set-concurrency-limit", context_settings=_NEGATIVE_ARGS)
def queue_set_limit(ctx: typer.Context, name: NameArg, limit: LimitArg, pool: PoolOpt) -> None:
    """Set a queue's concurrency limit (0 delivers nothing)."""
    with _opened(ctx) as store:
        pool_ops.update_queue(store, pool, name, concurrency_limit=limit)
    _say(f"Set the concurrency limit of work queue {name!r} in pool {pool!r} to {limit}.")


@queue_app.command("clear-concurrency-limit")
def queue_clear_limit(ctx: typer.Context, name: NameArg, pool: PoolOpt) -> None:
    """Remove a queue's concurrency limit (unlimited)."""
    with _opened(ctx) as store:
        pool_ops.update_queue(store, pool, name, concurrency_limit=None)
    _say(f"Cleared the concurrency limit of work queue {name!r} in pool {pool!r}.")


# deployment ------------------------------------------------------------------------------------------------
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
    variables = _json_object("--job-variables", job_variables)
    params = _json_object("--parameters", parameters)
    with _opened(ctx) as store:
        deployment = deployment_ops.create_deployment(
            store, name, pool=pool, queue=queue, job_variables=variables, parameters=params,
            schedules=[schedule] if schedule else None, concurrency_limit=concurrency_limit, tags=tag,
            description=description,
        )
    if output is Output.json:
        return _print_json(deployment)
    _say(f"Created deployment {deployment.name!r} on pool {deployment.pool!r}, queue {deployment.queue!r}.")


@deployment_app.command("ls")
def deployment_ls(
    ctx: typer.Context,
    pool: Annotated[str | None, typer.Option("--pool", "-p", help="Only this pool's deployments.")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """List deployments."""
    with _opened(ctx) as store:
        if pool is not None:
            pool_ops.get_pool(store, pool)
        deployments = store.list_deployments(pool)
    if output is Output.json:
        return _print_json(deployments)
    render.show(render.deployments_table(deployments))


@deployment_app.command("inspect")
def deployment_inspect(ctx: typer.Context, name: NameArg, output: OutputOpt = Output.table) -> None:
    """Show a deployment."""
    with _opened(ctx) as store:
        deployment = deployment_ops.get_deployment(store, name)
    if output is Output.json:
        return _print_json(deployment)
    render.show(render.deployment_detail(deployment))


@deployment_app.command("pause-schedule")
def deployment_pause(ctx: typer.Context, name: NameArg) -> None:
    """Stop a deployment's schedules from creating runs (runs created ahead of time are cancelled)."""
    with _opened(ctx) as store:
        deployment_ops.update_deployment(store, name, schedule_paused=True)
    _say(f"Paused the schedule of deployment {name!r}.")


@deployment_app.command("resume-schedule")
def deployment_resume(ctx: typer.Context, name: NameArg) -> None:
    """Let a deployment's schedules create runs again."""
    with _opened(ctx) as store:
        deployment_ops.update_deployment(store, name, schedule_paused=False)
    _say(f"Resumed the schedule of deployment {name!r}.")


@deployment_app.command("delete")
def deployment_delete(ctx: typer.Context, name: NameArg) -> None:
    """Delete a deployment; its scheduled runs are cancelled (refused while runs are active)."""
    with _opened(ctx) as store:
        deployment_ops.delete_deployment(store, name)
    _say(f"Deleted deployment {name!r}.")


def _when(start_in: float | None, at: str | None) -> datetime | None:
    if start_in is not None and at is not None:
        raise InvalidInput("pass either --start-in or --at, not both.")
    if start_in is not None:
        if start_in < 0:
            raise InvalidInput(f"--start-in must be 0 or more seconds, got {start_in:g}.")
        return utcnow() + timedelta(seconds=start_in)
    if at is None:
        return None
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise InvalidInput(f"--at {at!r} is not an ISO 8601 time such as 2025-01-31T09:30:00+01:00.") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


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
    params = _json_object("--parameters", parameters)
    variables = _json_object("--job-variables", job_variables)
    with _opened(ctx) as store:
        run = deployment_ops.run_deployment(
            store, name, parameters=params, job_variables=variables, scheduled_time=when
        )
    if output is Output.json:
        return _print_json(run)
    _say(f"Created flow run {run.name!r} ({run.id}) of deployment {name!r}, "
         f"scheduled for {render.time_text(run.scheduled_time)}.")


# flow-run --------------------------------------------------------------------------------------------------
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
    with _opened(ctx) as store:
        if pool is not None:
            pool_ops.get_pool(store, pool)
            if queue is not None:
                pool_ops.get_queue(store, pool, queue)
        names = [pool] if pool is not None else [p.name for p in store.list_pools()]
        runs = [r for p in names for r in store.list_runs(p, queue=queue, state=state, limit=limit)]
    runs = sorted(runs, key=lambda r: (r.scheduled_time, r.id), reverse=True)[:limit]
    if output is Output.json:
        return _print_json(runs)
    render.show(render.runs_table(runs))


@run_app.command("inspect")
def run_inspect(ctx: typer.Context, run_id: Annotated[str, typer.Argument(metavar="ID")],
                output: OutputOpt = Output.table) -> None:
    """Show a flow run and its state history."""
    with _opened(ctx) as store:
        run = get_run(store, run_id)
    if output is Output.json:
        return _print_json(run)
    render.show(render.run_detail(run))


@run_app.command("cancel")
def run_cancel(ctx: typer.Context, run_id: Annotated[str, typer.Argument(metavar="ID")],
               output: OutputOpt = Output.table) -> None:
    """Cancel a flow run: a scheduled one at once, a started one once its infrastructure has stopped."""
    with _opened(ctx) as store:
        run = cancel_run(store, run_id, message="cancelled from the CLI")
    if output is Output.json:
        return _print_json(run)
    if run.state is StateType.CANCELLED:
        _say(f"Cancelled flow run {run.name!r} ({run.id}).")
    else:
        _say(f"Cancelling flow run {run.name!r} ({run.id}); it becomes Cancelled once its infrastructure stops.")


@run_app.command("logs")
def run_logs(ctx: typer.Context, run_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Print a flow run's state history, then its output where the provider keeps it (process pools)."""
    with _opened(ctx) as store:
        run = get_run(store, run_id)
        pool = store.get_pool(run.pool)
    for line in render.log_lines(run):
        typer.echo(line)
    if pool is not None and run.infrastructure_id is not None:
        output = provider_logs(pool.type, run.infrastructure_id)
        if output is not None:
            typer.echo(f"--- output of {run.infrastructure_id} ---")
            typer.echo(output, nl=False)


# dispatch, serve, timeline ---------------------------------------------------------------------------------
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
    from .dispatch import Dispatcher

    if once and interval is not None:
        raise InvalidInput("pass either --once or --interval SECONDS, not both.")
    with _opened(ctx) as store:
        dispatcher = Dispatcher(store)
        try:
            while True:
                summary = dispatcher.run_pass(pool=pool, queue=queue)
                if output is Output.json:
                    typer.echo(json.dumps(summary.as_dict()))
                else:
                    render.show(render.pass_summary(summary))
                if interval is None:
                    break
                time.sleep(interval)
        except KeyboardInterrupt:
            _say("Stopped.")
        finally:
            dispatcher.close()


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")] = 4300,
    interval: Annotated[float, typer.Option(metavar="SECONDS", min=0.1, help="Seconds between passes.")] = 5.0,
    duration: Annotated[
        float | None, typer.Option(metavar="SECONDS", min=0.1, help="Stop by itself after this long.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print only the start and stop lines.")] = False,
) -> None:
    """Dispatch loop plus the callback and management HTTP API on one machine; stops on Ctrl-C or SIGTERM."""
    from .serve import Server, api_token_from_env

    token, generated = api_token_from_env()
    with _opened(ctx) as store:
        server = Server(
            store,
            host=host,
            port=port,
            interval=interval,
            api_token=token,
            on_pass=None if quiet else lambda s: _say(f"{render.time_text(s.started)} {s.headline()}"),
        )
        _say(f"pushpool serving on {server.url} (a pass every {interval:g}s); Ctrl-C stops.")
        if generated:
            _say(f"Management API bearer token for this session: {token} (set PUSHPOOL_API_TOKEN to choose one).")
        server.run(duration)
    _say("Stopped.")


@pool_app.command("timeline")
def pool_timeline(
    ctx: typer.Context,
    name: NameArg,
    since: Annotated[str, typer.Option(metavar="DURATION", help="How far back: 90s, 10m, 2h, 1d.")] = "1h",
    output: OutputOpt = Output.table,
) -> None:
    """A terminal chart: one row per run, grouped by queue, a bar from admission to end."""
    from . import timeline

    window = timeline.parse_duration(since)
    now = utcnow()
    with _opened(ctx) as store:
        pool_ops.get_pool(store, name)
        queues = [q.name for q in store.list_queues(name)]
        bars = timeline.bars(store.list_runs(name, limit=timeline.MAX_RUNS), now - window, now)
    if output is Output.json:
        return _print_json([b.__dict__ for b in bars])
    render.show(timeline.render(bars, queues, now, render.console().width))


# apply, store ----------------------------------------------------------------------------------------------
@app.command("apply")
def apply_file(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="YAML or JSON with pools, queues, deployments.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Create or update pools, queues and deployments to match FILE, and print the plan."""
    with _opened(ctx) as store:
        plan = apply_ops.apply(store, file, dry_run=dry_run)
    if output is Output.json:
        return _print_json({"dry_run": dry_run, "actions": plan.as_dicts()})
    for line in plan.lines():
        typer.echo(line)
    if dry_run:
        _say("Dry run: nothing written.")
    else:
        _say("Applied." if plan.has_changes else "Nothing to change.")


@store_app.command("init")
def store_init(ctx: typer.Context) -> None:
    """Prepare the store (DynamoDB: create the table and indexes; SQLite: nothing to do)."""
    with _opened(ctx) as store:
        if store.url.startswith("sqlite:"):
            return _say(f"SQLite store ready at {store.url.removeprefix('sqlite:///')}.")
        init = getattr(store, "init", None)
        if callable(init):
            init()
    _say(f"Store ready at {store.url}.")

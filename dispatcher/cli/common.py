"""What every command module of `pushpool` shares: the root app, its command groups, options and helpers.

Errors the core raises on purpose (`PushpoolError`) are caught in one place, `_Group.invoke`, and printed as one
sentence on stderr with the error's exit code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python
from rich.console import Console
from typer.core import TyperGroup

from .. import deployments as deployment_ops
from .. import json_input
from .. import pools as pool_ops
from .. import render_tables as render
from ..aws_wakeups import DISPATCH_FUNCTION_ENV, LambdaWakeups
from ..errors import InvalidInput, PushpoolError
from ..models import Deployment, WorkPool, WorkQueue, validation_sentence
from ..preview import MAX_PREVIEW_HOURS, preview_pool
from ..store import open_store, store_url
from ..store.base import Store, queue_slot
from ..terminal import escape_json_text, safe_text
from ..wake_socket import store_wakeups
from ..wakeups import deployment_wake_reason, room_opened


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
    # An error may quote a provider or a job (a run's message): escaped like everything a job can write.
    Console(stderr=True).print(
        f"Error: {safe_text(message)}", style="red", markup=False, highlight=False, soft_wrap=True
    )
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
TEN_YEARS = timedelta(days=3653)
"""The furthest `deployment run --start-in` looks ahead and `work-pool timeline --since` looks back."""
HoursOpt = Annotated[
    float,
    typer.Option("--hours", "-h", help=f"How far ahead to look: above 0, at most {MAX_PREVIEW_HOURS} (a year)."),
]
HELP_ONLY_LONG = {"help_option_names": ["--help"]}
"""Context settings of a command where `-h` means something else, as in Prefect's CLI (`preview -h 2` is hours,
`flow-run logs -h` is head); `--help` still shows the help."""
# A negative limit given as a positional argument must reach the core (which names the rule), not the parser.
NEGATIVE_ARGS = {"ignore_unknown_options": True}
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
def opened(ctx: typer.Context) -> Iterator[Store]:
    store = open_store(ctx.obj)
    try:
        yield store
    finally:
        store.close()


def wake(ctx: typer.Context, pool: str | None, reason: str | None, due: datetime | None = None) -> None:
    """Tell whoever dispatches this store that a pass over `pool` may start runs now (`reason` None: not);
    `due`: when the run created falls due (`wakeups.Wakeups.wake`).

    A `serve` on the same SQLite file hears it through its socket; on a DynamoDB store with
    PUSHPOOL_DISPATCH_FUNCTION set (an AWS stack's), the dispatch function is invoked asynchronously, as the http
    function does; otherwise the next timed pass takes the change.
    """
    if reason is None:
        return
    function = os.environ.get(DISPATCH_FUNCTION_ENV)
    if function and store_url(ctx.obj).startswith("dynamodb://"):
        lambda_wakeups = LambdaWakeups(function)
        lambda_wakeups.wake(pool, reason, due)
        lambda_wakeups.flush()  # the invoke goes out on a thread: wait for Lambda's 202 before the CLI exits
        return
    store_wakeups(ctx.obj).wake(pool, reason, due)


def update_pool(ctx: typer.Context, store: Store, name: str, **changes: Any) -> WorkPool:
    """`pools.update_pool`, waking `serve` when the change lets waiting runs in (resumed, limit raised)."""
    before = pool_ops.get_pool(store, name)
    after = pool_ops.update_pool(store, name, **changes)
    wake(ctx, after.name, room_opened(before, after))
    return after


def update_queue(ctx: typer.Context, store: Store, pool: str, name: str, **changes: Any) -> WorkQueue:
    """`pools.update_queue`, waking `serve` when the change lets waiting runs in (resumed, limit raised)."""
    before = pool_ops.get_queue(store, pool, name)
    after = pool_ops.update_queue(store, pool, name, **changes)
    wake(ctx, after.pool, room_opened(before, after))
    return after


def update_deployment(ctx: typer.Context, store: Store, name: str, **changes: Any) -> Deployment:
    """`deployments.update_deployment`, waking `serve` for a limit raised or an active schedule set."""
    before = deployment_ops.get_deployment(store, name)
    after = deployment_ops.update_deployment(store, name, **changes)
    wake(ctx, after.pool, deployment_wake_reason(before, after))
    return after


def jsonable(data: Any) -> Any:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, list):
        return [jsonable(item) for item in data]
    if isinstance(data, dict):
        return {key: jsonable(value) for key, value in data.items()}
    return to_jsonable_python(data)


def print_json(data: Any) -> None:
    # Still valid JSON; a job's C1 or bidi characters are written as \u escapes, not sent raw to a terminal.
    typer.echo(escape_json_text(json.dumps(jsonable(data), indent=2, ensure_ascii=False)))


def say(message: str) -> None:
    render.console().print(safe_text(message), markup=False, highlight=False, soft_wrap=True)


def _read_file(option: str, path: Path, what: str) -> str:
    try:
        return json_input.read_text(path.expanduser(), option)
    except UnicodeDecodeError:  # the words of `apply` for its files
        raise InvalidInput(f"{option}: {str(path)!r} is not UTF-8 text; save {what} as UTF-8 YAML or JSON.") from None
    except OSError as exc:
        raise InvalidInput(f"{option}: cannot read {str(path)!r} ({exc.strerror or exc}).") from None


def _parse(option: str, text: str, *, yaml_ok: bool, what: str) -> Any:
    kind = "YAML" if yaml_ok else "JSON"
    try:
        data = yaml.safe_load(text) if yaml_ok else json_input.loads(text, option)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{option} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); pass {what}."
        ) from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{option} is not valid YAML ({' '.join(str(exc).split())}); pass {what}.") from None
    except RecursionError:
        raise InvalidInput(f"{option} is not valid {kind} (nested too deeply); pass {what}.") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise InvalidInput(f"{option} is not valid {kind} ({exc}); pass {what}.") from None
    json_input.refuse_non_finite(data, option, kind)  # YAML's .nan and .inf
    return data


def json_object(option: str, value: str | None) -> dict[str, Any] | None:
    """Parse a `JSON` or `@FILE` option (an .yaml/.yml file may hold YAML) into an object."""
    if value is None:
        return None
    text, yaml_ok = value, False
    if value.startswith("@"):
        path = Path(value[1:])
        text, yaml_ok = _read_file(option, path, "the file"), path.suffix in (".yaml", ".yml")
    data = _parse(option, text, yaml_ok=yaml_ok, what="a JSON object or @FILE")
    if not isinstance(data, dict):
        raise InvalidInput(f'{option} must be a JSON object like {{"key": "value"}}, got {type(data).__name__}.')
    return data


def load_template(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    option = f"--base-job-template {path}"
    data = _parse(
        option,
        _read_file("--base-job-template", path, "the base job template"),
        yaml_ok=path.suffix in (".yaml", ".yml"),
        what="a JSON object with job_configuration and variables",
    )
    if not isinstance(data, dict):
        raise InvalidInput(f"{option} must hold a JSON object with job_configuration and variables.")
    return data


def name_counts(pool: WorkPool, queues: list[WorkQueue], counts: dict[str, int]) -> dict[str, int]:
    return {q.name: counts.get(queue_slot(pool.name, q.name), 0) for q in queues}


def show_preview(ctx: typer.Context, pool: str, hours: float, queue: str | None, output: Output) -> None:
    if not 0 < hours <= MAX_PREVIEW_HOURS:  # NaN fails it too
        raise InvalidInput(
            f"--hours must be a number of hours above 0 and at most {MAX_PREVIEW_HOURS} (a year), got {hours:.12g}."
        )
    with opened(ctx) as store:
        preview = preview_pool(store, pool, hours, queue=queue)
    if output is Output.json:
        return print_json(
            {
                "pool": jsonable(preview.pool),
                "active": preview.active,
                "hours": preview.hours,
                "queues": [
                    {"queue": jsonable(qp.queue), "active": qp.active, "runs": to_jsonable_python(qp.runs)}
                    for qp in preview.queues
                ],
                "problems": preview.problems,
            }
        )
    render.show(*render.preview_tables(preview))
    for problem in preview.problems.values():
        typer.echo(f"Not planned: {problem}", err=True)

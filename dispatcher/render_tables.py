"""Rich renderings for the `pushpool` CLI: tables and detail views, built from models, deciding nothing."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .models import Deployment, FlowRun, StateRecord, WorkPool, WorkQueue
from .schedules import describe
from .terminal import safe_text

NO_LIMIT = "∞"
STATUS_STYLES = {"READY": "green", "NOT_READY": "yellow", "PAUSED": "red"}
STATE_STYLES = {  # the one colour per state: tables, the timeline and the dashboard (ui/static/app.css)
    "SCHEDULED": "cyan",
    "PENDING": "blue",
    "RUNNING": "blue",
    "CANCELLING": "magenta",
    "COMPLETED": "green",
    "FAILED": "red",
    "CRASHED": "red",
    "CANCELLED": "dim",
}
_WIDE = 200
"""Width used when stdout is not a terminal, so that piped or captured tables are not cut short."""


def console() -> Console:
    """A console on stdout; wide when stdout is a pipe or a file.

    Markup and emoji codes are off: a string shown here may hold a job's words, and `[link=...]` or
    `[on red]` in them must print as written (styles come from `Text` objects, never from markup).
    """
    return Console(width=None if sys.stdout.isatty() else _WIDE, markup=False, emoji=False)


def show(*renderables: RenderableType) -> None:
    out = console()
    for renderable in renderables:
        out.print(renderable)


def time_text(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def state_text(state: str, name: str) -> Text:
    label = name if name.upper() == state else f"{name} ({state})"
    return Text(label, style=STATE_STYLES.get(state, ""))


def limit_text(active: int, limit: int | None) -> str:
    return f"{active}/{NO_LIMIT if limit is None else limit}"


def json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if value else "-"


def _fields(title: str, rows: Iterable[tuple[str, RenderableType]]) -> Table:
    grid = Table(title=title, show_header=False, title_justify="left", box=None, padding=(0, 2, 0, 0))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, value)
    return grid


# pools -----------------------------------------------------------------------------------------------------
def pools_table(pools: list[WorkPool], active: Mapping[str, int], *, verbose: bool = False) -> Table:
    """One row per pool; `verbose` (Prefect's `work-pool ls -v`) adds paused, template variables and times."""
    table = Table(title="Work pools", title_justify="left")
    columns = ["Name", "Type", "Status", "Concurrency", "Description"]
    if verbose:
        columns += ["Paused", "Variables", "Created", "Updated"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for pool in pools:
        row: list[RenderableType] = [
            pool.name,
            pool.type,
            status_text(pool.status),
            limit_text(active.get(pool.name, 0), pool.concurrency_limit),
            pool.description or "",
        ]
        if verbose:
            row += [
                str(pool.paused).lower(),
                ", ".join(template_variables(pool)) or "-",
                time_text(pool.created),
                time_text(pool.updated),
            ]
        table.add_row(*row)
    return table


def template_variables(pool: WorkPool) -> list[str]:
    variables = pool.base_job_template.get("variables", {})
    properties = variables.get("properties", {}) if isinstance(variables, dict) else {}
    return sorted(properties) if isinstance(properties, dict) else []


def pool_detail(
    pool: WorkPool,
    active: int,
    queues: list[WorkQueue],
    queue_active: Mapping[str, int],
    *,
    status_reason: str | None = None,
) -> Group:
    status = status_text(pool.status)
    if status_reason:
        status = Text.assemble(status, f" ({status_reason})")
    fields = _fields(
        f"Work pool {pool.name}",
        [
            ("type", pool.type),
            ("status", status),
            ("paused", str(pool.paused).lower()),
            ("description", pool.description or "-"),
            ("concurrency", limit_text(active, pool.concurrency_limit)),
            ("template variables", ", ".join(template_variables(pool)) or "-"),
            ("job variables", json_text(pool.job_variables)),
            ("last polled", time_text(pool.last_polled)),
            ("created", time_text(pool.created)),
            ("updated", time_text(pool.updated)),
        ],
    )
    return Group(fields, Text(""), queues_table(queues, queue_active))


# queues ----------------------------------------------------------------------------------------------------
def queues_table(queues: list[WorkQueue], active: Mapping[str, int]) -> Table:
    pool = queues[0].pool if queues else ""
    table = Table(title=f"Work queues of {pool}" if pool else "Work queues", title_justify="left")
    for column in ("Priority", "Name", "Status", "Concurrency", "Description"):
        table.add_column(column)
    for queue in queues:
        table.add_row(
            str(queue.priority),
            queue.name,
            status_text(queue.status),
            limit_text(active.get(queue.name, 0), queue.concurrency_limit),
            queue.description or "",
        )
    return table


def queue_detail(queue: WorkQueue, active: int) -> Table:
    return _fields(
        f"Work queue {queue.name} of {queue.pool}",
        [
            ("priority", str(queue.priority)),
            ("status", status_text(queue.status)),
            ("paused", str(queue.paused).lower()),
            ("description", queue.description or "-"),
            ("concurrency", limit_text(active, queue.concurrency_limit)),
            ("last polled", time_text(queue.last_polled)),
            ("created", time_text(queue.created)),
            ("updated", time_text(queue.updated)),
        ],
    )


# deployments -----------------------------------------------------------------------------------------------
def schedules_text(deployment: Deployment) -> str:
    """A deployment's schedules in words, `(paused)` when they are."""
    text = "; ".join(describe(s) for s in deployment.schedules) or "-"
    return f"{text} (paused)" if deployment.schedules and deployment.schedule_paused else text


def deployments_table(deployments: list[Deployment]) -> Table:
    table = Table(title="Deployments", title_justify="left")
    for column in ("Name", "Pool", "Queue", "Schedules", "Limit", "Tags"):
        table.add_column(column)
    for d in deployments:
        limit = NO_LIMIT if d.concurrency_limit is None else str(d.concurrency_limit)
        table.add_row(d.name, d.pool, d.queue, schedules_text(d), limit, ", ".join(d.tags))
    return table


def deployment_detail(d: Deployment) -> Table:
    return _fields(
        f"Deployment {d.name}",
        [
            ("id", d.id),
            ("pool", d.pool),
            ("queue", d.queue),
            ("description", d.description or "-"),
            ("schedules", schedules_text(d)),
            ("schedule paused", str(d.schedule_paused).lower()),
            ("concurrency limit", NO_LIMIT if d.concurrency_limit is None else str(d.concurrency_limit)),
            ("tags", ", ".join(d.tags) or "-"),
            ("job variables", json_text(d.job_variables)),
            ("parameters", json_text(d.parameters)),
            ("created", time_text(d.created)),
            ("updated", time_text(d.updated)),
        ],
    )


# flow runs -------------------------------------------------------------------------------------------------
def runs_table(runs: list[FlowRun]) -> Table:
    table = Table(title="Flow runs", title_justify="left")
    for column in ("ID", "Name", "Deployment", "Pool", "Queue", "State", "Scheduled"):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(
            run.id,
            safe_text(run.name),
            safe_text(run.deployment),
            run.pool,
            run.queue,
            state_text(run.state.value, run.state_name),
            time_text(run.scheduled_time),
        )
    return table


def history_table(run: FlowRun) -> Table:
    table = Table(title="State history", title_justify="left")
    for column in ("Time", "State", "Source", "Message"):
        table.add_column(column, overflow="fold")
    for record in run.state_history:
        state = state_text(record.state.value, record.name)
        if not record.applied:
            state.append(" — ignored" + _repeats(record), style="dim")
        # The message (and a provider's words in it) may come from the job: escaped, never acted on.
        table.add_row(time_text(record.time), state, safe_text(record.source), safe_text(record.message or ""))
    return table


def _repeats(record: StateRecord) -> str:
    """How often a counted no-op arrived, and when last: ` ×3, last 12:00:05`."""
    if record.count <= 1:
        return ""
    last = f", last {time_text(record.last_time)}" if record.last_time else ""
    return f" ×{record.count}{last}"


def run_detail(run: FlowRun) -> Group:
    fields = _fields(
        f"Flow run {run.name}",
        [
            ("id", run.id),
            ("deployment", run.deployment),
            ("pool", run.pool),
            ("queue", run.queue),
            ("state", state_text(run.state.value, run.state_name)),
            ("scheduled", time_text(run.scheduled_time)),
            ("infrastructure id", safe_text(run.infrastructure_id or "-")),
            ("submission attempts", str(run.submission_attempts)),
            ("parameters", json_text(run.parameters)),
            ("job variables", json_text(run.job_variables)),
            ("created", time_text(run.created)),
            ("updated", time_text(run.updated)),
        ],
    )
    return Group(fields, Text(""), history_table(run))


def log_lines(run: FlowRun) -> list[str]:
    """One line per state transition: time, source, state/name, message (ignored proposals marked)."""
    lines = []
    for r in run.state_history:
        ignored = f" (ignored: not a forward move{_repeats(r)})" if not r.applied else ""
        message = f" {safe_text(r.message)}" if r.message else ""
        lines.append(f"{time_text(r.time)} {safe_text(r.source)}: {r.state.value}/{r.name}{ignored}{message}")
    return lines


# preview ---------------------------------------------------------------------------------------------------
def preview_tables(preview: Any) -> list[RenderableType]:
    """One table per queue of a `preview.PoolPreview`: upcoming runs and, for due runs, why they wait."""
    pool = preview.pool
    header = Text.assemble(
        (f"Work pool {pool.name}", "bold"),
        "  ",
        status_text(pool.status),
        f"  concurrency {limit_text(preview.active, pool.concurrency_limit)}  next {preview.hours:g} h",
    )
    out: list[RenderableType] = [header]
    for qp in preview.queues:
        q = qp.queue
        concurrency = limit_text(qp.active, q.concurrency_limit)
        title = f"{q.name} (priority {q.priority}, {q.status}, concurrency {concurrency})"
        table = Table(title=title, title_justify="left")
        for column in ("Time", "Name", "Deployment", "State", "Waits because"):
            table.add_column(column, overflow="fold")
        for run in qp.runs:
            why = (run.reason or "next pass") if run.due else ""
            table.add_row(time_text(run.scheduled_time), run.name, run.deployment, run.state_name, safe_text(why))
        if not qp.runs:
            table.add_row("-", "no runs in this window", "", "", "")
        out.append(table)
    return out


# dispatch --------------------------------------------------------------------------------------------------
def pass_summary(summary: Any) -> RenderableType:
    """A `dispatch.PassSummary`: the counts, then why runs wait (grouped) and what failed, with the words."""
    headline = Text(f"Pass at {time_text(summary.started)} ({summary.duration_seconds:.3f}s): {summary.headline()}")
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("what", style="bold")
    table.add_column("runs", justify="right")
    table.add_column("detail")
    reasons: dict[str, int] = {}
    for reason in summary.waiting.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
        table.add_row("waiting", str(count), safe_text(reason))
    for label, items in (("retrying", summary.retrying), ("crashed", summary.crashed), ("problem", summary.problems)):
        for run_id, words in items.items():
            table.add_row(label, run_id, safe_text(words))  # a provider's words, which a job may shape
    for key, words in summary.repairs.items():
        table.add_row("slot repaired", key, safe_text(words))
    return Group(headline, table) if table.row_count else headline

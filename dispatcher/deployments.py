"""Deployments and the flow runs they create: job variables checked against the pool's template."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from . import jobs, templating
from .callbacks import callback_url
from .errors import ConfigError, Conflict, InvalidInput, NotFound
from .models import (
    PARAMETERS_APART_BYTES,
    Deployment,
    FlowRun,
    StateRecord,
    WorkPool,
    build,
    check_json_document,
    check_name,
    check_run_parameters,
    check_scheduled_time,
    check_tags,
    json_size,
    utcnow,
)
from .pools import UNSET, default_pool_name, get_pool, get_queue, limit_arg
from .providers.base import Providers
from .schedules import Schedule
from .signing import PARAMETERS_ENV_MAX_BYTES
from .states import StateType
from .store.base import Store, UnreadableRecord, deployment_slot, with_parameters

EVERY_RUN = 1_000_000_000
"""A page size that reads all of a deployment's runs, where every one of them must be seen."""


def resolve_name(store: Store, name: str) -> str:
    """The stored deployment a name given as Prefect spells it means: `flow/dep` or `dep`.

    Deployment names cannot hold `/`, so `flow/dep` is Prefect's `<flow name>/<deployment name>`: it means
    the deployment `flow-dep` when one exists (how `import prefect` names a deployment whose name another
    flow's deployment also has), else `dep`. Any other name is returned unchanged.
    """
    flow, sep, deployment = name.rpartition("/")
    if not sep or not flow or not deployment:
        return name
    joined = f"{flow}-{deployment}"
    return joined if store.get_deployment(joined) is not None else deployment


def get_deployment(store: Store, name: str) -> Deployment:
    deployment = store.get_deployment(name)
    if deployment is None:
        raise NotFound(f"deployment {name!r} does not exist; see `pushpool deployment ls`")
    return deployment


def _check_object(field: str, value: Any, check: Callable[[str, Any], Any] = check_json_document) -> dict[str, Any]:
    """A JSON object within the models' limits (size, depth, finite numbers), checked before templating."""
    if not isinstance(value, dict):
        raise InvalidInput(f'{field} must be a JSON object like {{"key": "value"}}, got {type(value).__name__}.')
    try:
        return dict(check(field, value))
    except ValueError as exc:
        raise InvalidInput(f"{exc}.") from None


def _run_parameters_check(field: str, value: Any) -> Any:
    return check_run_parameters(value)


def create_deployment(
    store: Store,
    name: str,
    *,
    pool: str | None = None,
    queue: str | None = None,
    job_variables: dict[str, Any] | None = None,
    parameters: dict[str, Any] | None = None,
    schedules: list[Schedule] | None = None,
    concurrency_limit: int | None = None,
    tags: list[str] | None = None,
    description: str | None = None,
) -> Deployment:
    """Create a deployment on a pool (the default pool if none is named) and one of its queues."""
    pool = pool or default_pool_name(store)
    if pool is None:
        raise InvalidInput("deployment needs --pool, or a default pool set with `work-pool create --set-as-default`.")
    work_pool = get_pool(store, pool)
    queue_name = get_queue(store, pool, queue).name if queue is not None else "default"
    variables = _check_object("job_variables", job_variables or {})
    templating.validate_job_variables(
        work_pool.base_job_template, variables, field="job_variables", enforce_required=False
    )
    limit_arg("concurrency_limit", concurrency_limit)
    deployment = build(
        Deployment,
        name=name,
        pool=pool,
        queue=queue_name,
        job_variables=variables,
        parameters=_check_object("parameters", parameters or {}),
        schedules=schedules or [],
        concurrency_limit=concurrency_limit,
        tags=tags or [],
        description=description,
    )
    if store.get_deployment(name) is not None:
        raise Conflict(f"deployment {name!r} already exists; pick another name or delete it first")
    store.create_deployment(deployment)
    return deployment


def update_deployment(
    store: Store,
    name: str,
    *,
    queue: str | None = None,
    job_variables: dict[str, Any] | None = None,
    parameters: dict[str, Any] | None = None,
    schedules: list[Schedule] | None = None,
    schedule_paused: bool | None = None,
    concurrency_limit: int | None = UNSET,
    tags: list[str] | None = None,
    description: str | None = None,
) -> Deployment:
    """Change the given fields; a schedule change cancels runs the old schedule created ahead of time."""
    deployment = get_deployment(store, name)
    changes: dict[str, Any] = {"updated": utcnow()}
    if queue is not None:
        changes["queue"] = get_queue(store, deployment.pool, queue).name
    if job_variables is not None:
        template = get_pool(store, deployment.pool).base_job_template
        variables = _check_object("job_variables", job_variables)
        templating.validate_job_variables(template, variables, field="job_variables", enforce_required=False)
        changes["job_variables"] = variables
    if parameters is not None:
        changes["parameters"] = _check_object("parameters", parameters)
    if schedules is not None:
        changes["schedules"] = schedules
    if schedule_paused is not None:
        changes["schedule_paused"] = schedule_paused
    if concurrency_limit is not UNSET:
        changes["concurrency_limit"] = limit_arg("concurrency_limit", concurrency_limit)
    if tags is not None:
        changes["tags"] = tags
    if description is not None:
        changes["description"] = description
    # The stored schedules go back as they are (not re-checked as input), so a schedule an older version
    # accepted never blocks pausing it or changing anything else.
    updated = build(Deployment, **{**deployment.model_dump(), "schedules": deployment.schedules, **changes})
    store.update_deployment(updated)
    schedule_changed = updated.schedules != deployment.schedules or (
        updated.schedule_paused and not deployment.schedule_paused
    )
    if schedule_changed:
        _cancel_future_scheduled(store, updated, "the deployment's schedule changed")
    return updated


def _every_run(store: Store, name: str) -> list[FlowRun]:
    # The store's default page (newest first) would miss the oldest runs of a busy deployment: the active
    # ones and the SCHEDULED backlog of a paused pool, which are exactly the ones that matter here.
    return store.runs_of_deployment(name, limit=EVERY_RUN)


def _cancel_future_scheduled(store: Store, deployment: Deployment, why: str) -> None:
    """Cancel the SCHEDULED runs a schedule created ahead of time (ad-hoc runs stay)."""
    from .scheduler import new_generation

    now = utcnow()
    for run in _every_run(store, deployment.name):
        if run.state is StateType.SCHEDULED and run.auto_scheduled and run.scheduled_time > now:
            after, _ = run.moved(StateType.CANCELLED, source="deployment", message=why, now=now)
            store.save_run(run, after)
    # The cancelled runs keep their ids: the next ones are created under a new generation of ids.
    new_generation(store, deployment)


def _has_active_runs(store: Store, deployment: Deployment) -> bool:
    slot = store.slots([deployment_slot(deployment.id)]).get(deployment_slot(deployment.id))
    return (slot is not None and slot.active > 0) or any(r.is_active for r in _every_run(store, deployment.name))


def _cancel_scheduled(store: Store, name: str, why: str) -> None:
    """Cancel every SCHEDULED run of a deployment; Conflict if one was admitted meanwhile."""
    now = utcnow()
    for run in _every_run(store, name):
        while run.state is StateType.SCHEDULED:
            after, _ = run.moved(StateType.CANCELLED, source="deployment", message=why, now=now)
            if store.save_run(run, after):
                break
            current = store.get_run(run.id)  # another writer got there first: look again
            if current is None:
                break
            run = current
        if run.is_active:
            raise Conflict(f"deployment {name!r} has active runs; cancel them or wait until they end")


def delete_deployment(store: Store, name: str) -> None:
    """Delete a deployment; its SCHEDULED runs are cancelled; refused while any of its runs is active."""
    try:
        active = _has_active_runs(store, get_deployment(store, name))
    except UnreadableRecord:
        # A row today's model refuses (an older version's): deleting it is the way out, so go by its runs.
        active = any(r.is_active for r in _every_run(store, name))
    if active:
        raise Conflict(f"deployment {name!r} has active runs; cancel them or wait until they end")
    _cancel_scheduled(store, name, "deployment deleted")
    store.delete_deployment(name)
    # A scheduler step that read the deployment before it was deleted may have created runs since.
    _cancel_scheduled(store, name, "deployment deleted")


def new_run(
    store: Store,
    deployment: Deployment,
    *,
    scheduled_time: datetime,
    parameters: dict[str, Any] | None = None,
    job_variables: dict[str, Any] | None = None,
    run_id: str | None = None,
    auto_scheduled: bool = False,
    name: str | None = None,
    tags: list[str] | None = None,
) -> FlowRun:
    """A SCHEDULED run of a deployment, its merged job variables validated (required enforced).

    Every run enters here (ad hoc or from a schedule), so this is where `scheduled_time` is checked: aware,
    and in the years 1970..9998, so that converting it to UTC cannot overflow.
    """
    try:
        check_scheduled_time(scheduled_time)
    except ValueError as exc:
        raise InvalidInput(f"{exc}.") from None
    pool = get_pool(store, deployment.pool)
    overrides = _check_object("job_variables", job_variables or {})
    # A run's parameters have their own, larger bound (models.MAX_RUN_PARAMETERS_BYTES), over the merged set.
    given = _check_object("parameters", parameters or {}, _run_parameters_check)
    run_parameters = _check_object("parameters", {**deployment.parameters, **given}, _run_parameters_check)
    templating.resolve_job_variables(pool.base_job_template, pool.job_variables, deployment.job_variables, overrides)
    run_id = run_id or str(uuid.uuid4())
    try:
        run_name = check_name("flow run", name) if name is not None else f"{deployment.name}-{run_id[:8]}"
        run_tags = check_tags(list(tags)) if tags is not None else []
    except ValueError as exc:
        raise InvalidInput(f"{exc}.") from None
    now = utcnow()
    return FlowRun(
        id=run_id,
        name=run_name,
        tags=run_tags,
        deployment=deployment.name,
        deployment_id=deployment.id,
        pool=deployment.pool,
        queue=deployment.queue,
        parameters=run_parameters,
        # Marks parameters the stores keep apart, on this object too: a write of it (or of a run moved from it)
        # then never puts them back into the run's record.
        parameters_size=size if (size := json_size(run_parameters)) > PARAMETERS_APART_BYTES else None,
        job_variables=overrides,
        scheduled_time=scheduled_time,
        auto_scheduled=auto_scheduled,
        state_history=[
            StateRecord(
                state=StateType.SCHEDULED,
                name="Scheduled",
                time=now,
                source="scheduler" if auto_scheduled else "user",
                message=None,
            )
        ],
        created=now,
        updated=now,
    )


def run_deployment(
    store: Store,
    name: str,
    *,
    parameters: dict[str, Any] | None = None,
    job_variables: dict[str, Any] | None = None,
    scheduled_time: datetime | None = None,
    run_name: str | None = None,
    tags: list[str] | None = None,
) -> FlowRun:
    """Create an ad-hoc run (now, or at `scheduled_time`), optionally named and tagged."""
    deployment = get_deployment(store, name)
    run = new_run(
        store,
        deployment,
        scheduled_time=scheduled_time or utcnow(),
        parameters=parameters,
        job_variables=job_variables,
        name=run_name,
        tags=tags,
    )
    store.create_runs([run])
    return run


def render_deployment(
    store: Store,
    name: str,
    *,
    parameters: dict[str, Any] | None = None,
    job_variables: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    providers: Providers | None = None,
) -> dict[str, Any]:
    """The job a run of this deployment would submit now, as the dispatcher renders it; nothing is written.

    Rendered from the pool's template with the run's job variables and parameters, validated by the pool
    type's provider, credentials and tokens masked. Raises ConfigError when the provider cannot load here, and
    InvalidInput (the provider's sentence) when the job is invalid.
    """
    deployment = get_deployment(store, name)
    pool = get_pool(store, deployment.pool)
    problem = jobs.provider_problem(pool.type, providers)
    if problem is not None:
        raise ConfigError(problem)
    run = new_run(store, deployment, scheduled_time=utcnow(), parameters=parameters, job_variables=job_variables)
    return _rendered(pool, deployment, run, environ, providers)


def render_run(
    store: Store, run: FlowRun, *, environ: Mapping[str, str] | None = None, providers: Providers | None = None
) -> dict[str, Any]:
    """The job of a stored run as its pool and deployment render it now (the dashboard's run page), masked.

    Raises as `render_deployment` does, and NotFound once the run's deployment or pool is gone.
    """
    deployment = get_deployment(store, run.deployment)
    pool = get_pool(store, run.pool)
    problem = jobs.provider_problem(pool.type, providers)
    if problem is not None:
        raise ConfigError(problem)
    return _rendered(pool, deployment, with_parameters(store, run), environ, providers)


UNKNOWN_CALLBACK_BASE_URL = "https://callback-base-url.invalid"
"""The callback base of a job rendered for reading where PUSHPOOL_CALLBACK_BASE_URL is not set and its parameters
are too large for its environment: the dispatcher that runs it has one (`serve`'s own URL, the stack's API) and
sends them by reference, or has none and refuses the run in words."""


def _rendered(
    pool: WorkPool,
    deployment: Deployment,
    run: FlowRun,
    environ: Mapping[str, str] | None,
    providers: Providers | None,
) -> dict[str, Any]:
    environ = os.environ if environ is None else environ
    base_url = environ.get("PUSHPOOL_CALLBACK_BASE_URL", "")
    if not base_url and run.parameters is not None and json_size(run.parameters) > PARAMETERS_ENV_MAX_BYTES:
        base_url = UNKNOWN_CALLBACK_BASE_URL
    context = jobs.RunContext(
        run_id=run.id,
        deployment=run.deployment,
        pool=run.pool,
        queue=run.queue,
        parameters=run.parameters,
        callback_url=callback_url(base_url, run.id) if base_url else "",
        callback_token=jobs.MASK,  # never derived here: a rendered job is for reading, not for running
        run_name=run.name,
    )
    job = jobs.build_job(
        pool.base_job_template,
        pool.job_variables,
        deployment.job_variables,
        run.job_variables,
        environ=environ,
        context=context,
    )
    valid = (providers or Providers()).get(pool.type).validate(job)
    return dict(jobs.mask(valid))

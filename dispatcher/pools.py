"""Work pools and their queues: create, update, pause, delete, with every rule checked before any write."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import jobs, templating
from .errors import Conflict, InvalidInput, NotFound
from .models import DEFAULT_QUEUE, MAX_PRIORITY, WorkPool, WorkQueue, build, check_limit, check_priority, utcnow
from .pool_types import check_type, default_template
from .priorities import place
from .providers.base import Providers
from .store.base import Store, pool_slot, queue_slot

DEFAULT_POOL_SETTING = "default_pool"


class _Unset:
    """Marks an option the caller did not give (None is a value: no limit)."""


UNSET: Any = _Unset()


def limit_arg(field: str, value: int | None) -> int | None:
    try:
        return check_limit(field, value)
    except ValueError as exc:
        raise InvalidInput(f"{exc}.") from None


def get_pool(store: Store, name: str) -> WorkPool:
    pool = store.get_pool(name)
    if pool is None:
        raise NotFound(f"work pool {name!r} does not exist; see `pushpool work-pool ls`")
    return pool


def get_queue(store: Store, pool: str, name: str) -> WorkQueue:
    get_pool(store, pool)
    queue = store.get_queue(pool, name)
    if queue is None:
        names = ", ".join(q.name for q in store.list_queues(pool))
        raise NotFound(f"work queue {name!r} does not exist in pool {pool!r}; its queues are: {names}")
    return queue


def _check_template(
    pool_type: str, template: dict[str, Any], job_variables: dict[str, Any], providers: Providers | None
) -> None:
    # Renders the template through the provider's model; a warning (logged) when that provider is not installed.
    jobs.check_template(pool_type, template, job_variables, providers=providers)


def _check_deployments_fit(store: Store, pool: WorkPool) -> None:
    """A template change may not strand deployments whose job variables it no longer accepts."""
    for deployment in store.list_deployments(pool.name):
        try:
            templating.validate_job_variables(
                pool.base_job_template, deployment.job_variables, field="job_variables", enforce_required=False
            )
        except InvalidInput as exc:
            raise InvalidInput(
                f"the new base job template rejects deployment {deployment.name!r} ({exc}); "
                "update or delete that deployment first"
            ) from None


def create_pool(
    store: Store,
    name: str,
    *,
    type: str = "process",
    paused: bool = False,
    base_job_template: dict[str, Any] | None = None,
    job_variables: dict[str, Any] | None = None,
    concurrency_limit: int | None = None,
    description: str | None = None,
    set_as_default: bool = False,
    overwrite: bool = False,
    providers: Providers | None = None,
) -> WorkPool:
    """Create a pool with its `default` queue; with `overwrite`, an existing pool's settings are replaced.

    The template is checked through the type's provider (`providers`, else the registry's).
    """
    check_type(type)
    limit_arg("concurrency_limit", concurrency_limit)
    template = base_job_template if base_job_template is not None else default_template(type)
    pool = build(
        WorkPool,
        name=name,
        type=type,
        paused=paused,
        base_job_template=template,
        job_variables=job_variables or {},
        concurrency_limit=concurrency_limit,
        description=description,
    )
    existing = store.get_pool(name)
    if existing is not None and existing.type != type and overwrite:
        # Said before the template's check: a template for the other type is beside the point.
        raise InvalidInput(f"type of existing pool {name!r} is {existing.type!r} and cannot change to {type!r}")
    _check_template(pool.type, pool.base_job_template, pool.job_variables, providers)
    if existing is not None:
        if not overwrite:
            raise Conflict(f"work pool {name!r} already exists; pass --overwrite to replace its settings")
        pool = pool.model_copy(update={"created": existing.created})
        _check_deployments_fit(store, pool)
        store.update_pool(pool)
    else:
        store.create_pool(pool, WorkQueue(pool=name, name=DEFAULT_QUEUE, priority=1))
    if set_as_default:
        store.put_setting(DEFAULT_POOL_SETTING, name)
    return pool


def update_pool(
    store: Store,
    name: str,
    *,
    base_job_template: dict[str, Any] | None = None,
    job_variables: dict[str, Any] | None = None,
    description: str | None = None,
    concurrency_limit: int | None = UNSET,
    paused: bool | None = None,
    providers: Providers | None = None,
) -> WorkPool:
    """Change the given fields of a pool; what is not given stays."""
    pool = get_pool(store, name)
    changes: dict[str, Any] = {"updated": utcnow()}
    if base_job_template is not None:
        changes["base_job_template"] = base_job_template
    if job_variables is not None:
        changes["job_variables"] = job_variables
    if description is not None:
        changes["description"] = description
    if concurrency_limit is not UNSET:
        changes["concurrency_limit"] = limit_arg("concurrency_limit", concurrency_limit)
    if paused is not None:
        changes["paused"] = paused
    updated = build(WorkPool, **{**pool.model_dump(exclude={"status"}), **changes})
    if base_job_template is not None or job_variables is not None:
        _check_template(updated.type, updated.base_job_template, updated.job_variables, providers)
        _check_deployments_fit(store, updated)
    store.update_pool(updated)
    return updated


def delete_pool(store: Store, name: str) -> None:
    """Delete a pool and its queues; refused while deployments point at it or its runs are active."""
    get_pool(store, name)
    deployments = store.list_deployments(name)
    if deployments:
        names = ", ".join(d.name for d in deployments[:5])
        raise Conflict(f"work pool {name!r} still has {len(deployments)} deployment(s) ({names}); delete them first")
    if store.active_runs(name, limit=1):
        raise Conflict(f"work pool {name!r} has active runs; cancel them or wait until they end")
    store.delete_pool(name)
    if store.get_setting(DEFAULT_POOL_SETTING) == name:
        store.put_setting(DEFAULT_POOL_SETTING, "")


def status_reason(pool: WorkPool, providers: Providers | None = None) -> str | None:
    """Why a NOT_READY pool is not served, when this installation can tell: its provider cannot load."""
    if pool.status != "NOT_READY":
        return None
    return jobs.provider_problem(pool.type, providers)


def default_pool_name(store: Store) -> str | None:
    return store.get_setting(DEFAULT_POOL_SETTING) or None


# queues ----------------------------------------------------------------------------------------------------
def _priority_arg(priority: int | None) -> int | None:
    if priority is not None:
        try:
            check_priority(priority)
        except ValueError as exc:
            raise InvalidInput(f"{exc}.") from None
    return priority


def placed(current: Mapping[str, int], name: str, priority: int | None) -> dict[str, int]:
    """`priorities.place`, refused (InvalidInput) where a queue would land beyond MAX_PRIORITY.

    An insert at a taken priority pushes the queues below it down by one; at the bottom of the range that
    would leave it, so the insert is refused rather than squeezed: the user picks a free priority (or moves
    the bottom queue up first). A queue created without a priority goes last, which is refused the same way.
    """
    changed = place(current, name, priority)
    beyond = [(queue, p) for queue, p in changed.items() if p > MAX_PRIORITY]
    if not beyond:
        return changed
    queue, pushed = max(beyond, key=lambda item: item[1])
    allowed = f"beyond the allowed priorities 1 to {MAX_PRIORITY:,}"
    if queue == name:
        raise InvalidInput(
            f"work queue {name!r} would go last, at priority {pushed:,}, {allowed}; give it a free priority."
        )
    raise InvalidInput(
        f"priority {changed[name]:,} for work queue {name!r} would push work queue {queue!r} down to {pushed:,}, "
        f"{allowed}; pick a free priority, or move {queue!r} up first."
    )


def _shift(store: Store, pool: str, name: str, priority: int | None) -> tuple[int, list[WorkQueue]]:
    """The priority `name` ends up with, and the other queues that move down to make room for it."""
    queues = {q.name: q for q in store.list_queues(pool)}
    changed = placed({q.name: q.priority for q in queues.values()}, name, priority)
    now = utcnow()
    shifted = [
        queues[q].model_copy(update={"priority": p, "updated": now})
        for q, p in changed.items()
        if q != name and queues[q].priority != p
    ]
    return changed[name], shifted


def create_queue(
    store: Store,
    pool: str,
    name: str,
    *,
    priority: int | None = None,
    concurrency_limit: int | None = None,
    description: str | None = None,
    paused: bool = False,
) -> WorkQueue:
    """Create a queue; a taken priority is inserted at, a missing one goes last."""
    get_pool(store, pool)
    _priority_arg(priority)
    limit_arg("concurrency_limit", concurrency_limit)
    if store.get_queue(pool, name) is not None:
        raise Conflict(f"work queue {name!r} already exists in pool {pool!r}; use `work-queue update`")
    placed, shifted = _shift(store, pool, name, priority)
    queue = build(
        WorkQueue,
        pool=pool,
        name=name,
        priority=placed,
        concurrency_limit=concurrency_limit,
        description=description,
        paused=paused,
    )
    store.save_queues(pool, [*shifted, queue], new=name)
    return queue


def update_queue(
    store: Store,
    pool: str,
    name: str,
    *,
    priority: int | None = None,
    description: str | None = None,
    concurrency_limit: int | None = UNSET,
    paused: bool | None = None,
) -> WorkQueue:
    """Change the given fields of a queue; a new priority shifts the queues it collides with."""
    queue = get_queue(store, pool, name)
    _priority_arg(priority)
    changes: dict[str, Any] = {"updated": utcnow()}
    shifted: list[WorkQueue] = []
    if priority is not None and priority != queue.priority:
        changes["priority"], shifted = _shift(store, pool, name, priority)
    if description is not None:
        changes["description"] = description
    if concurrency_limit is not UNSET:
        changes["concurrency_limit"] = limit_arg("concurrency_limit", concurrency_limit)
    if paused is not None:
        changes["paused"] = paused
    updated = build(WorkQueue, **{**queue.model_dump(exclude={"status"}), **changes})
    store.save_queues(pool, [*shifted, updated])
    return updated


def delete_queue(store: Store, pool: str, name: str) -> None:
    """Delete a queue; the default queue, and a queue that deployments or runs still use, are kept."""
    get_queue(store, pool, name)
    if name == DEFAULT_QUEUE:
        raise InvalidInput(f"the {DEFAULT_QUEUE!r} queue of a pool cannot be deleted; pause it instead")
    users = [d.name for d in store.list_deployments(pool) if d.queue == name]
    if users:
        raise Conflict(
            f"work queue {name!r} is used by deployment(s) {', '.join(users[:5])}; move or delete them first"
        )
    far_future = utcnow().replace(year=9999)
    # The queue's slot counts its active runs; the pool's list of active runs is read only one page deep.
    slot = store.slots([queue_slot(pool, name)]).get(queue_slot(pool, name))
    active = (slot is not None and slot.active > 0) or any(r.queue == name for r in store.active_runs(pool))
    if active or store.due_runs(pool, name, far_future, 1):
        raise Conflict(f"work queue {name!r} still has scheduled or active runs; cancel them or let them finish first")
    store.delete_queue(pool, name)


def active_counts(store: Store, pool: WorkPool, queues: list[WorkQueue]) -> dict[str, int]:
    """Active runs per slot key, read from the slot records (what admission counts)."""
    keys = [pool_slot(pool.name), *(queue_slot(pool.name, q.name) for q in queues)]
    return {k: s.active for k, s in store.slots(keys).items()}

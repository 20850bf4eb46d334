"""One dispatch pass: schedule, mark late, admit, render, submit, record, cancel, reconcile, repair.

This is the only module that orchestrates the store and the providers. A cloud function runs one pass per
tick; `pushpool serve` and `pushpool dispatch --interval` run passes in a loop. Passes may overlap: every
write is conditional, admission is atomic in the store, and submission is idempotent per attempt.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .admit_pass import admit
from .callbacks import callback_url, master_secret, run_token
from .config import Settings
from .errors import NotFound, ProviderError, PushpoolError
from .jobs import RunContext, build_job, provider_problem, start_timeout
from .models import Deployment, FlowRun, WorkPool, WorkQueue, utcnow
from .provider_events import state_for
from .providers.base import JobState, JobStatus, Provider, Providers
from .scheduler import schedule_all
from .states import ACTIVE, StateType
from .store.base import Slot, Store, deployment_slot, parameters_of, pool_slot, queue_slot

log = logging.getLogger("pushpool.dispatch")

SOURCE = "dispatcher"


@dataclass
class PassSummary:
    """What one pass did; the CLI prints it and the cloud handlers log it as structured data."""

    started: datetime
    duration_seconds: float = 0.0
    pools: list[str] = field(default_factory=list)
    scheduled: int = 0
    late: int = 0
    admitted: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)
    submitted: list[str] = field(default_factory=list)
    retrying: dict[str, str] = field(default_factory=dict)
    crashed: dict[str, str] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    reconciled: dict[str, str] = field(default_factory=dict)
    """run id -> the state the reconciler moved it to."""
    repairs: dict[str, str] = field(default_factory=dict)
    """slot key -> "was N, counted M"."""
    problems: dict[str, str] = field(default_factory=dict)
    """deployment or pool -> why a step skipped it."""
    lag_seconds: float = 0.0
    """The longest wait, from scheduled time to admission, among the runs this pass admitted."""
    next_due: dict[str, datetime] = field(default_factory=dict)
    """pool -> when its next run falls due within the dispatcher's lookahead and would find room (see `admit`)."""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["started"] = self.started.isoformat()
        data["next_due"] = {pool: when.isoformat() for pool, when in self.next_due.items()}
        return data

    def headline(self) -> str:
        return (
            f"{len(self.admitted)} admitted, {len(self.waiting)} waiting, {len(self.submitted)} submitted, "
            f"{len(self.retrying)} to retry, {len(self.crashed)} crashed, {len(self.cancelled)} cancelled, "
            f"{len(self.reconciled)} reconciled, {len(self.repairs)} slot repairs, {self.scheduled} scheduled"
        )


class Dispatcher:
    """Runs passes against one store with one set of providers; owns its worker threads."""

    def __init__(
        self,
        store: Store,
        *,
        providers: Providers | None = None,
        settings: Settings | None = None,
        callback_base_url: str | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        lookahead: timedelta | None = None,
    ) -> None:
        """`lookahead`: also learn, at no extra request, when each pool's next run falls due within it
        (`PassSummary.next_due`), so a caller can run the pass for it on time instead of at its next tick."""
        self.store = store
        self.lookahead = lookahead
        self.providers = providers or Providers()
        self.settings = settings or Settings.from_env()
        self.callback_base_url = callback_base_url or os.environ.get("PUSHPOOL_CALLBACK_BASE_URL") or ""
        self.environ = dict(os.environ if environ is None else environ)
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_workers=self.settings.submit_concurrency, thread_name_prefix="submit")
        self._secret: bytes | None = None

    def close(self) -> None:
        # Calls that outlived their timeout are abandoned, not awaited: the reconciler owns their runs.
        self._pool.shutdown(wait=False, cancel_futures=True)

    # the pass ----------------------------------------------------------------------------------------------
    def run_pass(
        self, *, pool: str | None = None, queue: str | None = None, schedule: bool = True, reconcile: bool = True
    ) -> PassSummary:
        """One pass over every pool, or one pool, or one queue of one pool; every limit above still holds.

        `schedule` False skips creating the schedules' runs, `reconcile` False the status checks, cancels and slot
        repairs: a pass a wake-up asked for does only what its event needs (`wakeups.pass_steps`), and the timed
        pass, which does everything, stays the safety net. Skipping either only delays; it never admits more.
        """
        now = self.clock()
        started = time.perf_counter()
        summary = PassSummary(started=now)
        if queue is not None and pool is None:
            raise PushpoolError("--queue needs --pool: queue names are only unique inside a pool.")
        pools = [self._pool_or_raise(pool)] if pool else self.store.list_pools()
        if queue is not None and pool is not None and self.store.get_queue(pool, queue) is None:
            # Checked before the loop: inside it a NotFound would be recorded as a problem and exit 0.
            raise NotFound(f"work queue {queue!r} does not exist in pool {pool!r}; see `pushpool work-queue ls`")
        if schedule:
            scheduled = schedule_all(self.store, now, self.settings)
            summary.scheduled = len(scheduled.created)
            summary.problems.update(scheduled.problems)
        for work_pool in pools:
            summary.pools.append(work_pool.name)
            try:
                self._pass_pool(work_pool, queue, now, summary, reconcile=reconcile)
            except PushpoolError as exc:
                summary.problems[f"pool {work_pool.name}"] = str(exc)
                log.warning("pool %s skipped: %s", work_pool.name, exc)
            except Exception as exc:
                # A bug (in a provider, in rendering) must not stop the other pools' passes. Runs this pool
                # admitted and did not launch stay PENDING without an infrastructure id: the reconciler
                # re-submits them after the grace period with the same idempotency key (SPEC §6), so a launch
                # that did happen is found again, not doubled.
                summary.problems[f"pool {work_pool.name}"] = _unexpected(exc, f"pool {work_pool.name}'s pass")
        # Rows the store could not read were left out of every list above; each is named here, once.
        summary.problems.update(self.store.unreadable_records())
        summary.duration_seconds = round(time.perf_counter() - started, 4)
        log.info("pass: %s", summary.headline())
        return summary

    def _pool_or_raise(self, name: str) -> WorkPool:
        pool = self.store.get_pool(name)
        if pool is None:
            raise NotFound(f"work pool {name!r} does not exist; see `pushpool work-pool ls`")
        return pool

    def _pass_pool(
        self, pool: WorkPool, queue: str | None, now: datetime, summary: PassSummary, *, reconcile: bool = True
    ) -> None:
        queues = self.store.list_queues(pool.name)
        problem = provider_problem(pool.type, self.providers)
        if problem is not None:
            self._hold(pool, queues, queue, now, problem, summary)
            return
        # Reconcile first: runs that ended since the last pass free their slots for this pass's admissions.
        if reconcile:
            self._reconcile(pool, queues, now, summary)
        # A fresh time: reconciling may have taken a while (a status call per active run), and the admission
        # records must not predate the slot releases they saw, or timelines show limits exceeded.
        now = self.clock()
        result = admit(self.store, pool, queues, now, queue=queue, settings=self.settings, horizon=self.lookahead)
        if result.next_due is not None:
            summary.next_due[pool.name] = result.next_due
        summary.admitted.extend(r.id for r in result.admitted)
        for run in result.admitted:
            summary.lag_seconds = max(summary.lag_seconds, (run.updated - run.scheduled_time).total_seconds())
        summary.waiting.update(result.waiting)
        taken = {r.id for r in result.admitted}
        summary.late += self._mark_late([r for r in result.due if r.id not in taken], now)
        self.store.touch(pool.name, [q.name for q in queues if queue is None or q.name == queue], now)
        self._submit_all(pool, result.admitted, now, summary)

    def _hold(
        self,
        pool: WorkPool,
        queues: list[WorkQueue],
        queue: str | None,
        now: datetime,
        problem: str,
        summary: PassSummary,
    ) -> None:
        """A pool whose provider cannot load here admits nothing (SPEC §5): its due runs wait, saying why.

        The pool is not touched, so it reads NOT_READY. A run admitted before (by an older release) that was never
        launched goes back to SCHEDULED and frees its slot; one being cancelled ends CANCELLED at once, as nothing
        of it runs. A run with a launch recorded is left to a dispatcher that can load the provider.
        """
        summary.problems[f"pool {pool.name}"] = problem
        for run in self.store.active_runs(pool.name, limit=self.settings.max_active_scan):
            if run.infrastructure_id is not None or (queue is not None and run.queue != queue):
                continue
            if run.state is StateType.CANCELLING:
                self._finish(run, StateType.CANCELLED, f"cancelled; nothing was launched ({problem})", now, summary)
            elif run.state is StateType.PENDING:
                # The sanctioned step back of a submission that could not happen: it waits to be admitted again.
                after, applied = run.moved(
                    StateType.SCHEDULED, name="AwaitingRetry", source=SOURCE, message=problem, now=now
                )
                if applied and self.store.save_run(run, after):
                    summary.waiting[run.id] = problem
        for q in queues:
            if queue is not None and q.name != queue:
                continue
            due = self.store.due_runs(pool.name, q.name, now, self.settings.max_admissions_per_pass)
            summary.waiting.update({run.id: problem for run in due})
            summary.late += self._mark_late(due, now)

    def _mark_late(self, waiting: Iterable[FlowRun], now: datetime) -> int:
        marked = 0
        for run in waiting:
            if run.state_name != "Late" and now - run.scheduled_time > self.settings.late_after:
                after, applied = run.moved(StateType.SCHEDULED, name="Late", source=SOURCE, now=now)
                if applied and self.store.save_run(run, after):
                    marked += 1
        return marked

    # submission --------------------------------------------------------------------------------------------
    def _submit_all(
        self, pool: WorkPool, runs: list[FlowRun], now: datetime, summary: PassSummary, *, resubmission: bool = False
    ) -> None:
        if not runs:
            return
        provider = self.providers.get(pool.type)
        deployments: dict[str, Deployment | None] = {}
        futures: list[tuple[FlowRun, Future[str]]] = []
        for run in runs:
            try:
                if run.deployment not in deployments:
                    deployments[run.deployment] = self.store.get_deployment(run.deployment)
                job = self._render(pool, deployments[run.deployment], run)
            except PushpoolError as exc:
                self._crash(run, f"the job could not be rendered: {exc}", now, summary)
                continue
            except Exception as exc:  # a bug renders the same way every time: waiting would not help
                self._crash(
                    run, f"the job could not be rendered: {_unexpected(exc, f'rendering {run.id}')}", now, summary
                )
                continue
            key = idempotency_key(run)
            submit = self._pool.submit(provider.submit, job, idempotency_key=key, resubmission=resubmission)
            futures.append((run, submit))
        deadline = time.monotonic() + self.settings.provider_timeout_seconds
        launched: list[tuple[FlowRun, str]] = []
        for run, future in futures:
            try:
                infra_id = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                # Left PENDING without an infrastructure id: the reconciler re-submits with the same key,
                # so a call that succeeds late is found again instead of launched twice.
                summary.problems[run.id] = f"submission timed out after {self.settings.provider_timeout_seconds}s"
                continue
            except ProviderError as exc:
                self._submission_failed(run, exc, now, summary)
                continue
            except PushpoolError as exc:
                self._crash(run, str(exc), now, summary)
                continue
            except Exception as exc:  # a provider bug must not stall the other runs of the pass
                log.exception("provider %s raised on submit of %s", pool.type, run.id)
                unexpected = ProviderError(f"{type(exc).__name__}: {exc}", transient=True)
                self._submission_failed(run, unexpected, now, summary)
                continue
            launched.append((run, infra_id))
        # Stamped when the launches are known, not when the runs were admitted: the provider calls took a while.
        self._record_submissions(provider, launched, self.clock(), summary)

    def _render(self, pool: WorkPool, deployment: Deployment | None, run: FlowRun) -> dict[str, Any]:
        if deployment is None:
            raise NotFound(f"deployment {run.deployment!r} no longer exists")
        context = RunContext(
            run_id=run.id,
            deployment=run.deployment,
            pool=run.pool,
            queue=run.queue,
            # Parameters kept apart are read only where the job cannot read them by reference itself.
            parameters=run.parameters if self.callback_base_url else parameters_of(self.store, run),
            callback_url=callback_url(self.callback_base_url, run.id) if self.callback_base_url else "",
            callback_token=run_token(self._master_secret(), run.deployment_id, run.id),
            run_name=run.name,
        )
        job = build_job(
            pool.base_job_template,
            pool.job_variables,
            deployment.job_variables,
            run.job_variables,
            environ=self.environ,
            context=context,
        )
        return self.providers.get(pool.type).validate(job)

    def _master_secret(self) -> bytes:
        if self._secret is None:
            self._secret = master_secret(self.store)
        return self._secret

    def _record_submissions(
        self, provider: Provider, launched: list[tuple[FlowRun, str]], now: datetime, summary: PassSummary
    ) -> None:
        """Record each launch (PENDING -> InfrastructurePending with its id), all in one store write.

        Each write is conditional on the run as this pass admitted it, so a run that nothing else touched since
        needs no re-read; one that moved on meanwhile (its callback, a cancel) is re-read and recorded alone.
        """
        pending = [(run, infra_id) for run, infra_id in launched if run.state is StateType.PENDING]
        saved = self.store.save_runs([(run, _launch_recorded(run, infra_id, now)) for run, infra_id in pending])
        recorded = {run.id for (run, _), ok in zip(pending, saved, strict=True) if ok}
        for run, infra_id in launched:
            if run.id not in recorded:
                self._record_submission(provider, run, infra_id, now, summary)
            summary.submitted.append(run.id)

    def _record_submission(
        self, provider: Provider, run: FlowRun, infra_id: str, now: datetime, summary: PassSummary
    ) -> None:
        for _ in range(5):
            current = self.store.get_run(run.id)
            if current is None:
                return
            ended_by_itself = current.state in (StateType.COMPLETED, StateType.FAILED)  # its job reported
            if (current.state not in ACTIVE and not ended_by_itself) or current.state is StateType.CANCELLING:
                # Cancelled while we submitted: stop what we just started. A failed stop must not abort the
                # pass (the other runs' submissions still need recording); a CANCELLING run is asked again.
                try:
                    self._call(provider.cancel, infra_id)
                except ProviderError as exc:
                    summary.problems[run.id] = f"could not stop {infra_id}: {exc}"
            if current.state not in ACTIVE:
                # A fast job that reported its end before we got here: keep its id for the record (logs).
                keep = current.is_terminal and current.infrastructure_id is None
                noted = current.model_copy(update={"infrastructure_id": infra_id})
                if keep and not self.store.save_run(current, noted):
                    continue
                return
            if current.state is StateType.PENDING:
                after = _launch_recorded(current, infra_id, now)
            else:
                # RUNNING (its callback overtook us) or CANCELLING: only the id is news.
                updated = max(now, current.updated)
                after = current.model_copy(update={"infrastructure_id": infra_id, "updated": updated})
            if self.store.save_run(current, after):
                return

    def _submission_failed(self, run: FlowRun, exc: ProviderError, now: datetime, summary: PassSummary) -> None:
        if not exc.transient or run.submission_attempts >= self.settings.submission_attempts:
            why = str(exc) if not exc.transient else f"{exc} (gave up after {run.submission_attempts} attempts)"
            self._crash(run, why, now, summary)
            return
        backoff = self.settings.retry_backoff_seconds * 2 ** (run.submission_attempts - 1)
        after, applied = run.moved(
            StateType.SCHEDULED,
            name="AwaitingRetry",
            source=SOURCE,
            message=f"attempt {run.submission_attempts} failed: {exc}; retrying in {backoff:g}s",
            now=now,
            scheduled_time=now + timedelta(seconds=backoff),
        )
        if applied and self.store.save_run(run, after):
            summary.retrying[run.id] = str(exc)

    def _crash(self, run: FlowRun, why: str, now: datetime, summary: PassSummary) -> None:
        after, applied = run.moved(StateType.CRASHED, source=SOURCE, message=why, now=now)
        if applied and self.store.save_run(run, after):
            summary.crashed[run.id] = why

    # cancellation and reconciliation ------------------------------------------------------------------------
    def _reconcile(self, pool: WorkPool, queues: list[WorkQueue], now: datetime, summary: PassSummary) -> None:
        slot_keys = [pool_slot(pool.name), *(queue_slot(pool.name, q.name) for q in queues)]
        deployments = {d.id: d for d in self.store.list_deployments(pool.name)}
        slot_keys += [deployment_slot(d) for d in deployments]
        slots_before = self.store.slots(slot_keys)
        active = self.store.active_runs(pool.name, limit=self.settings.max_active_scan)
        provider: Provider | None = None
        for run in active:
            if provider is None:
                provider = self.providers.get(pool.type)
            deployment = deployments.get(run.deployment_id)
            bound = start_timeout(
                pool.base_job_template,
                pool.job_variables,
                deployment.job_variables if deployment else None,
                run.job_variables,
            )
            try:
                self._reconcile_run(provider, run, now, summary, start_bound=bound)
            except ProviderError as exc:
                summary.problems[run.id] = f"status check failed: {exc}"
            except PushpoolError as exc:  # e.g. the store refused this run's write: the others go on
                summary.problems[run.id] = f"could not be reconciled: {exc}"
            except Exception as exc:  # a provider bug on one run must not stall the pool's admissions
                summary.problems[run.id] = f"could not be reconciled: {_unexpected(exc, f'reconciling {run.id}')}"
        if len(active) < self.settings.max_active_scan:
            self._repair_slots(pool, slots_before, active, summary)

    def _reconcile_run(
        self, provider: Provider, run: FlowRun, now: datetime, summary: PassSummary, *, start_bound: float | None = None
    ) -> None:
        silent = now - run.updated
        if run.infrastructure_id is None:
            if silent < timedelta(seconds=self.settings.resubmit_grace_seconds):
                return
            if run.state is StateType.PENDING:
                # Crashed between "admitted" and "recorded": the same key finds the first launch, if any.
                pool = self._pool_or_raise(run.pool)
                self._submit_all(pool, [run], now, summary, resubmission=True)
                return
            found = self._find_launch(provider, run, now, summary)
            if found is None:
                return
            run = found
        # task_start_timeout_seconds: a launched job may stay PENDING this long before it is looked at.
        overdue = (
            run.state is StateType.PENDING and start_bound is not None and silent >= timedelta(seconds=start_bound)
        )
        if (
            run.state is not StateType.CANCELLING
            and not overdue
            and (silent < timedelta(seconds=self.settings.reconcile_after_seconds) and not _cheap_status(provider))
        ):
            return
        status: JobStatus = self._call(provider.status, run.infrastructure_id)
        if overdue and status.state is JobState.PENDING:
            # As Prefect's worker gives up on a task that does not start: stop it, and the run has crashed.
            self._call(provider.cancel, run.infrastructure_id)
            why = (
                f"the job did not start within {start_bound:g} s of its launch (task_start_timeout_seconds); "
                f"it was stopped: {status.message or 'still pending'}"
            )
            self._finish(run, StateType.CRASHED, why, self.clock(), summary)
            return
        if run.state is StateType.CANCELLING and status.state in (JobState.PENDING, JobState.RUNNING):
            # Still going: ask it to stop, and again on every pass until it has. Providers make a repeat
            # harmless, and the process provider escalates a repeat after its grace to SIGKILL, so a job that
            # ignores SIGTERM still stops.
            self._call(provider.cancel, run.infrastructure_id)
            return
        target = state_for(run, status)
        if target is None:
            return
        state, message = target
        # Stamped after the provider answered, not at the pass start: the slot is released now.
        self._finish(run, state, message, self.clock(), summary)

    def _find_launch(self, provider: Provider, run: FlowRun, now: datetime, summary: PassSummary) -> FlowRun | None:
        """A RUNNING or CANCELLING run whose launch was never recorded: look it up under its attempt's key.

        Found, the id is recorded and the run returned, to be treated as any other (a CANCELLING one is then
        stopped at the provider and holds its slot until that is confirmed). Not found after the grace, the
        launch never happened: a CANCELLING run ends CANCELLED, a RUNNING one CRASHED (its job reported, but
        the infrastructure has nothing under the key, so nothing will ever end it). None when done with it.
        """
        key = idempotency_key(run)
        infra_id: str | None = self._call(provider.find, key)
        if infra_id is None:
            if run.state is StateType.CANCELLING:
                why = f"cancelled before it was submitted (no job was launched under key {key})"
                self._finish(run, StateType.CANCELLED, why, now, summary)
            else:
                why = (
                    f"its launch was never recorded and the {run.pool} pool's infrastructure has no job under key "
                    f"{key}; nothing can end it"
                )
                self._finish(run, StateType.CRASHED, why, now, summary)
            return None
        # Only the id is news: `updated` stays, so the run's silence still counts towards a status check.
        found = run.model_copy(update={"infrastructure_id": infra_id})
        if not self.store.save_run(run, found):
            return None  # moved meanwhile: the next pass sees it as it is now
        return found.model_copy(update={"version": run.version + 1})

    def _finish(self, run: FlowRun, state: StateType, message: str | None, now: datetime, summary: PassSummary) -> None:
        after, applied = run.moved(state, source="reconciler", message=message, now=now)
        if applied and self.store.save_run(run, after):
            summary.reconciled[run.id] = state.value
            if state is StateType.CANCELLED:
                summary.cancelled.append(run.id)

    def _repair_slots(
        self, pool: WorkPool, before: Mapping[str, Slot], active: list[FlowRun], summary: PassSummary
    ) -> None:
        """Recount each slot from the active runs read after it; write the count only if the slot is unchanged.

        `repair_slot` refuses a slot that any admission or release changed since it was read. A recount that
        would lower a slot also waits until the slot has not changed for the settle time: the runs were read
        from an index that may not show a run admitted a moment ago, and lowering the count for it would let
        a pass admit one run too many. Raising a count is never held back: an index that lags can only miss
        runs, so a higher count is real, and an undercount is what breaks a limit.
        """
        counted = {key: 0 for key in before}
        for run in active:
            for key in (pool_slot(run.pool), queue_slot(run.pool, run.queue), deployment_slot(run.deployment_id)):
                if key in counted:
                    counted[key] += 1
        # The stores stamp a change with the writer's wall clock, so this compares with the wall clock too.
        settled_before = time.time() - self.settings.slot_repair_settle_seconds
        for key, slot in before.items():
            if slot.active == counted[key] or (counted[key] < slot.active and slot.changed > settled_before):
                continue
            if self.store.repair_slot(key, slot, counted[key]):
                summary.repairs[key] = f"was {slot.active}, counted {counted[key]}"
                log.warning("slot %s repaired: was %s, counted %s active runs", key, slot.active, counted[key])

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A provider call with the pass's timeout; a hung call becomes a transient ProviderError."""
        future = self._pool.submit(fn, *args)
        try:
            return future.result(timeout=self.settings.provider_timeout_seconds)
        except FutureTimeout:
            raise ProviderError(
                f"{getattr(fn, '__name__', 'call')} timed out after {self.settings.provider_timeout_seconds}s",
                transient=True,
            ) from None


def _unexpected(exc: Exception, during: str) -> str:
    """Log an unexpected exception with its traceback, and return the sentence that says so.

    Only the exception's type and where it was raised are logged and returned, never its message: a bug's
    message can hold any value it was handed (a rendered job's env, its run token), and logs are read widely.
    """
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected %s during %s (message withheld); traceback:\n%s", type(exc).__name__, during, frames)
    return f"an unexpected {type(exc).__name__} in the dispatcher (a bug; its log has the traceback)"


def _cheap_status(provider: Provider) -> bool:
    """Providers whose status is a local lookup (the process provider's files) are asked every pass."""
    return bool(getattr(provider, "status_is_cheap", False))


def idempotency_key(run: FlowRun) -> str:
    """One key per submission attempt: a retry of the same attempt finds the first launch.

    A run sent back by `flow-run retry` gets a new head (`<id>-r<N>`), so no provider finds the launch of
    its earlier life as its own (ECS looks for orphans by the head, which becomes its `startedBy`).
    """
    head = run.id if not run.retries else f"{run.id}-r{run.retries}"
    return f"{head}-{run.submission_attempts}"


def _launch_recorded(run: FlowRun, infra_id: str, now: datetime) -> FlowRun:
    """A PENDING run once its launch is known: InfrastructurePending, carrying the provider's id."""
    after, _ = run.moved(
        StateType.PENDING,
        name="InfrastructurePending",
        source=SOURCE,
        message=f"submitted as {infra_id}",
        now=now,
        infrastructure_id=infra_id,
    )
    return after

"""AWS Lambda entry points, thin: parse the event, call the core, shape the reply (SPEC §7).

- `dispatch`: an EventBridge schedule -> one dispatch pass; logs its summary, emits EMF metrics. Then it covers
  the coming minute: a run due before the next tick is passed for at its time, waiting inside the invocation
  (`cover_coming_minute`). A wake event (`dispatcher.aws_wakeups`, sent by the other two functions when a run
  can start) -> a pass over that pool.
- `ecs_events`: an SQS batch of EventBridge "ECS Task State Change" events -> run states (SPEC §6), with
  partial batch failure, so a record that fails is retried (and at last dead-lettered) alone, never lost. A
  task that ended wakes the dispatcher for its pool.
- `http`: API Gateway HTTP API (payload 2.0) or a function URL -> the callback route and the management API;
  a run created, a slot freed, a pool or queue resumed, a limit raised wake the dispatcher for that pool.

Wake-ups are Event invokes of the dispatch function (`dispatcher.aws_wakeups`), sent before the handler returns
and coalesced per pool; the caller never waits for the pass.

Each is one Lambda function, and each imports what only it needs on first use (the parser models for
`ecs_events`, the event handler and the API for `http`, the dispatcher for `dispatch`), so none pays for
the others. Under Lambda, `_HANDLER` names the function: its imports then happen at init, where Lambda
expects them (and where SnapStart would keep them). The store, the dispatcher and the API are built on
first use and kept in `runtime` for warm invocations; `reset_runtime()` starts again from the environment.

Tracing: only `dispatch` calls providers, so only it builds powertools' Tracer, and only when tracing is on
(in Lambda, unless `POWERTOOLS_TRACE_DISABLED` is true: powertools' own rule). The Tracer imports the X-Ray
SDK, whose recorder creates botocore clients at import (benchmarks/cold_start.py measures it), so `ecs_events`
and `http`, which answer callers, never pay for it; Lambda's active tracing still records their invocations.
"""

from __future__ import annotations

import base64
import importlib
import os
import re
import time
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field

from dispatcher.aws_wakeups import (
    CLOCK_SKEW,
    DEFAULT_LOOKAHEAD,
    DEFAULT_WINDOW,
    DISPATCH_FUNCTION_ENV,
    LOOK,
    PASS,
    PASS_AND_LOOKAHEAD,
    WAKE_WINDOW_ENV,
    LambdaWakeups,
    WakeEvent,
    is_wake_event,
    parse_wake_event,
    wake_rank,
)
from dispatcher.errors import ConfigError, PushpoolError
from dispatcher.models import utcnow
from dispatcher.providers.base import JobStatus, Provider, Providers
from dispatcher.store import open_store, store_url
from dispatcher.wakeups import RUN_DUE, SLOT_FREED, PassSteps, left_active, pass_steps

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
    from aws_lambda_powertools.utilities.batch import BatchProcessor
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from dispatcher.api import Api
    from dispatcher.dispatch import Dispatcher, PassSummary
    from dispatcher.store.base import Store

SERVICE = "pushpool"
ECS_SOURCE = "aws.ecs"
ECS_DETAIL_TYPE = "ECS Task State Change"
RUN_ID_ENV = "PUSHPOOL_RUN_ID"
RUN_ID_TAG = "pushpool.io/run-id"
LOOKAHEAD_ENV = "PUSHPOOL_LOOKAHEAD_SECONDS"
PASS_RESERVE = 10.0
"""Seconds of an invocation kept for the pass after a wait; a run due later is handed to a new invocation."""

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or SERVICE, service=SERVICE)

PRELOAD: dict[str, tuple[str, ...]] = {
    "dispatch": ("dispatcher.dispatch", "dispatcher.providers.ecs"),
    "ecs_events": (
        "aws_lambda_powertools.utilities.batch",
        "aws_lambda_powertools.utilities.parser.models",
        "dispatcher.provider_events",
        "dispatcher.providers.ecs",
    ),
    "http": ("aws_lambda_powertools.event_handler", "dispatcher.api"),
}
"""What each function imports on first use; `preload` imports it at init instead."""


def preload(function: str) -> None:
    """Import what `function` needs, and the store's backend, now rather than on its first invocation."""
    for module in PRELOAD[function]:
        importlib.import_module(module)
    if urlparse(store_url()).scheme == "dynamodb":
        importlib.import_module("dispatcher.store.dynamodb")
    if function == "dispatch":
        runtime.tracer  # noqa: B018 - built at init, where Lambda expects the X-Ray SDK's cost


def tracing_on() -> bool:
    """Powertools' rule for the Tracer: on in Lambda (not under SAM local), off if POWERTOOLS_TRACE_DISABLED."""
    disabled = os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() in ("1", "true", "yes", "on")
    return bool(os.environ.get("LAMBDA_TASK_ROOT")) and not os.environ.get("AWS_SAM_LOCAL") and not disabled


# runtime ----------------------------------------------------------------------------------------------------
class Runtime:
    """What a warm Lambda instance keeps between invocations, each part built from the environment on first use."""

    @cached_property
    def store(self) -> Store:
        load_secret()
        return open_store()

    @cached_property
    def tracer(self) -> Tracer | None:
        """Powertools' Tracer when tracing is on, else None (and the X-Ray SDK is never imported)."""
        if not tracing_on():
            return None
        from aws_lambda_powertools import Tracer

        return Tracer(service=SERVICE)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        from dispatcher.dispatch import Dispatcher

        providers = TracedProviders(self.tracer) if self.tracer else LambdaProviders()
        return Dispatcher(self.store, providers=providers, lookahead=timedelta(seconds=self.lookahead))

    @cached_property
    def lookahead(self) -> float:
        return _seconds_env(LOOKAHEAD_ENV, DEFAULT_LOOKAHEAD)

    @cached_property
    def wakeups(self) -> LambdaWakeups | None:
        """The dispatch function's invoker, for http and ecs_events; None where PUSHPOOL_DISPATCH_FUNCTION is unset."""
        function = os.environ.get(DISPATCH_FUNCTION_ENV, "").strip()
        if not function:
            return None
        return LambdaWakeups(function, window=_seconds_env(WAKE_WINDOW_ENV, DEFAULT_WINDOW), lookahead=self.lookahead)

    @cached_property
    def passes(self) -> dict[tuple[str | None, int], float]:
        """(pool or None for every pool, rank) -> when this instance last started such a pass or look over it."""
        return {}

    def started(self, pool: str | None, rank: int) -> None:
        """Remember a pass (or look) of `rank` over `pool` starting now."""
        self.passes[(pool, rank)] = time.time()

    def covered(self, pool: str | None, rank: int, not_before: float) -> bool:
        """Whether a pass doing at least what the wake needs started here after `not_before` (the wake is moot)."""
        started = max(self.passes.get((p, r), 0.0) for p in (pool, None) for r in range(rank, PASS_AND_LOOKAHEAD + 1))
        return started >= not_before + CLOCK_SKEW

    @cached_property
    def api(self) -> Api:
        from dispatcher.api import API_TOKEN_ENV, Api

        # PUSHPOOL_API_AUTH=iam: API Gateway's IAM authorizer guards the management routes (the deploy files).
        iam = os.environ.get("PUSHPOOL_API_AUTH", "").lower() == "iam"
        token = os.environ.get(API_TOKEN_ENV) or None
        return Api(self.store, api_token=token, gateway_authorized=iam, wakeups=self.wakeups)

    @cached_property
    def http_app(self) -> APIGatewayHttpResolver:
        return http_resolver(self.api)

    @cached_property
    def batch_processor(self) -> BatchProcessor:
        from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

        return BatchProcessor(event_type=EventType.SQS)

    def close(self) -> None:
        """Release what was built (the dispatcher's threads, the store's connections)."""
        if self.__dict__.get("wakeups") is not None:
            self.wakeups.close()  # type: ignore[union-attr]
        if "dispatcher" in self.__dict__:
            self.dispatcher.close()
        if "store" in self.__dict__:
            self.store.close()


def _seconds_env(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 900:
        raise ConfigError(f"{name} must be a number of seconds above 0 and at most 900, not {raw!r}")
    return value


def load_secret() -> None:
    """Read the callback signing secret from Secrets Manager or SSM once, when the store is first opened.

    `PUSHPOOL_SECRET` wins; else `PUSHPOOL_SECRET_ARN` (Secrets Manager) or `PUSHPOOL_SECRET_PARAMETER` (an SSM
    SecureString); else the core keeps a generated secret in the store.
    """
    if os.environ.get("PUSHPOOL_SECRET"):
        return
    arn, name = os.environ.get("PUSHPOOL_SECRET_ARN"), os.environ.get("PUSHPOOL_SECRET_PARAMETER")
    if not arn and not name:
        return
    from aws_lambda_powertools.utilities import parameters

    value = parameters.get_secret(arn) if arn else parameters.get_parameter(str(name), decrypt=True)
    os.environ["PUSHPOOL_SECRET"] = value.decode() if isinstance(value, bytes) else str(value)


MODAL_TOKEN_SECRET_ENV = "PUSHPOOL_MODAL_TOKEN_SECRET"
"""Name or ARN of the Secrets Manager secret holding `{"token_id": ..., "token_secret": ...}` for modal:push."""


def load_modal_token() -> None:
    """Put the Modal token in MODAL_TOKEN_ID/MODAL_TOKEN_SECRET, where Modal's client looks, from Secrets Manager.

    Called before a modal:push provider is first built, so a stack without Modal pools never reads the secret. A
    token already in the environment wins; a missing secret leaves Modal's own lookup, whose AuthError then
    names the problem per run. Only the secret's name is ever logged, never its value.
    """
    name = os.environ.get(MODAL_TOKEN_SECRET_ENV)
    if not name or (os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET")):
        return
    from aws_lambda_powertools.utilities import parameters

    try:
        value = parameters.get_secret(name, transform="json")
    except parameters.exceptions.TransformParameterError:
        raise ConfigError(
            f'the Modal token secret {name} must be JSON: {{"token_id": "ak-...", "token_secret": "as-..."}}'
        ) from None
    except parameters.exceptions.GetParameterError as exc:
        logger.warning("Modal token secret %s could not be read; Modal's own credentials apply: %s", name, exc)
        return
    if not isinstance(value, dict) or not value.get("token_id") or not value.get("token_secret"):
        raise ConfigError(f"the Modal token secret {name} must hold token_id and token_secret")
    os.environ["MODAL_TOKEN_ID"] = str(value["token_id"])
    os.environ["MODAL_TOKEN_SECRET"] = str(value["token_secret"])


runtime = Runtime()


def reset_runtime() -> Runtime:
    """Close what the instance kept and start again from the environment (tests, or after a config change)."""
    global runtime
    old, runtime = runtime, Runtime()
    old.close()
    return runtime


def flush_wakeups() -> None:
    """Send the wake-ups this invocation raised before it returns: Lambda freezes the instance after that."""
    wakeups = runtime.__dict__.get("wakeups")
    if wakeups is not None:
        wakeups.flush()


# tracing provider calls -------------------------------------------------------------------------------------
class TracedProvider:
    """A provider whose calls to the infrastructure are X-Ray subsegments; the SDK calls nest inside them."""

    def __init__(self, pool_type: str, inner: Provider, tracer: Tracer) -> None:
        self.pool_type = pool_type
        self.inner = inner
        self.tracer = tracer

    @property
    def status_is_cheap(self) -> bool:
        return bool(getattr(self.inner, "status_is_cheap", False))

    def validate(self, job: dict[str, Any]) -> dict[str, Any]:
        return self.inner.validate(job)  # pure: nothing to trace

    def submit(self, job: dict[str, Any], *, idempotency_key: str, resubmission: bool = False) -> str:
        with self.tracer.provider.in_subsegment(f"## {self.pool_type} submit") as segment:
            segment.put_annotation("idempotency_key", idempotency_key)
            return self.inner.submit(job, idempotency_key=idempotency_key, resubmission=resubmission)

    def status(self, infrastructure_id: str) -> JobStatus:
        with self.tracer.provider.in_subsegment(f"## {self.pool_type} status") as segment:
            segment.put_annotation("infrastructure_id", infrastructure_id)
            return self.inner.status(infrastructure_id)

    def find(self, idempotency_key: str) -> str | None:
        with self.tracer.provider.in_subsegment(f"## {self.pool_type} find") as segment:
            segment.put_annotation("idempotency_key", idempotency_key)
            return self.inner.find(idempotency_key)

    def cancel(self, infrastructure_id: str) -> None:
        with self.tracer.provider.in_subsegment(f"## {self.pool_type} cancel") as segment:
            segment.put_annotation("infrastructure_id", infrastructure_id)
            self.inner.cancel(infrastructure_id)


class LambdaProviders(Providers):
    """The registry's providers; a modal:push provider is built only after the Modal token has been loaded."""

    def get(self, pool_type: str) -> Provider:
        if pool_type == "modal:push" and pool_type not in self._instances:
            load_modal_token()
        return super().get(pool_type)


class TracedProviders(LambdaProviders):
    """The registry's providers, each wrapped once in a `TracedProvider`."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def get(self, pool_type: str) -> Provider:
        provider = super().get(pool_type)
        if not isinstance(provider, TracedProvider):
            provider = self._instances[pool_type] = TracedProvider(pool_type, provider, self.tracer)
        return provider


# dispatch ---------------------------------------------------------------------------------------------------
@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
def dispatch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """One pass per scheduled tick. Overlapping ticks are safe (the store's conditions), so retries are too."""
    tracer = runtime.tracer
    one_pass = tracer.capture_lambda_handler(dispatch_pass, capture_response=False) if tracer else dispatch_pass
    return one_pass(event, context)


def dispatch_pass(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """A tick's pass over every pool, or a wake event's over one; then the coming minute's due runs."""
    started = time.time()
    if is_wake_event(event):
        wake = parse_wake_event(event)
        # A hand-off covers what is left of the minute that handed it on, not a new minute: no chain.
        until = started + runtime.lookahead if wake.until is None else min(wake.until, started + runtime.lookahead)
        return wake_pass(wake, context, until=until)
    summary = one_pass(None, PASS_AND_LOOKAHEAD)
    answer = pass_answer(summary)
    cover_coming_minute(summary, context, until=started + runtime.lookahead)
    return answer


def one_pass(pool: str | None, rank: int, reason: str | None = None) -> PassSummary:
    """A pass over `pool` (None: every pool), remembered with what it covers (`rank`), logged and counted.

    A tick's pass (`reason` None) does everything; a wake-up's only what its event needs (`pass_steps`: a run
    created or due, a slot freed are admission alone), so a burst of wakes costs no scheduler or reconciler
    requests each time. The tick stays the safety net for the rest."""
    runtime.started(pool, rank)
    steps = PassSteps(schedule=True, reconcile=True) if reason is None else pass_steps(reason)
    summary = runtime.dispatcher.run_pass(pool=pool, schedule=steps.schedule, reconcile=steps.reconcile)
    record_pass(summary)
    return summary


def wake_pass(wake: WakeEvent, context: LambdaContext, *, until: float) -> dict[str, Any]:
    """A wake event's pass, unless a pass of this instance already read the store after it."""
    with logger.append_context_keys(pool=wake.pool, wake_reason=wake.reason):
        rank = wake_rank(wake.reason)
        if runtime.covered(wake.pool, rank, wake.not_before):
            logger.info("wake-up covered by a pass already run here")
            metrics.add_metric(name="WakeupsCovered", unit=MetricUnit.Count, value=1)
            return {"covered": True}
        if wake.not_before > time.time() + runtime.lookahead + DEFAULT_WINDOW:
            # No sender asks for more than the lookahead ahead; waiting for it would chain invocations for nothing.
            logger.warning("wake-up too far ahead; the ticks will pass over the pool", extra={"at": wake.not_before})
            metrics.add_metric(name="WakeupsRefused", unit=MetricUnit.Count, value=1)
            return {"refused": "not_before is beyond the lookahead"}
        if not wait_until(wake.not_before, context):
            # Longer than this invocation can wait (a hand-off near its time limit): on to a new one.
            hand_off(wake.pool, wake.reason, wake.not_before, context, until=until)
            return {"handed_off": True}
        if rank == LOOK and wake.pool is not None and nothing_due(wake.pool):
            logger.info("wake-up for a freed slot with no run due to take it")
            metrics.add_metric(name="WakeupsNothingDue", unit=MetricUnit.Count, value=1)
            return {"nothing_due": True}
        try:
            summary = one_pass(wake.pool, max(rank, PASS), wake.reason)
        except PushpoolError as exc:  # the pool was deleted since: nothing to pass over
            logger.info("wake-up for a pool that cannot be passed over", extra={"reason": str(exc)})
            return {"problem": str(exc)}
        answer = pass_answer(summary)
        # Only a span (a run due later, a hand-off) or a schedule set follows the due times: a run created due
        # now needs its one pass, and waiting on would pile invocations up over the same due times.
        if wake.until is not None or rank == PASS_AND_LOOKAHEAD or summary.retrying:
            cover_coming_minute(summary, context, until=until)
        return answer


def nothing_due(pool: str) -> bool:
    """Whether no run of the pool's open queues is due now: then a freed slot has nothing to take.

    The cheap look before a freed slot's pass (its queues, then one item of the due index per open queue: two
    requests for a pool of one queue, against a pass's ten), so a burst of callbacks that wait for nothing costs
    next to nothing. Remembered as a pass: it read the store after every wake raised before it started.
    """
    started = time.time()
    now = utcnow()
    for queue in runtime.store.list_queues(pool):
        if not queue.paused and runtime.store.due_runs(pool, queue.name, now, 1):
            return False
    runtime.passes[(pool, LOOK)] = started
    return True


def cover_coming_minute(summary: PassSummary, context: LambdaContext, *, until: float) -> None:
    """Pass over each pool when its next run falls due, up to `until` (the next tick looks on from there).

    The pass learnt each pool's next due time at no extra request (`Dispatcher(lookahead=...)`); this waits
    for the earliest, passes over that pool, and so on. A time this invocation cannot wait for (its own time
    limit) is handed to a new invocation of this function (`hand_off`). Nothing due: nothing waits.
    """
    due = {pool: when.timestamp() for pool, when in summary.next_due.items()}
    while due:
        pool, when = min(due.items(), key=lambda item: item[1])
        if when > until:
            return
        if not wait_until(when, context):
            for other, at in sorted(due.items(), key=lambda item: item[1]):
                if at <= until:
                    hand_off(other, RUN_DUE, at, context, until=until)
            return
        del due[pool]
        try:
            later = one_pass(pool, PASS, RUN_DUE)
        except PushpoolError as exc:
            logger.info("due run's pool cannot be passed over", extra={"pool": pool, "reason": str(exc)})
            continue
        for name, next_time in later.next_due.items():
            due[name] = next_time.timestamp()


def wait_until(when: float, context: LambdaContext) -> bool:
    """Sleep until `when` (seconds since the epoch) and say True, if the invocation has time for that and a pass.

    Else sleep as long as it may and say False: the caller hands the rest to a new invocation, which then has
    less to wait than its own limit allows, so a hand-off never chains (the lookahead is at most one minute).
    """
    wait = when - time.time()
    if wait <= 0:
        return True
    budget = context.get_remaining_time_in_millis() / 1000 - PASS_RESERVE
    time.sleep(max(0.0, min(wait, budget)))
    return wait <= budget


def hand_off(pool: str | None, reason: str, not_before: float, context: LambdaContext, *, until: float) -> None:
    """Invoke this function again (Event) for a pass over `pool` at `not_before`; the new invocation waits for it.

    It covers the coming minute only up to `until`, where this invocation's ends, so hand-offs never chain.
    """
    sender = LambdaWakeups(os.environ.get(DISPATCH_FUNCTION_ENV) or context.function_name)
    sender.send(pool, reason, not_before, until=until)
    sender.close()
    metrics.add_metric(name="HandOffs", unit=MetricUnit.Count, value=1)
    logger.info("pass handed to a new invocation", extra={"pool": pool, "not_before": not_before})


def record_pass(summary: PassSummary) -> None:
    log_summary(summary)
    metrics.add_metric(name="Admitted", unit=MetricUnit.Count, value=len(summary.admitted))
    metrics.add_metric(name="Waiting", unit=MetricUnit.Count, value=len(summary.waiting))
    metrics.add_metric(name="Submitted", unit=MetricUnit.Count, value=len(summary.submitted))
    metrics.add_metric(name="SubmitFailures", unit=MetricUnit.Count, value=len(summary.retrying) + len(summary.crashed))
    metrics.add_metric(name="DispatchLag", unit=MetricUnit.Seconds, value=summary.lag_seconds)
    metrics.add_metric(name="CounterRepairs", unit=MetricUnit.Count, value=len(summary.repairs))
    metrics.add_metric(name="PassDuration", unit=MetricUnit.Seconds, value=summary.duration_seconds)


def pass_answer(summary: PassSummary) -> dict[str, Any]:
    return {
        "admitted": len(summary.admitted),
        "waiting": len(summary.waiting),
        "submitted": len(summary.submitted),
        "submit_failures": len(summary.retrying) + len(summary.crashed),
        "lag_seconds": summary.lag_seconds,
        "repairs": len(summary.repairs),
    }


def log_summary(summary: PassSummary) -> None:
    """The pass as one structured line, then one line per run it moved, each carrying its run id."""
    logger.info(f"dispatch pass: {summary.headline()}", extra={"summary": summary.as_dict()})
    for run_id in summary.submitted:
        logger.info("run submitted", extra={"run_id": run_id})
    for run_id, why in summary.retrying.items():
        logger.warning("submission failed, retrying", extra={"run_id": run_id, "reason": why})
    for run_id, why in summary.crashed.items():
        logger.error("run crashed before it ran", extra={"run_id": run_id, "reason": why})
    for run_id, state in summary.reconciled.items():
        logger.info("run reconciled", extra={"run_id": run_id, "state": state})
    for key, repair in summary.repairs.items():
        logger.warning("slot counter repaired", extra={"slot": key, "repair": repair})
    for what, why in summary.problems.items():
        logger.warning("dispatch problem", extra={"subject": what, "reason": why})


# ECS task state changes -------------------------------------------------------------------------------------
class _NameValue(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | None = None
    value: str | None = None


class _ContainerOverride(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | None = None
    environment: list[_NameValue] = []


class _Overrides(BaseModel):
    model_config = ConfigDict(extra="allow")
    containerOverrides: list[_ContainerOverride] = []


class _Tag(BaseModel):
    model_config = ConfigDict(extra="allow")
    key: str | None = None
    value: str | None = None


class ECSTaskDetail(BaseModel):
    """The part of an "ECS Task State Change" detail pushpool reads; every other field is tolerated."""

    model_config = ConfigDict(extra="allow")

    taskArn: str = Field(pattern=r"^arn:[^:]+:ecs:[^:]*:[^:]*:task/")
    lastStatus: str
    version: int
    startedBy: str | None = None
    overrides: _Overrides | None = None
    tags: list[_Tag] | None = None

    @property
    def task_id(self) -> str:
        return self.taskArn.rsplit("/", 1)[-1]

    def run_id(self) -> str | None:
        """The run the task belongs to: its container's PUSHPOOL_RUN_ID, else its run tag, else `startedBy`.

        `startedBy` is last: for a run id longer than ECS's 36 characters it holds a digest, not the id.
        """
        for override in self.overrides.containerOverrides if self.overrides else []:
            for item in override.environment:
                if item.name == RUN_ID_ENV and item.value:
                    return item.value
        for tag in self.tags or []:
            if tag.key == RUN_ID_TAG and tag.value:
                return tag.value
        return self.startedBy or None


def parse_ecs_event(body: str) -> tuple[dict[str, Any], ECSTaskDetail] | None:
    """An SQS body as an ECS task state change: (raw detail, parsed detail); None for another kind of event.

    Raises pydantic's ValidationError for a body that is not an EventBridge event or whose detail lacks what
    pushpool reads (taskArn, lastStatus, version).
    """
    from aws_lambda_powertools.utilities.parser.models import EventBridgeModel

    event = EventBridgeModel.model_validate_json(body)
    if event.source != ECS_SOURCE or event.detail_type != ECS_DETAIL_TYPE:
        return None
    detail = ECSTaskDetail.model_validate(event.detail)
    raw = event.detail if isinstance(event.detail, dict) else detail.model_dump()
    return raw, detail


def ecs_record(record: SQSRecord) -> None:
    """One SQS record holding one EventBridge event; raising marks just this record as failed."""
    from dispatcher.provider_events import apply_status
    from dispatcher.providers.ecs import event_to_status

    try:
        parsed = parse_ecs_event(record.body)
    except ValueError:  # pydantic's ValidationError, malformed JSON included
        logger.exception(
            "malformed event: it fails alone, then goes to the dead-letter queue",
            extra={"message_id": record.message_id},
        )
        raise
    if parsed is None:
        logger.info("not an ECS task state change; ignored", extra={"message_id": record.message_id})
        return
    raw, detail = parsed
    run_id = detail.run_id()
    with logger.append_context_keys(run_id=run_id, task_id=detail.task_id, task_version=detail.version):
        if run_id is None:
            logger.info("task not started by pushpool; ignored")
            return
        status = event_to_status(raw)
        try:
            # The task and its event version name the report: a redelivery or a duplicate event is a no-op.
            run = apply_status(runtime.store, run_id, status, source=f"ecs:{detail.task_id}:{detail.version}")
        except Exception:
            logger.exception("event not applied; SQS delivers it again", extra={"message_id": record.message_id})
            raise
        if run is None:
            logger.info("task of an unknown run; ignored", extra={"last_status": detail.lastStatus})
            return
        if left_active(run) and runtime.wakeups is not None:
            runtime.wakeups.wake(run.pool, SLOT_FREED)  # its slot is free: the next waiting run need not wait
        logger.info(
            "ecs task state change",
            extra={"last_status": detail.lastStatus, "reported": status.state.value, "run_state": run.state.value},
        )


@logger.inject_lambda_context(clear_state=True)
def ecs_events(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    """An SQS batch; the answer lists the records that failed (`batchItemFailures`), so only they come back."""
    from aws_lambda_powertools.utilities.batch import process_partial_response

    try:
        return process_partial_response(
            event=event, record_handler=ecs_record, processor=runtime.batch_processor, context=context
        )
    finally:
        flush_wakeups()  # one invoke per pool for the whole batch, coalesced


# HTTP -------------------------------------------------------------------------------------------------------
_RUN_PATH = re.compile(r"^/(?:callbacks/runs|flow_runs)/([^/]+)")


def http_resolver(api: Api) -> APIGatewayHttpResolver:
    """Powertools' HTTP API resolver with one catch-all route: `Api.handle` does the routing and the rules."""
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
    from aws_lambda_powertools.event_handler import Response as HttpResponse

    from dispatcher.api import Request

    app = APIGatewayHttpResolver()

    @app.route(".+", method=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
    def _any() -> HttpResponse:
        event = app.current_event
        raw = event.body or ""
        # The callback's signature covers the exact bytes sent, so they are kept as they came.
        body = base64.b64decode(raw) if event.is_base64_encoded else raw.encode()
        path = event.path  # rawPath, without the stage name of a non-default stage
        match = _RUN_PATH.match(path)
        with logger.append_context_keys(run_id=match.group(1) if match else None):
            headers = dict(event.headers or {})
            if event.cookies:
                # Payload 2.0 moves the Cookie header into `cookies` (the dashboard's session travels there).
                headers["cookie"] = "; ".join(event.cookies)
            response = api.handle(
                Request(
                    method=event.http_method,
                    path=path,
                    headers=headers,
                    query=dict(event.query_string_parameters or {}),
                    body=body,
                    scheme="https",  # API Gateway and function URLs answer HTTPS only
                )
            )
            logger.info("http request", extra={"method": event.http_method, "path": path, "status": response.status})
        return HttpResponse(
            status_code=response.status, body=response.encoded().decode() or None, headers=response.all_headers()
        )

    return app


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def http(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The callback route and the management API, for an HTTP API (payload 2.0) or a function URL."""
    try:
        return runtime.http_app.resolve(event, context)
    finally:
        flush_wakeups()


_function = os.environ.get("_HANDLER", "").replace("/", ".")
if _function.rpartition(".")[0] == __name__ and _function.rpartition(".")[2] in PRELOAD:
    preload(_function.rpartition(".")[2])

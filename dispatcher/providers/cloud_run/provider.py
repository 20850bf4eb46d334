"""`CloudRunProvider`: each run is one Cloud Run job, created and started by one create_job call.

Submission (SPEC §5), for a rendered job (templates/cloud-run-v2-push.json):

1. create_job with the job id derived from the run's life (`pushpool-<run id>`, `pushpool-<run id>-r<N>` after
   `flow-run retry`), in the job's project and region, carrying `startExecutionToken`: Cloud Run starts the
   job's execution, named `<job id>-start`, in the same operation, which ends once the execution has started.
   Creating and starting are one idempotent call: a job exists only with its execution started or starting.
2. A 409 (the job is there: another submit of this life created it: an abandoned call that went on, another
   dispatcher, an earlier attempt) means "find that execution", never "start one": by its name, else by
   listing (a job an older pushpool ran with run_job), waiting up to `creator_wait` for a creation under way.
   A job that has none tells why (`_execution_of_existing_job`): still being created, a start that failed (the
   job is deleted so the next attempt creates it again), or an older pushpool's job (a permanent error).

So every attempt of one life shares one execution, and two submits of it, however they interleave, start one.

The infrastructure id is the execution's name (`projects/P/locations/R/jobs/J/executions/E`), prefixed by
`<credentials file>|` when the pool names a credentials file, so status, cancel and logs use the same
credentials after a cold start. Once status() sees an execution end, the job is deleted unless `keep_job`
(the job carries the label `pushpool-keep-job`); `sweep()` deletes ended jobs whose runs ended through their
callbacks, which status() never saw.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from ...errors import InvalidInput, ProviderError
from ..base import JobState, JobStatus, key_head
from .clients import Clients, CloudRunClients
from .errors import http_status, provider_error
from .model import (
    START_TOKEN,
    CloudRunJobConfiguration,
    build_job_body,
    execution_id_for_job,
    job_id_for_run,
    parse_job,
)
from .status import execution_status

log = logging.getLogger("pushpool.providers.cloud_run")

__all__ = ["KEEP_JOB_LABEL", "REGION_ENV", "PROJECT_ENV", "CloudRunProvider", "split_infrastructure_id"]

KEEP_JOB_LABEL = "pushpool-keep-job"
RUN_LABEL = "pushpool-run-id"
REGION_ENV = "PUSHPOOL_CLOUD_RUN_REGION"
PROJECT_ENV = "PUSHPOOL_CLOUD_RUN_PROJECT"
TOKEN_ENV = "PUSHPOOL_CALLBACK_TOKEN"
_TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CRASHED, JobState.CANCELLED})
_LOG_ENTRIES = 5000
_ENDED_KEPT = 10000
_CREATOR_POLL = 0.2
SWEEP_MIN_AGE_SECONDS = 3600.0


def make_infrastructure_id(execution: str, credentials_file: str | None) -> str:
    return f"{credentials_file}|{execution}" if credentials_file else execution


def split_infrastructure_id(infrastructure_id: str) -> tuple[str | None, str]:
    """(credentials file or None, execution name); ValueError for an id this provider did not make."""
    credentials_file, _, execution = infrastructure_id.rpartition("|")
    parts = execution.split("/")
    if len(parts) != 8 or parts[0::2] != ["projects", "locations", "jobs", "executions"] or not all(parts[1::2]):
        raise ValueError(f"{infrastructure_id!r} is not a Cloud Run execution name")
    return credentials_file or None, execution


def _job_of(execution: str) -> str:
    return execution.split("/executions/")[0]


def _location_of(name: str) -> str:
    return "/".join(name.split("/")[:4])


class CloudRunProvider:
    """Runs jobs as Cloud Run jobs. Thread-safe; constructing it needs no credentials and no network.

    - `credentials`, `api_endpoint`: for tests and embedders (see `Clients`); by default each pool's
      `credentials` decide, and Google's endpoint is used.
    - `project`: the project when the job's credentials name none (else the credentials' own project).
    - `region`: where `find()` looks besides the locations this instance submitted to
      (default `$PUSHPOOL_CLOUD_RUN_REGION`, then us-central1, Prefect's default).
    - `call_timeout`: seconds for each Cloud Run call; `operation_timeout`: for create_job's operation.
    - `creator_wait`: how long a submit that finds its job already created (by a submit racing it) waits for the
      job's execution to appear before saying why there is none.
    - `sweep_interval`: seconds between automatic sweeps of ended jobs (in a background thread, after a submit);
      None turns them off.
    """

    status_is_cheap = False
    """status() is a Cloud Run call: the reconciler asks only about runs that have been silent for a while."""

    def __init__(
        self,
        *,
        credentials: Any = None,
        api_endpoint: str | None = None,
        project: str | None = None,
        region: str | None = None,
        call_timeout: float = 10.0,
        operation_timeout: float = 20.0,
        sweep_interval: float | None = 600.0,
        creator_wait: float = 3.0,
    ) -> None:
        self._clients = Clients(credentials=credentials, api_endpoint=api_endpoint)
        self._api_endpoint = api_endpoint
        self._project = project or os.environ.get(PROJECT_ENV) or os.environ.get("GOOGLE_CLOUD_PROJECT") or None
        self._region = region or os.environ.get(REGION_ENV) or "us-central1"
        self.call_timeout = call_timeout
        self.operation_timeout = operation_timeout
        self.sweep_interval = sweep_interval
        self.creator_wait = creator_wait
        self._lock = threading.Lock()
        self._locations: dict[str, str | None] = {}
        """`projects/P/locations/R` this instance submitted to -> its credentials file (for find and sweep)."""
        self._swept: dict[str, float] = {}
        self._ended: dict[str, JobStatus] = {}
        """Ended statuses this instance saw before deleting their jobs: once the job is gone Cloud Run answers
        404, and a run whose end was not yet recorded (a save that lost a race) must not turn MISSING here."""
        self._sweeper: threading.Thread | None = None

    # -- Provider protocol -------------------------------------------------------------------------------------

    def validate(self, job: dict[str, Any]) -> dict[str, Any]:
        """Check a rendered job against `CloudRunJobConfiguration` (pure); return it normalised."""
        return parse_job(job).model_dump(mode="json", exclude_none=True)

    def submit(self, job: dict[str, Any], *, idempotency_key: str, resubmission: bool = False) -> str:
        """Create the run's job (or find it) and start its one execution; return the infrastructure id."""
        try:
            config = parse_job(job)
        except InvalidInput as exc:
            raise ProviderError(str(exc), transient=False) from None
        secrets = [value for key, value in config.env.items() if key == TOKEN_ENV and value]
        try:
            return self._submit(config, idempotency_key, resubmission)
        except ProviderError as exc:
            raise _redacted(exc, secrets) from None
        finally:
            self._maybe_sweep()

    def status(self, infrastructure_id: str) -> JobStatus:
        """The execution's state per SPEC §6; MISSING when Cloud Run has no such execution. Deletes the job of
        an ended execution unless it carries `pushpool-keep-job`."""
        try:
            credentials_file, name = split_infrastructure_id(infrastructure_id)
        except ValueError as exc:
            return JobStatus(JobState.MISSING, message=str(exc))
        clients = self._clients.get(credentials_file)
        try:
            execution = clients.executions.get_execution(name=name, retry=None, timeout=self.call_timeout)
        except Exception as exc:
            if http_status(exc) == 404:
                remembered = self._ended.get(name)
                if remembered is not None:
                    return remembered
                short = name.rsplit("/", 1)[-1]
                return JobStatus(
                    JobState.MISSING, message=f"Cloud Run has no execution {short} (or its job was deleted)"
                )
            raise provider_error(exc, "get_execution") from None
        data = type(execution).to_dict(execution, use_integers_for_enums=False)
        status = execution_status(data)
        if status.state in _TERMINAL and (data.get("labels") or {}).get(KEEP_JOB_LABEL) != "true":
            with self._lock:
                if len(self._ended) >= _ENDED_KEPT:
                    self._ended.pop(next(iter(self._ended)))  # the oldest: a bounded memory
                self._ended[name] = status
            self._delete_job(clients, _job_of(name))
        return status

    def cancel(self, infrastructure_id: str) -> None:
        """cancel_execution; the end is confirmed later by `status` (CANCELLED). An execution that is gone or
        already ended needs no stop."""
        try:
            credentials_file, name = split_infrastructure_id(infrastructure_id)
        except ValueError as exc:
            raise ProviderError(f"cannot cancel {infrastructure_id!r}: {exc}", transient=False) from None
        clients = self._clients.get(credentials_file)
        try:
            clients.executions.cancel_execution(name=name, retry=None, timeout=self.call_timeout)
        except Exception as exc:
            if http_status(exc) == 404 or type(exc).__name__ == "FailedPrecondition":
                return
            raise provider_error(exc, "cancel_execution") from None

    def find(self, idempotency_key: str) -> str | None:
        """The execution launched under this key's run, or None when none was launched.

        Looks for the run's job in the locations this instance submitted to and in the default one (`region`,
        in `project` or the default credentials' project). Raises ProviderError when it cannot look at all.
        """
        job_id = job_id_for_run(key_head(idempotency_key))
        with self._lock:
            locations = dict(self._locations)
        default = self._default_location()
        if default is not None:
            locations.setdefault(default, None)
        if not locations:
            raise ProviderError(
                f"cannot look for the Cloud Run job of {idempotency_key!r}: no project is known (set "
                f"{PROJECT_ENV} or GOOGLE_CLOUD_PROJECT)",
                transient=False,
            )
        for location, credentials_file in locations.items():
            clients = self._clients.get(credentials_file)
            execution = self._latest_execution(clients, f"{location}/jobs/{job_id}")
            if execution is not None:
                return make_infrastructure_id(execution, credentials_file)
        return None

    def logs(self, infrastructure_id: str) -> str:
        """The execution's log URI (Cloud Logging in the console) and, when google-cloud-logging is installed,
        the lines its tasks wrote, oldest first."""
        try:
            credentials_file, name = split_infrastructure_id(infrastructure_id)
        except ValueError as exc:
            raise ProviderError(f"cannot read the logs of {infrastructure_id!r}: {exc}", transient=False) from None
        from .logs import execution_logs

        return execution_logs(
            self._clients.get(credentials_file),
            name,
            timeout=self.call_timeout,
            api_endpoint=self._api_endpoint,
            max_entries=_LOG_ENTRIES,
        )

    # -- submission --------------------------------------------------------------------------------------------

    def _submit(self, config: CloudRunJobConfiguration, key: str, resubmission: bool) -> str:
        credentials_file = config.credentials.service_account_file
        clients = self._clients.get(credentials_file)
        project = config.credentials.project or self._project or clients.project
        if not project:
            raise ProviderError(
                "no Google Cloud project for this job: set credentials.project in the pool, or "
                f"{PROJECT_ENV} / GOOGLE_CLOUD_PROJECT on the dispatcher",
                transient=False,
            )
        location = f"projects/{project}/locations/{config.region}"
        with self._lock:
            self._locations[location] = credentials_file
        job_id = job_id_for_run(key_head(key))
        job_name = f"{location}/jobs/{job_id}"
        body = build_job_body(config)
        if config.keep_job:
            body["labels"][KEEP_JOB_LABEL] = "true"
            body["template"]["labels"][KEEP_JOB_LABEL] = "true"

        execution = self._create_job(clients, location, job_id, body)
        if execution is None:
            # The job is there: another submit of this life created it, and with it its one execution.
            execution = self._execution_of_existing_job(clients, job_name)
        return make_infrastructure_id(execution, credentials_file)

    def _create_job(self, clients: CloudRunClients, parent: str, job_id: str, body: dict[str, Any]) -> str | None:
        """create_job with `START_TOKEN`, which also starts the job's execution, and wait for that operation;
        the execution's name, or None when the job was already there (409)."""
        from google.cloud import run_v2

        try:
            job = run_v2.Job.from_json(json.dumps(body), ignore_unknown_fields=False)
        except Exception as exc:
            raise ProviderError(f"job_body is not a Cloud Run v2 Job: {exc}", transient=False) from None
        try:
            operation = clients.jobs.create_job(
                parent=parent, job=job, job_id=job_id, retry=None, timeout=self.call_timeout
            )
            created = operation.result(timeout=self.operation_timeout)
        except Exception as exc:
            if http_status(exc) == 409:
                return None
            raise provider_error(exc, "create_job") from None
        latest = getattr(getattr(created, "latest_created_execution", None), "name", "")
        return str(latest) or f"{parent}/jobs/{job_id}/executions/{execution_id_for_job(job_id)}"

    def _execution_of_existing_job(self, clients: CloudRunClients, job_name: str) -> str:
        """The execution of a job some other submit created; never starts one.

        The token's execution is looked up by name, then any execution is (a job an older pushpool created and
        ran with run_job); a job still being created gets `creator_wait` seconds for it to appear. Without one:
        - the job is still being created (`reconciling`): a transient error, and the next attempt finds it;
        - it was created with `START_TOKEN` and has settled, so its start failed: the job is deleted (guarded by its
          etag, so a job re-created meanwhile is left alone) and a transient error lets the next attempt create it
          again, with the start's failure in Cloud Run's words;
        - it has no token (an older pushpool created it, to run it with a second call that may still come): a
          permanent error; starting one here could make two.
        """
        job_id = job_name.rsplit("/", 1)[-1]
        found = self._token_execution(clients, job_name) or self._latest_execution(clients, job_name)
        if found is None:
            found = self._wait_for_execution(clients, job_name)
        if found is not None:
            return found
        try:
            job = clients.jobs.get_job(name=job_name, retry=None, timeout=self.call_timeout)
        except Exception as exc:
            if http_status(exc) == 404:
                raise ProviderError(
                    f"Cloud Run job {job_id} was deleted while this submit looked for its execution; the next "
                    "attempt creates it again",
                    transient=True,
                ) from None
            raise provider_error(exc, "get_job") from None
        if job.start_execution_token != START_TOKEN:
            raise ProviderError(
                f"Cloud Run job {job_id} exists without an execution and without pushpool's start token (an older "
                "pushpool created it, and its run_job may still come): pushpool starts none, to never start two; "
                f"delete the job and send the run back with `pushpool flow-run retry`",
                transient=False,
            )
        if job.reconciling:
            raise ProviderError(
                f"Cloud Run is still creating job {job_id} and starting its execution; the next attempt finds it",
                transient=True,
            )
        condition = job.terminal_condition
        reason = str(condition.message or condition.reason or "no reason given") if condition else "no reason given"
        from google.cloud import run_v2

        try:
            request = run_v2.DeleteJobRequest(name=job_name, etag=job.etag)
            clients.jobs.delete_job(request=request, retry=None, timeout=self.call_timeout).result(
                timeout=self.operation_timeout
            )
        except Exception as exc:
            if http_status(exc) != 404:
                raise provider_error(exc, "delete_job") from None
        raise ProviderError(
            f"Cloud Run created job {job_id} but did not start its execution ({reason}); the job is deleted and the "
            "next attempt creates it again",
            transient=True,
        )

    def _token_execution(self, clients: CloudRunClients, job_name: str) -> str | None:
        """The execution `START_TOKEN` names in a job, or None when it does not exist (yet)."""
        name = f"{job_name}/executions/{execution_id_for_job(job_name.rsplit('/', 1)[-1])}"
        try:
            clients.executions.get_execution(name=name, retry=None, timeout=self.call_timeout)
        except Exception as exc:
            if http_status(exc) == 404:
                return None
            raise provider_error(exc, "get_execution") from None
        return name

    def _latest_execution(self, clients: CloudRunClients, job_name: str) -> str | None:
        """The newest execution of a job, or None when the job or its executions do not exist."""
        try:
            pager = clients.executions.list_executions(parent=job_name, retry=None, timeout=self.call_timeout)
            executions = list(pager)
        except Exception as exc:
            if http_status(exc) == 404:
                return None
            raise provider_error(exc, "list_executions") from None
        if not executions:
            return None
        newest = max(executions, key=lambda e: (e.create_time is not None, e.create_time or 0, e.name))
        return str(newest.name)

    def _wait_for_execution(self, clients: CloudRunClients, job_name: str) -> str | None:
        """The job's execution once one appears, polling for `creator_wait` seconds; None if none does."""
        deadline = time.monotonic() + self.creator_wait
        while time.monotonic() < deadline:
            time.sleep(_CREATOR_POLL)
            found = self._latest_execution(clients, job_name)
            if found is not None:
                return found
        return None

    def _default_location(self) -> str | None:
        project = self._project
        if project is None:
            try:
                project = self._clients.get(None).project
            except ProviderError:
                return None
        return f"projects/{project}/locations/{self._region}" if project else None

    # -- cleaning up -------------------------------------------------------------------------------------------

    def _delete_job(self, clients: CloudRunClients, job_name: str) -> None:
        """Start deleting a job; a failure is logged, never raised: the run's state is what matters."""
        try:
            clients.jobs.delete_job(name=job_name, retry=None, timeout=self.call_timeout)
        except Exception as exc:
            if http_status(exc) != 404:
                log.warning("could not delete Cloud Run job %s: %s", job_name, provider_error(exc, "delete_job"))

    def sweep(
        self,
        location: str,
        credentials_file: str | None = None,
        *,
        max_deletes: int = 20,
        min_age_seconds: float = SWEEP_MIN_AGE_SECONDS,
    ) -> list[str]:
        """Delete pushpool's ended jobs in a location (`projects/P/locations/R`), except those to keep.

        A run that ends through its callback is never looked at by status(), so its job would stay: this finds
        jobs labelled `pushpool-run-id` whose latest execution completed at least `min_age_seconds` ago. The
        age leaves the reconciler time to read the end of a run whose callback was lost (it asks about runs
        silent for 5 minutes): deleting its job first would make that run look vanished. Returns the deleted
        job names.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=min_age_seconds)
        clients = self._clients.get(credentials_file)
        try:
            jobs = list(clients.jobs.list_jobs(parent=location, retry=None, timeout=self.call_timeout))
        except Exception as exc:
            raise provider_error(exc, "list_jobs") from None
        deleted: list[str] = []
        for job in jobs:
            labels = dict(job.labels)
            latest = job.latest_created_execution
            ended = latest is not None and bool(latest.completion_time) and latest.completion_time <= cutoff
            if RUN_LABEL in labels and labels.get(KEEP_JOB_LABEL) != "true" and ended:
                self._delete_job(clients, str(job.name))
                deleted.append(str(job.name))
                if len(deleted) >= max_deletes:
                    break
        return deleted

    def _maybe_sweep(self) -> None:
        if self.sweep_interval is None:
            return
        now = time.monotonic()
        with self._lock:
            if self._sweeper is not None and self._sweeper.is_alive():
                return
            due = [
                (loc, creds)
                for loc, creds in self._locations.items()
                if now - self._swept.get(loc, float("-inf")) >= self.sweep_interval
            ]
            if not due:
                return
            for loc, _ in due:
                self._swept[loc] = now
            self._sweeper = threading.Thread(target=self._sweep_all, args=(due,), name="cloud-run-sweep", daemon=True)
            self._sweeper.start()

    def _sweep_all(self, due: list[tuple[str, str | None]]) -> None:
        for location, credentials_file in due:
            try:
                self.sweep(location, credentials_file)
            except ProviderError as exc:
                log.warning("sweep of ended Cloud Run jobs in %s failed: %s", location, exc)

    def wait_for_sweep(self, timeout: float = 10.0) -> None:
        """Wait for a background sweep under way (tests, and a Lambda handler about to return)."""
        sweeper = self._sweeper
        if sweeper is not None:
            sweeper.join(timeout)


def _redacted(exc: ProviderError, secrets: list[str]) -> ProviderError:
    """The error without the run's callback token, should Google ever echo a request value back."""
    message = str(exc)
    for secret in secrets:
        message = message.replace(secret, "[redacted]")
    return exc if message == str(exc) else ProviderError(message, transient=exc.transient)

"""One harness per provider: what tests/test_provider_conformance.py and tests/reliability/ drive providers with.

A harness owns a provider and the real peer behind it (local processes, moto's ECS server behind a small
front, the in-package FakeProvider, the local Cloud Run stub) and can: build the provider (and a fresh one over the same
infrastructure, as a restarted dispatcher would), give a valid rendered job and an invalid one, make a job
end with a chosen exit code, count what was really launched, and inject faults into `submit`.

To add a provider, write one subclass of `ProviderHarness` and append it to `HARNESSES`; see the docstring
of tests/test_provider_conformance.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from dispatcher import templating
from dispatcher.providers.base import JobState, JobStatus, Provider
from dispatcher.providers.fake import FakeProvider
from dispatcher.providers.process import ProcessProvider

ROOT = Path(__file__).resolve().parent.parent

FAULTS = ("throttle", "server_error", "timeout", "permanent", "hang")
"""Faults a harness may inject into submit: the first three are transient, `permanent` is not, and `hang`
is a call that does not answer until the fault is lifted (the scenarios give the dispatcher a provider
timeout of 0.5 s for it, so a harness's own client timeout must be longer than that)."""

TRANSIENT_FAULTS = frozenset({"throttle", "server_error", "timeout", "hang"})


def wait_for(check: Any, timeout: float = 15.0, what: str = "a condition", interval: float = 0.02) -> Any:
    """Poll `check()` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class ProviderHarness:
    """The base every provider's harness extends. Subclasses set the class attributes and the methods below."""

    name: ClassVar[str]
    pool_type: ClassVar[str]
    """The pool type a dispatcher test gives this provider (`Providers({pool_type: provider})`)."""
    faults: ClassVar[frozenset[str]]
    """Which of FAULTS `fault()` can inject; the suite runs the fault tests only for these."""
    template_path: ClassVar[Path]
    """The pool's base job template (usually the type's default in templates/)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    # -- to implement ----------------------------------------------------------------------------------------
    def provider(self) -> Provider:
        """The provider under test; the same instance on every call."""
        raise NotImplementedError

    def fresh_provider(self) -> Provider:
        """A new provider over the same infrastructure, as a dispatcher restarted after a crash would build."""
        raise NotImplementedError

    def job_variables(self) -> dict[str, Any]:
        """Deployment job variables that render, with `template_path`, into a job that runs until `finish`."""
        raise NotImplementedError

    def bad_job(self) -> tuple[dict[str, Any], str]:
        """A rendered job the provider's model refuses, and the field its error must name."""
        raise NotImplementedError

    def finish(self, run_id: str, infrastructure_id: str, exit_code: int) -> None:
        """Make the run's job end with `exit_code` (returns at once; `status` shows it soon after)."""
        raise NotImplementedError

    def launched(self) -> int:
        """Jobs really started at the infrastructure so far."""
        raise NotImplementedError

    def touches(self) -> int:
        """A counter of calls reaching the infrastructure, to show `validate` makes none."""
        raise NotImplementedError

    def unknown_id(self) -> str:
        """A well-formed infrastructure id the infrastructure has never heard of."""
        raise NotImplementedError

    @contextlib.contextmanager
    def fault(self, kind: str) -> Iterator[str]:
        """While inside, every submit fails with `kind`; yields words the provider's error must contain."""
        raise NotImplementedError
        yield ""  # pragma: no cover

    def close(self) -> None:
        """Stop whatever the harness started."""

    # -- shared ----------------------------------------------------------------------------------------------
    def template(self) -> dict[str, Any]:
        template: dict[str, Any] = json.loads(self.template_path.read_text())
        return template

    def job(self, run_id: str | None = None) -> dict[str, Any]:
        """A job rendered as the dispatcher renders it: template, variables, run context; not yet validated."""
        run_id = run_id or str(uuid.uuid4())
        template = self.template()
        values = templating.resolve_job_variables(template, None, self.job_variables(), None)
        job = templating.render(template["job_configuration"], values, {})
        return templating.inject_run_context(
            job,
            run_id=run_id,
            deployment="conformance",
            pool="conformance pool",
            queue="default",
            parameters={},
            callback_url="",
            callback_token="token-of-the-run",
            run_name=f"run-{run_id[:8]}",
        )

    def wait_status(self, infrastructure_id: str, *states: JobState, timeout: float = 20.0) -> JobStatus:
        """Poll the provider's status until it is one of `states`; fail with the last status seen."""
        seen: list[JobStatus] = []

        def reached() -> bool:
            seen.append(self.provider().status(infrastructure_id))
            return seen[-1].state in states

        try:
            wait_for(reached, timeout, f"{infrastructure_id} to reach {states}", interval=0.05)
        except AssertionError:
            raise AssertionError(f"{infrastructure_id} never reached {states}; last status {seen[-1]}") from None
        return seen[-1]


# -- process: real subprocesses ----------------------------------------------------------------------------------

_WAIT_FOR_EXIT = (
    "import os, pathlib, sys, time\n"
    "control = pathlib.Path(os.environ['PUSHPOOL_TEST_CONTROL']) / os.environ['PUSHPOOL_RUN_ID']\n"
    "deadline = time.monotonic() + 120\n"
    "while not control.exists() and time.monotonic() < deadline:\n"
    "    time.sleep(0.02)\n"
    "sys.exit(int(control.read_text() or 0) if control.exists() else 99)\n"
)
"""A job that runs until the harness writes its exit code into a file named after the run (at most 2 min)."""


class ProcessHarness(ProviderHarness):
    """The `process` provider with real detached subprocesses in a state directory of the test's own."""

    name = "process"
    pool_type = "process"
    faults = frozenset({"server_error", "permanent"})
    """`server_error`: its state directory cannot be created (as on a full disk: retried); `permanent`: the
    job's working directory is gone (refused)."""
    template_path = ROOT / "templates" / "process.json"

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.state_dir = tmp_path / "processes"
        self.control = tmp_path / "control"
        self.control.mkdir(parents=True, exist_ok=True)
        self.workdir = tmp_path / "work"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._provider = ProcessProvider(state_dir=self.state_dir, kill_grace_seconds=0.5)

    def provider(self) -> Provider:
        return self._provider

    def fresh_provider(self) -> Provider:
        return ProcessProvider(state_dir=self.state_dir, kill_grace_seconds=0.5)

    def job_variables(self) -> dict[str, Any]:
        return {
            "command": [sys.executable, "-c", _WAIT_FOR_EXIT],
            "env": {"PUSHPOOL_TEST_CONTROL": str(self.control)},
            "working_dir": str(self.workdir),
        }

    def bad_job(self) -> tuple[dict[str, Any], str]:
        return {**self.job(), "command": []}, "command"

    def finish(self, run_id: str, infrastructure_id: str, exit_code: int) -> None:
        (self.control / run_id).write_text(str(exit_code))

    def launched(self) -> int:
        if not self.state_dir.exists():
            return 0
        return sum(1 for d in self.state_dir.iterdir() if (d / "pid").exists())

    def touches(self) -> int:
        return len(list(self.state_dir.iterdir())) if self.state_dir.exists() else 0

    def unknown_id(self) -> str:
        return f"never-launched-{uuid.uuid4().hex[:8]}"

    @contextlib.contextmanager
    def fault(self, kind: str) -> Iterator[str]:
        if kind == "permanent":
            aside = self.workdir.with_name("work.aside")
            os.rename(self.workdir, aside)
            try:
                yield "working_dir"
            finally:
                os.rename(aside, self.workdir)
            return
        if kind != "server_error":
            raise ValueError(f"the process harness cannot inject {kind!r}")
        # A file where the state directory should be: no run directory can be made there.
        self.state_dir.mkdir(parents=True, exist_ok=True)
        aside = self.state_dir.with_name("processes.aside")
        os.rename(self.state_dir, aside)
        self.state_dir.write_text("not a directory")
        try:
            yield "cannot create"
        finally:
            self.state_dir.unlink()
            os.rename(aside, self.state_dir)

    def close(self) -> None:
        # Only the process groups this harness's runs started.
        for pid_file in self.state_dir.glob("*/pid") if self.state_dir.is_dir() else []:
            with contextlib.suppress(ValueError, OSError):
                os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)


# -- fake: the in-package FakeProvider ---------------------------------------------------------------------------

_FAKE_WORDS = {
    "throttle": "ThrottlingException: Rate exceeded",
    "server_error": "ServiceUnavailable: 503",
    "timeout": "read timed out",
    "permanent": "AccessDenied: not authorized",
}


class FakeHarness(ProviderHarness):
    """dispatcher/providers/fake.py: its memory is the infrastructure, so a "fresh" provider is the same one."""

    name = "fake"
    pool_type = "process"
    faults = frozenset(FAULTS)
    template_path = ROOT / "templates" / "process.json"
    hang_seconds = 2.5

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.fake = FakeProvider(initial_status=JobStatus(JobState.RUNNING))

    def provider(self) -> Provider:
        return self.fake

    def fresh_provider(self) -> Provider:
        return self.fake

    def job_variables(self) -> dict[str, Any]:
        return {"command": ["python", "flow.py"]}

    def bad_job(self) -> tuple[dict[str, Any], str]:
        return {**self.job(), "command": []}, "command"

    def finish(self, run_id: str, infrastructure_id: str, exit_code: int) -> None:
        state = JobState.COMPLETED if exit_code == 0 else JobState.FAILED
        self.fake.set_status(infrastructure_id, JobStatus(state, exit_code=exit_code))

    def launched(self) -> int:
        return len(self.fake.launches)

    def touches(self) -> int:
        return len(self.fake.submit_calls) + len(self.fake.status_calls) + len(self.fake.cancelled)

    def unknown_id(self) -> str:
        return f"fake-never-{uuid.uuid4().hex[:8]}"

    @contextlib.contextmanager
    def fault(self, kind: str) -> Iterator[str]:
        if kind == "hang":
            self.fake.hang_seconds = self.hang_seconds
            try:
                yield ""
            finally:
                self.fake.hang_seconds = 0.0
            return
        self.fake.fail_next(10_000, transient=kind in TRANSIENT_FAULTS, message=_FAKE_WORDS[kind])
        try:
            yield _FAKE_WORDS[kind]
        finally:
            self.fake.clear_failures()


# -- ECS: moto's server behind a front that honours clientToken and injects faults -----------------------------

_ECS_TARGET = "AmazonEC2ContainerServiceV20141113."

_ECS_FAULTS: dict[str, tuple[int, str, str]] = {
    # kind: (HTTP status, ECS error code, ECS's message)
    "throttle": (400, "ThrottlingException", "Rate exceeded"),
    "server_error": (503, "ServerException", "Service Unavailable. Please try again later."),
    "permanent": (
        400,
        "AccessDeniedException",
        "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: ecs:RunTask",
    ),
}


class EcsFront:
    """A local HTTP server in front of moto that behaves as ECS does where moto does not.

    - RunTask with a `clientToken` seen before answers the first call's response and launches nothing (moto
      ignores clientToken; ECS keeps a token's answer for hours).
    - StopTask of a task ECS does not know is ECS's InvalidParameterException, not moto's internal error (moto
      raises a bare Exception for it, which its server answers as an HTML 500).
    - `fault(action, kind)` makes every request of an action fail as ECS would: throttling (400), a 5xx, an
      AccessDenied, no answer before the client's read timeout (the request never reaches moto), or no answer
      until the fault is lifted.
    Everything else is forwarded to moto unchanged. `requests` counts what reached the front.
    """

    def __init__(self, moto_url: str, *, slow_seconds: float) -> None:
        self.moto_url = moto_url
        self.slow_seconds = slow_seconds
        self.requests = 0
        self.faults: dict[str, str] = {}
        self.release = threading.Event()
        self._tokens: dict[str, tuple[int, bytes]] = {}
        self._token_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, answer = front.handle(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="ecs-front", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests += 1
        action = headers.get("X-Amz-Target", "").removeprefix(_ECS_TARGET)
        kind = self.faults.get(action)
        if kind == "hang":
            self.release.wait(60)
            kind = "server_error"
        elif kind == "timeout":
            # Lost on its way: the client gives up first, and ECS never saw the request.
            time.sleep(self.slow_seconds)
            kind = "server_error"
        if kind is not None:
            status, code, message = _ECS_FAULTS[kind]
            answer = json.dumps({"__type": code, "message": message}).encode()
            return status, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": str(uuid.uuid4())}, answer
        if action == "RunTask":
            token = json.loads(body or b"{}").get("clientToken")
            if token:
                with self._lock:
                    lock = self._token_locks.setdefault(token, threading.Lock())
                with lock:  # a token's concurrent calls wait for its first answer, as ECS's do
                    if token in self._tokens:
                        status, answer = self._tokens[token]
                        return status, {"Content-Type": "application/x-amz-json-1.1"}, answer
                    status, out_headers, answer = self._forward(path, headers, body)
                    if status == 200:
                        self._tokens[token] = (status, answer)
                    return status, out_headers, answer
        status, out_headers, answer = self._forward(path, headers, body)
        if action == "StopTask" and status == 500 and b"Internal Server Error" in answer:
            refusal = {"__type": "InvalidParameterException", "message": "The referenced task was not found."}
            return 400, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(refusal).encode()
        return status, out_headers, answer

    def _forward(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        keep = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length", "connection")}
        request = urllib.request.Request(self.moto_url + path, data=body, headers=keep, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, {"Content-Type": response.headers.get("Content-Type", "")}, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {"Content-Type": exc.headers.get("Content-Type", "")}, exc.read()


class EcsHarness(ProviderHarness):
    """The `ecs:push` provider against moto's ECS and EC2 through `EcsFront` (one moto server per harness).

    Tasks stay RUNNING until `finish` stops them in moto's backend with the chosen exit code (moto runs in this
    process). The provider's clients are built here with a shorter read timeout than its own (2.5 s) and no
    botocore retry, so a timeout fault costs seconds, not the 30 s the production settings would; the
    dispatcher's own retries are what the scenarios measure.
    """

    name = "ecs"
    pool_type = "ecs:push"
    faults = frozenset(FAULTS)
    template_path = ROOT / "templates" / "ecs-push.json"
    read_timeout = 2.5

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        from ecs_fakes import AWS_TEST_ENV, AWS_UNSET, MotoServer, make_vpc

        self._env = contextlib.ExitStack()
        patch = self._env.enter_context(_monkeypatch())
        for key, value in AWS_TEST_ENV.items():
            patch.setenv(key, value)
        for key in AWS_UNSET:
            patch.delenv(key, raising=False)
        self.moto = MotoServer().start()
        # Tasks stay RUNNING: a test ends them with `finish`.
        self.moto.set_transition("ecs::task", {"progression": "manual", "times": 1_000_000})
        self.front = EcsFront(self.moto.url, slow_seconds=self.read_timeout + 0.5)
        direct = self._client("ecs", self.moto.url, read_timeout=60)
        self.cluster = f"pushpool-{uuid.uuid4().hex[:10]}"
        direct.create_cluster(clusterName=self.cluster)
        ec2 = self._client("ec2", self.moto.url, read_timeout=60)
        # Subnets that reach the internet, or the provider refuses the VPC before RunTask.
        self.vpc_id, _ = make_vpc(ec2, "10.50.0.0/16", ["10.50.1.0/24"])
        self._direct = direct
        self._provider = self.fresh_provider()

    def _client(self, service: str, url: str, *, read_timeout: float | None = None) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"mode": "standard", "max_attempts": 1},
            connect_timeout=5,
            read_timeout=read_timeout or self.read_timeout,
        )
        return boto3.session.Session().client(service, region_name="us-east-1", endpoint_url=url, config=config)

    def provider(self) -> Provider:
        return self._provider

    def fresh_provider(self) -> Provider:
        from dispatcher.providers.ecs import ECSProvider

        return ECSProvider(
            self._client("ecs", self.front.url), ec2_client=self._client("ec2", self.moto.url, read_timeout=60)
        )

    def job_variables(self) -> dict[str, Any]:
        return {"image": "flows:1", "cluster": self.cluster, "vpc_id": self.vpc_id}

    def bad_job(self) -> tuple[dict[str, Any], str]:
        job = self.job()
        job["container_name"] = "not a valid name!"
        return job, "container_name"

    def _task(self, infrastructure_id: str) -> Any:
        from ecs_fakes import ACCOUNT, REGION
        from moto.ecs.models import ecs_backends

        backend = ecs_backends[ACCOUNT][REGION]
        for tasks in backend.tasks.values():
            for arn, task in tasks.items():
                if arn == infrastructure_id or infrastructure_id.endswith(task.id):
                    return task
        raise AssertionError(f"moto has no task {infrastructure_id}")

    def finish(self, run_id: str, infrastructure_id: str, exit_code: int) -> None:
        task = self._task(infrastructure_id)
        for container in task.containers:
            container.exitCode = exit_code
            container.last_status = "STOPPED"
        task.stopped_reason = "Essential container in task exited"
        task.desired_status = "STOPPED"
        task.last_status = "STOPPED"

    def launched(self) -> int:
        from ecs_fakes import ACCOUNT, REGION
        from moto.ecs.models import ecs_backends

        # moto's own memory, stopped tasks included (ListTasks would hide those after a while on real ECS).
        return len(ecs_backends[ACCOUNT][REGION].tasks.get(self.cluster, {}))

    def touches(self) -> int:
        return self.front.requests

    def unknown_id(self) -> str:
        from ecs_fakes import task_arn

        return task_arn(self.cluster)

    @contextlib.contextmanager
    def fault(self, kind: str) -> Iterator[str]:
        self.front.release.clear()
        self.front.faults["RunTask"] = kind
        words = {"timeout": "Read timeout", "hang": ""}[kind] if kind in ("timeout", "hang") else _ECS_FAULTS[kind][1]
        try:
            yield words
        finally:
            self.front.faults.pop("RunTask", None)
            self.front.release.set()

    def close(self) -> None:
        self.front.close()
        self.moto.unset_transition("ecs::task")
        self.moto.stop()
        self._env.close()


@contextlib.contextmanager
def _monkeypatch() -> Iterator[Any]:
    import pytest

    patch = pytest.MonkeyPatch()
    try:
        yield patch
    finally:
        patch.undo()


# -- Cloud Run: google-cloud-run's REST client against the local Cloud Run stub ---------------------------------

_CLOUD_RUN_PROJECT = "conformance-project"
_CLOUD_RUN_FAULTS: dict[str, tuple[int, str]] = {
    # kind: (HTTP status the stub answers create_job with, Google's status word the provider's error carries)
    "throttle": (429, "RESOURCE_EXHAUSTED"),
    "server_error": (503, "UNAVAILABLE"),
    "permanent": (403, "PERMISSION_DENIED"),
}


class CloudRunHarness(ProviderHarness):
    """`cloud-run-v2:push` over HTTP: the real google-cloud-run client (REST transport, AnonymousCredentials) to
    tests/cloud_run_stub.py, whose executions start running at once and end when `finish` says."""

    name = "cloud-run"
    pool_type = "cloud-run-v2:push"
    faults = frozenset(FAULTS)
    template_path = ROOT / "templates" / "cloud-run-v2-push.json"
    call_timeout = 1.0

    def __init__(self, tmp_path: Path) -> None:
        from cloud_run_stub import CloudRunStub

        super().__init__(tmp_path)
        self.stub = CloudRunStub().start()
        self.stub.start_at_once = True
        self._provider = self.fresh_provider()

    def provider(self) -> Provider:
        return self._provider

    def fresh_provider(self) -> Provider:
        from google.auth.credentials import AnonymousCredentials

        from dispatcher.providers.cloud_run import CloudRunProvider

        return CloudRunProvider(
            credentials=AnonymousCredentials(),
            api_endpoint=self.stub.endpoint,
            project=_CLOUD_RUN_PROJECT,
            call_timeout=self.call_timeout,
            sweep_interval=None,
        )

    def job_variables(self) -> dict[str, Any]:
        return {"image": "europe-docker.pkg.dev/p/flows/etl:1", "command": ["python", "-m", "flow"]}

    def bad_job(self) -> tuple[dict[str, Any], str]:
        job = self.job()
        job["job_body"]["template"]["template"]["containers"][0]["image"] = ""
        return job, "image"

    def finish(self, run_id: str, infrastructure_id: str, exit_code: int) -> None:
        self.stub.finish(infrastructure_id, exit_code=exit_code)

    def launched(self) -> int:
        return self.stub.started

    def touches(self) -> int:
        return len(self.stub.requests)

    def unknown_id(self) -> str:
        job = f"projects/{_CLOUD_RUN_PROJECT}/locations/us-central1/jobs/pushpool-{uuid.uuid4()}"
        return f"{job}/executions/pushpool-x-abcde"

    @contextlib.contextmanager
    def fault(self, kind: str) -> Iterator[str]:
        if kind == "hang":
            self.stub.hold("create_job")
            try:
                yield ""
            finally:
                self.stub.release()
            return
        if kind == "timeout":
            # No answer before the client's read timeout, and nothing done: the request is lost on the way.
            self.stub.hang("create_job", self.call_timeout + 1.0, times=10_000)
            words = "ReadTimeout"
        else:
            status, words = _CLOUD_RUN_FAULTS[kind]
            self.stub.fail("create_job", status, times=10_000)
        try:
            yield words
        finally:
            self.stub.clear_faults()

    def close(self) -> None:
        self.stub.release()
        self.stub.stop()


# -- ACI: the ARM stub of tests/aci_stub.py, spoken to by the real Azure SDK ------------------------------------

_ACI_FAULTS: dict[str, tuple[int, str, str]] = {
    # kind: (HTTP status, ARM error code, ARM's message)
    "throttle": (429, "TooManyRequests", "The request is being throttled; retry after some time."),
    "server_error": (503, "ServiceUnavailable", "The service is temporarily unavailable."),
    "permanent": (403, "AuthorizationFailed", "The client does not have authorization to perform action"),
}


class ACIHarness(ProviderHarness):
    """ACIProvider on the real Azure SDK against the ARM stub: groups, instance views, stop, delete, faults."""

    name = "aci"
    pool_type = "azure-container-instance:push"
    faults = frozenset({"throttle", "server_error", "timeout", "permanent"})
    template_path = ROOT / "templates" / "azure-container-instance-push.json"

    def __init__(self, tmp_path: Path) -> None:
        from aci_stub import ACIStub

        super().__init__(tmp_path)
        self.stub = ACIStub().__enter__()
        self._provider = self.fresh_provider()

    def provider(self) -> Provider:
        return self._provider

    def fresh_provider(self) -> Provider:
        from aci_stub import RESOURCE_GROUP, SUBSCRIPTION, StubCredential

        from dispatcher.providers.aci import ACIProvider

        return ACIProvider(
            StubCredential(),
            base_url=self.stub.url,
            polling_interval=0,
            read_timeout=1.0,
            sweep_interval_seconds=None,
            # A restarted dispatcher knows where its pool's groups live from its configuration.
            subscription_id=SUBSCRIPTION,
            resource_group=RESOURCE_GROUP,
        )

    def job_variables(self) -> dict[str, Any]:
        from aci_stub import RESOURCE_GROUP, SUBSCRIPTION

        return {
            "image": "flows:1",
            "resource_group_name": RESOURCE_GROUP,
            "subscription_id": SUBSCRIPTION,
            "entrypoint": "",
            "command": ["python", "flow.py"],
        }

    def bad_job(self) -> tuple[dict[str, Any], str]:
        return {**self.job(), "cpu": -1}, "cpu"

    def finish(self, run_id: str, infrastructure_id: str, exit_code: int) -> None:
        self.stub.set_container(infrastructure_id.rsplit("/", 1)[-1], "Terminated", exit_code=exit_code)

    def launched(self) -> int:
        return self.stub.creates + self.stub.updates

    def touches(self) -> int:
        return len(self.stub.requests)

    def unknown_id(self) -> str:
        from aci_stub import RESOURCE_GROUP, SUBSCRIPTION

        from dispatcher.providers.aci.provider import resource_id

        return resource_id(SUBSCRIPTION, RESOURCE_GROUP, f"pp-never-{uuid.uuid4().hex[:8]}")

    @contextlib.contextmanager
    def fault(self, kind: str) -> Iterator[str]:
        if kind == "timeout":
            # The GET before the PUT answers after the client's read timeout: nothing is PUT.
            self.stub.slow_next("get", 2.0, times=10_000)
            try:
                yield "timed out"
            finally:
                self.stub.clear_faults()
            return
        status, code, words = _ACI_FAULTS[kind]
        self.stub.fail_next("put", status, code, words, times=10_000)
        try:
            yield words
        finally:
            self.stub.clear_faults()

    def close(self) -> None:
        self.stub.__exit__(None, None, None)


# -- Modal: FakeModal, which behaves as Modal's servers do (Modal has no offline server) -----------------------

_MODAL_FAULTS: dict[str, tuple[str, str]] = {
    # kind: (modal.exception class, Modal's words)
    "throttle": ("ResourceExhaustedError", "Rate limit exceeded for sandbox creation"),
    "server_error": ("InternalError", "Internal server error, please try again"),
    "timeout": ("TimeoutError", "Deadline exceeded"),
    "permanent": ("AuthError", "Token ID is malformed. Did you use the right credentials?"),
}


class ModalHarness(ProviderHarness):
    """The `modal:push` provider over tests/modal_fakes.py's FakeModal, the SDK adapter's stand-in.

    tests/test_provider_modal.py checks that every call the real adapter makes fits the installed SDK; here
    the provider's behaviour is held to the suite. Sandboxes run until `finish` ends them.
    """

    name = "modal"
    pool_type = "modal:push"
    faults = frozenset(FAULTS)
    template_path = ROOT / "templates" / "modal-push.json"

    def __init__(self, tmp_path: Path) -> None:
        from modal_fakes import FakeModal

        from dispatcher.providers.modal import ModalProvider

        super().__init__(tmp_path)
        self.fake = FakeModal()
        self._provider_class = ModalProvider
        self._provider = ModalProvider(self.fake)

    def provider(self) -> Provider:
        return self._provider

    def fresh_provider(self) -> Provider:
        return self._provider_class(self.fake)

    def job_variables(self) -> dict[str, Any]:
        return {"command": ["python", "-m", "flows.nightly"], "timeout": 600}

    def bad_job(self) -> tuple[dict[str, Any], str]:
        return {**self.job(), "command": []}, "command"

    def finish(self, run_id: str, infrastructure_id: str, exit_code: int) -> None:
        self.fake.finish(infrastructure_id, exit_code)

    def launched(self) -> int:
        return len(self.fake.sandboxes)

    def touches(self) -> int:
        return len(self.fake.calls)

    def unknown_id(self) -> str:
        return "sb-" + uuid.uuid4().hex[:22]

    @contextlib.contextmanager
    def fault(self, kind: str) -> Iterator[str]:
        from modal import exception as modal_exception

        if kind == "hang":
            self.fake.hold()
            try:
                yield ""
            finally:
                self.fake.release()
            return
        cls, words = _MODAL_FAULTS[kind]
        self.fake.fail_always("create", getattr(modal_exception, cls)(words))
        try:
            yield f"{cls}: {words}"
        finally:
            self.fake.fail_always("create", None)

    def close(self) -> None:
        self.fake.release()


HARNESSES: dict[str, type[ProviderHarness]] = {
    h.name: h for h in (ProcessHarness, FakeHarness, EcsHarness, CloudRunHarness, ACIHarness, ModalHarness)
}
"""Every provider's harness by name; the conformance suite and the reliability scenarios run over all of them."""

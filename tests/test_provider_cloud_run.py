"""The `cloud-run-v2:push` provider through google-cloud-run's own REST client against a local stub server.

The stub (tests/cloud_run_stub.py) is a real HTTP server on 127.0.0.1 speaking the Cloud Run v2 routes the
provider uses; the client reaches it with `transport="rest"`, an `http://` endpoint and AnonymousCredentials.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cloud_run_stub import CloudRunStub
from google.auth.credentials import AnonymousCredentials

from dispatcher import templating
from dispatcher.errors import InvalidInput, ProviderError
from dispatcher.providers.base import JobState, Provider, Providers, provider_logs
from dispatcher.providers.cloud_run import CloudRunJobConfiguration, CloudRunProvider
from dispatcher.providers.cloud_run.clients import Clients
from dispatcher.providers.cloud_run.model import build_job_body, job_id_for_run, parse_job
from dispatcher.providers.cloud_run.status import execution_status

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "templates" / "cloud-run-v2-push.json"
PROJECT = "flows-project"
TOKEN = "secret-token-of-the-run"

# Prefect's cloud-run-v2 worker variables: name -> (JSON type, default). Defaults as Prefect 3 ships them.
PREFECT_VARIABLES: dict[str, tuple[Any, Any]] = {
    "name": ("string", None),
    "env": ("object", None),
    "labels": ("object", None),
    "command": ("string", None),
    "credentials": (None, None),
    "region": ("string", "us-central1"),
    "image": ("string", "prefecthq/prefect:3-latest"),
    "args": ("array", None),
    "keep_job": ("boolean", False),
    "launch_stage": ("string", "BETA"),
    "max_retries": ("integer", 0),
    "cpu": ("string", "1000m"),
    "memory": ("string", "512Mi"),
    "timeout": ("integer", 600),
    "vpc_connector_name": ("string", None),
    "service_account_name": ("string", None),
    "env_from_secrets": ("object", None),
    "prefect_api_key_secret": (None, None),
    "prefect_api_auth_string_secret": (None, None),
    "cloudsql_instances": ("array", None),
}


# -- fixtures and helpers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stub() -> Iterator[CloudRunStub]:
    with CloudRunStub() as server:
        yield server


@pytest.fixture
def provider(stub: CloudRunStub) -> CloudRunProvider:
    return CloudRunProvider(
        credentials=AnonymousCredentials(), api_endpoint=stub.endpoint, project=PROJECT, sweep_interval=None
    )


def _template() -> dict[str, Any]:
    template: dict[str, Any] = json.loads(TEMPLATE.read_text())
    return template


def render_job(
    job_variables: dict[str, Any], *, run_id: str | None = None, template: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A job as the dispatcher makes it: template validated, variables resolved, rendered, run context injected."""
    template = template or _template()
    templating.validate_template(template)
    values = templating.resolve_job_variables(template, None, job_variables, None)
    job = templating.render(template["job_configuration"], values, {})
    run_id = run_id or str(uuid.uuid4())
    return templating.inject_run_context(
        job,
        run_id=run_id,
        deployment="nightly",
        pool="gcp pool",
        queue="default",
        parameters={"day": "2026-03-01"},
        callback_url=f"http://127.0.0.1:4300/callbacks/runs/{run_id}",
        callback_token=TOKEN,
        run_name="silent-heron",
    )


def submit(provider: CloudRunProvider, variables: dict[str, Any] | None = None, **kw: Any) -> tuple[str, str]:
    """Submit a fresh run's first attempt; (run id, infrastructure id)."""
    run_id = str(uuid.uuid4())
    job = provider.validate(render_job({"image": "flows:1", **(variables or {})}, run_id=run_id))
    return run_id, provider.submit(job, idempotency_key=f"{run_id}-1", **kw)


def job_name(run_id: str) -> str:
    return f"projects/{PROJECT}/locations/us-central1/jobs/pushpool-{run_id}"


def created_body(stub: CloudRunStub, run_id: str) -> dict[str, Any]:
    body: dict[str, Any] = stub.jobs[job_name(run_id)]
    return body


# -- the template and the model --------------------------------------------------------------------------------


def test_template_has_prefect_s_variables_with_their_types_and_defaults() -> None:
    template = _template()
    templating.validate_template(template)
    properties = template["variables"]["properties"]
    assert set(properties) == set(PREFECT_VARIABLES)
    for name, (kind, default) in PREFECT_VARIABLES.items():
        prop = properties[name]
        if kind is not None:
            assert kind == prop["type"] or kind in prop["type"], name
        assert prop.get("default") == default, name
    assert properties["launch_stage"]["enum"][:3] == ["ALPHA", "BETA", "GA"]
    assert properties["timeout"]["maximum"] == 604800


def test_template_keys_are_the_model_s_fields_and_its_default_render_validates(provider: CloudRunProvider) -> None:
    template = _template()
    assert set(template["job_configuration"]) == set(CloudRunJobConfiguration.model_fields)
    job = provider.validate(render_job({}))
    config = CloudRunJobConfiguration.model_validate(job)
    assert config.region == "us-central1" and config.timeout == 600 and config.keep_job is False
    assert config.job_body["template"]["template"]["containers"][0]["image"] == "prefecthq/prefect:3-latest"
    assert provider.validate(job) == job, "validate() is idempotent: its output validates to itself"


def test_prefect_s_own_template_works_verbatim(provider: CloudRunProvider, stub: CloudRunStub) -> None:
    # Prefect's cloud-run-v2 template: our job_configuration is its shape; Prefect's has client "prefect", no
    # newer secret keys, and a GcpCredentials definition that also carries service_account_info.
    prefect = _template()
    for key in ("env_from_secrets", "prefect_api_key_secret", "prefect_api_auth_string_secret", "cloudsql_instances"):
        del prefect["job_configuration"][key]
        del prefect["variables"]["properties"][key]
    prefect["job_configuration"]["job_body"]["client"] = "prefect"
    del prefect["variables"]["definitions"]["SecretKeySelector"]
    prefect["variables"]["definitions"]["GcpCredentials"]["properties"]["service_account_info"] = {"type": "object"}
    run_id = str(uuid.uuid4())
    job = provider.validate(
        render_job({"image": "flows:1", "credentials": {"project": PROJECT}}, template=prefect, run_id=run_id)
    )
    infra_id = provider.submit(job, idempotency_key=f"{run_id}-1")
    assert infra_id.startswith(job_name(run_id) + "/executions/")
    assert created_body(stub, run_id)["client"] == "prefect"


def test_every_variable_set_maps_onto_the_cloud_run_job(provider: CloudRunProvider, stub: CloudRunStub) -> None:
    run_id, _ = submit(
        provider,
        {
            "name": "Nightly Load",
            "env": {"MODE": "full"},
            "labels": {"Team": "Data Eng"},
            "command": "python -m flows.nightly --day 'a b'",
            "args": ["--fast"],
            "cpu": "2000m",
            "memory": "1Gi",
            "max_retries": 2,
            "timeout": 120,
            "launch_stage": "GA",
            "service_account_name": "flows@p.iam.gserviceaccount.com",
            "vpc_connector_name": "conn",
            "env_from_secrets": {"DB_PASSWORD": {"secret": "db", "version": "3"}},
            "prefect_api_key_secret": {"secret": "prefect-key"},
            "cloudsql_instances": ["p:us-central1:db"],
        },
    )
    body = created_body(stub, run_id)
    task = body["template"]["template"]
    container = task["containers"][0]
    assert container["command"] == ["python", "-m", "flows.nightly", "--day", "a b"]
    assert container["args"] == ["--fast"]
    assert container["resources"]["limits"] == {"cpu": "2000m", "memory": "1Gi"}
    env = {item["name"]: item for item in container["env"]}
    assert env["MODE"]["value"] == "full" and env["PUSHPOOL_RUN_ID"]["value"] == run_id
    assert env["DB_PASSWORD"]["valueSource"]["secretKeyRef"] == {"secret": "db", "version": "3"}
    assert env["PREFECT_API_KEY"]["valueSource"]["secretKeyRef"] == {"secret": "prefect-key", "version": "latest"}
    assert task["timeout"] == "120s" and task["maxRetries"] == 2
    assert task["serviceAccount"] == "flows@p.iam.gserviceaccount.com"
    assert task["vpcAccess"] == {"connector": "conn"}
    assert task["volumes"][0]["cloudSqlInstance"]["instances"] == ["p:us-central1:db"]
    assert body["launchStage"] in ("GA", 4)
    assert body["labels"]["team"] == "data_eng" and body["labels"]["pushpool-run-id"] == run_id
    assert body["labels"]["pushpool-pool"] == "gcp_pool" and body["labels"]["pushpool-name"] == "nightly_load"
    assert body["template"]["labels"] == body["labels"], "executions carry the labels too"


def test_unset_options_are_left_out_of_the_job(provider: CloudRunProvider, stub: CloudRunStub) -> None:
    run_id, _ = submit(provider)
    task = created_body(stub, run_id)["template"]["template"]
    assert "vpcAccess" not in task and "serviceAccount" not in task
    assert "command" not in task["containers"][0] and "args" not in task["containers"][0]


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        ({"image": ""}, "image: is required"),
        (
            {"credentials": {"service_account_info": {"private_key": "k"}}},
            "credentials.service_account_info: pushpool never stores credentials",
        ),
        ({"region": "Mars North"}, "region: 'Mars North' is not a Google Cloud region"),
        ({"labels": {"goog-owner": "me"}}, "label keys starting with run.googleapis.com or goog- are Google's"),
        ({"labels": {f"l{i}": "v" for i in range(61)}}, "at most 64 labels"),
        ({"command": "python 'unclosed"}, "command: cannot be split"),
    ],
)
def test_validate_names_the_field_and_the_rule(
    provider: CloudRunProvider, variables: dict[str, Any], words: str
) -> None:
    with pytest.raises(InvalidInput, match=words):
        provider.validate(render_job(variables))


def test_validate_refuses_what_pushpool_owns_and_keys_it_does_not_know(provider: CloudRunProvider) -> None:
    job = render_job({})
    job["job_body"]["name"] = "projects/p/locations/r/jobs/mine"
    with pytest.raises(InvalidInput, match="job_body: name is set by pushpool"):
        provider.validate(job)
    job = render_job({})
    job["cluster"] = "x"
    with pytest.raises(InvalidInput, match="cluster: is not a setting of a cloud-run-v2:push job; allowed: job_body"):
        provider.validate(job)
    job = render_job({})
    del job["job_body"]["template"]["template"]["containers"]
    with pytest.raises(InvalidInput, match="must hold template.template.containers"):
        provider.validate(job)


def test_job_ids_are_valid_cloud_run_ids_derived_from_the_run() -> None:
    import re

    valid = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
    run_id = str(uuid.uuid4())
    assert job_id_for_run(run_id) == f"pushpool-{run_id}"
    for odd in ("Run_With Caps", "x" * 80, "ends-with-", "ümlaut"):
        derived = job_id_for_run(odd)
        assert valid.fullmatch(derived) and derived == job_id_for_run(odd), odd
    assert job_id_for_run("a/b") != job_id_for_run("a:b")


def test_only_the_provider_s_clients_import_google_cloud_run() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        import dispatcher.dispatch
        from dispatcher import templating
        from dispatcher.providers.base import Providers
        template = json.load(open("templates/cloud-run-v2-push.json"))
        job = templating.render(template["job_configuration"], templating.variable_defaults(template), {})
        Providers().get("cloud-run-v2:push").validate(job)
        loaded = sorted(m for m in sys.modules if m.startswith(("google.cloud", "google.auth", "grpc")))
        assert not loaded, loaded
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_registry_gives_the_provider_without_credentials_or_network() -> None:
    loaded = Providers().get("cloud-run-v2:push")
    assert isinstance(loaded, CloudRunProvider)
    typed: Provider = loaded
    assert typed.validate(render_job({}))["region"] == "us-central1"


# -- submission ------------------------------------------------------------------------------------------------


def test_submit_creates_one_job_and_starts_one_execution(provider: CloudRunProvider, stub: CloudRunStub) -> None:
    before = len(stub.requests)
    run_id, infra_id = submit(provider)
    assert infra_id == f"{job_name(run_id)}/executions/pushpool-{run_id}-start"
    assert [e["name"] for e in stub.executions_of(job_name(run_id))] == [infra_id]
    assert created_body(stub, run_id)["startExecutionToken"] == "start"
    routes = [route for route, _ in stub.requests[before:] if route != "get_operation"]
    assert routes == ["create_job"], "one call creates the job and starts its execution, nothing else"


def test_the_job_id_and_start_token_fit_cloud_run_s_length_rule(provider: CloudRunProvider, stub: CloudRunStub) -> None:
    # A run sent back by `flow-run retry` many times has a long head; Cloud Run refuses a job id and token of
    # 63 characters or more together (the stub answers 400 as Cloud Run does), so such a head gets a digest.
    long_head = f"{uuid.uuid4()}-r{'9' * 12}"
    job_id = job_id_for_run(long_head)
    assert len(job_id) + len("start") < 63 and job_id.startswith("pushpool-")
    assert job_id_for_run(f"{uuid.uuid4()}-r12").endswith("-r12"), "usual heads keep their readable id"
    job = provider.validate(render_job({"image": "flows:1"}))
    infra_id = provider.submit(job, idempotency_key=f"{long_head}-1")
    assert infra_id.endswith(f"/jobs/{job_id}/executions/{job_id}-start")


def test_a_template_cannot_set_the_start_token(provider: CloudRunProvider) -> None:
    job = render_job({"image": "flows:1"})
    job["job_body"]["runExecutionToken"] = "mine"
    with pytest.raises(InvalidInput, match="job_body: runExecutionToken: set by pushpool"):
        provider.validate(job)


def test_a_repeated_or_crashed_submission_finds_the_first_execution(
    provider: CloudRunProvider, stub: CloudRunStub
) -> None:
    run_id = str(uuid.uuid4())
    job = provider.validate(render_job({"image": "flows:1"}, run_id=run_id))
    first = provider.submit(job, idempotency_key=f"{run_id}-1")
    # The same key again (a retry after a timeout), a resubmission, and a later attempt: all find it.
    assert provider.submit(job, idempotency_key=f"{run_id}-1") == first
    assert provider.submit(job, idempotency_key=f"{run_id}-1", resubmission=True) == first
    assert provider.submit(job, idempotency_key=f"{run_id}-2") == first
    assert len(stub.executions_of(job_name(run_id))) == 1


def test_submits_of_one_attempt_racing_from_several_dispatchers_start_one_execution(stub: CloudRunStub) -> None:
    from concurrent.futures import ThreadPoolExecutor

    run_id = str(uuid.uuid4())
    providers = [
        CloudRunProvider(
            credentials=AnonymousCredentials(), api_endpoint=stub.endpoint, project=PROJECT, sweep_interval=None
        )
        for _ in range(4)
    ]
    job = providers[0].validate(render_job({"image": "flows:1"}, run_id=run_id))
    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(lambda p: p.submit(job, idempotency_key=f"{run_id}-1"), providers))
    assert len(set(ids)) == 1
    assert [e["name"] for e in stub.executions_of(job_name(run_id))] == ids[:1]


def _quick(stub: CloudRunStub) -> CloudRunProvider:
    """A provider that waits only briefly for an execution another submit is starting."""
    return CloudRunProvider(
        credentials=AnonymousCredentials(),
        api_endpoint=stub.endpoint,
        project=PROJECT,
        sweep_interval=None,
        creator_wait=0.2,
    )


def test_an_abandoned_submit_and_a_resubmission_of_its_attempt_start_one_execution(stub: CloudRunStub) -> None:
    """The race the reliability suite found, without timing: a submit whose create is still under way (the
    dispatcher gave up on it, its thread goes on) and the reconciler's resubmission of the same attempt."""
    import threading

    run_id = str(uuid.uuid4())
    abandoned, reconciler = _quick(stub), _quick(stub)
    job = abandoned.validate(render_job({"image": "flows:1"}, run_id=run_id))
    results: list[str] = []
    stub.hold_starts()
    try:
        thread = threading.Thread(target=lambda: results.append(abandoned.submit(job, idempotency_key=f"{run_id}-1")))
        thread.start()
        while job_name(run_id) not in stub.jobs and thread.is_alive():
            thread.join(0.01)  # until the abandoned submit's create reached Cloud Run
        assert job_name(run_id) in stub.jobs
        try:
            results.append(reconciler.submit(job, idempotency_key=f"{run_id}-1", resubmission=True))
        except ProviderError as exc:
            assert exc.transient and "still creating job" in str(exc)
    finally:
        stub.release_starts()
    thread.join(30)
    results.append(reconciler.submit(job, idempotency_key=f"{run_id}-1", resubmission=True))
    executions = [e["name"] for e in stub.executions_of(job_name(run_id))]
    assert len(executions) == 1, executions
    assert set(results) == set(executions) and len(results) == 2


def test_a_start_that_failed_is_retried_by_creating_the_job_again(stub: CloudRunStub) -> None:
    provider = _quick(stub)
    run_id = str(uuid.uuid4())
    job = provider.validate(render_job({"image": "flows:1"}, run_id=run_id))
    stub.fail_start("Quota exceeded for executions in us-central1.")
    with pytest.raises(ProviderError, match="create_job failed: Quota exceeded") as failed:
        provider.submit(job, idempotency_key=f"{run_id}-1")
    assert failed.value.transient
    assert job_name(run_id) in stub.jobs and not stub.executions_of(job_name(run_id))
    assert provider.find(f"{run_id}-1") is None, "a job whose start failed launched nothing"
    # The next attempt finds the settled job without its execution: it deletes it (it never ran) and says so.
    with pytest.raises(ProviderError, match="did not start its execution \\(Quota exceeded") as failed:
        provider.submit(job, idempotency_key=f"{run_id}-2")
    assert failed.value.transient and job_name(run_id) not in stub.jobs
    infra_id = provider.submit(job, idempotency_key=f"{run_id}-3")
    assert [e["name"] for e in stub.executions_of(job_name(run_id))] == [infra_id]
    assert stub.calls("run_job") == 0 or all(
        job_name(run_id) not in path for route, path in stub.requests if route == "run_job"
    )


def _create_without_token(stub: CloudRunStub, run_id: str) -> None:
    """The job as an older pushpool created it: no start token, its execution left to a run_job call."""
    import urllib.request

    body = build_job_body(parse_job(render_job({"image": "flows:1"}, run_id=run_id)))
    del body["startExecutionToken"]
    request = urllib.request.Request(
        f"{stub.endpoint}/v2/projects/{PROJECT}/locations/us-central1/jobs?jobId=pushpool-{run_id}",
        data=json.dumps(body).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


def test_a_job_an_older_pushpool_created_is_found_never_run_again(stub: CloudRunStub) -> None:
    provider = _quick(stub)
    ran, idle = str(uuid.uuid4()), str(uuid.uuid4())
    for run_id in (ran, idle):
        _create_without_token(stub, run_id)
    provider_clients = provider._clients.get(None)
    execution = provider_clients.jobs.run_job(name=job_name(ran)).metadata.name
    job = provider.validate(render_job({"image": "flows:1"}, run_id=ran))
    assert provider.submit(job, idempotency_key=f"{ran}-1", resubmission=True) == execution
    runs_before = stub.calls("run_job")
    job = provider.validate(render_job({"image": "flows:1"}, run_id=idle))
    with pytest.raises(ProviderError) as refused:
        provider.submit(job, idempotency_key=f"{idle}-1", resubmission=True)
    assert not refused.value.transient
    assert f"Cloud Run job pushpool-{idle} exists without an execution" in str(refused.value)
    assert "pushpool flow-run retry" in str(refused.value)
    assert stub.calls("run_job") == runs_before and not stub.executions_of(job_name(idle))


@pytest.mark.parametrize(
    ("route", "status"),
    [("create_job", 429), ("create_job", 503), ("create_job", 504), ("create_job", 500)],
)
def test_throttling_and_unavailability_are_transient(
    provider: CloudRunProvider, stub: CloudRunStub, route: str, status: int
) -> None:
    stub.fail(route, status)
    with pytest.raises(ProviderError) as failed:
        submit(provider)
    assert failed.value.transient
    assert f"Cloud Run {route} failed: scripted {status} for {route} (HTTP {status}" in str(failed.value)
    words = {429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED", 500: "INTERNAL"}[status]
    assert str(failed.value).endswith(f"{words})"), "Google's own status word is kept"


@pytest.mark.parametrize(
    ("status", "word"), [(400, "INVALID_ARGUMENT"), (403, "PERMISSION_DENIED"), (404, "NOT_FOUND")]
)
def test_refusals_are_permanent_in_cloud_run_s_words(
    provider: CloudRunProvider, stub: CloudRunStub, status: int, word: str
) -> None:
    stub.fail("create_job", status)
    with pytest.raises(ProviderError) as failed:
        submit(provider)
    assert not failed.value.transient
    assert str(failed.value) == f"Cloud Run create_job failed: scripted {status} for create_job (HTTP {status} {word})"


def test_a_slow_answer_is_a_transient_timeout(stub: CloudRunStub) -> None:
    provider = CloudRunProvider(
        credentials=AnonymousCredentials(),
        api_endpoint=stub.endpoint,
        project=PROJECT,
        call_timeout=0.3,
        sweep_interval=None,
    )
    stub.delay("create_job", 1.0)
    with pytest.raises(ProviderError, match="Cloud Run create_job failed: ReadTimeout") as failed:
        submit(provider)
    assert failed.value.transient


def test_an_unreachable_endpoint_is_transient() -> None:
    provider = CloudRunProvider(
        credentials=AnonymousCredentials(), api_endpoint="http://127.0.0.1:9", project=PROJECT, sweep_interval=None
    )
    with pytest.raises(ProviderError, match="Cloud Run create_job failed: ConnectionError") as failed:
        submit(provider)
    assert failed.value.transient


def test_the_run_token_never_reaches_an_error_message(provider: CloudRunProvider, stub: CloudRunStub) -> None:
    from dispatcher.providers.cloud_run.provider import _redacted

    error = _redacted(ProviderError(f"Cloud Run create_job failed: bad env value {TOKEN}", transient=False), [TOKEN])
    assert TOKEN not in str(error) and "[redacted]" in str(error)


def test_a_job_without_a_project_is_refused_in_words(stub: CloudRunStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("PUSHPOOL_CLOUD_RUN_PROJECT", raising=False)
    provider = CloudRunProvider(credentials=AnonymousCredentials(), api_endpoint=stub.endpoint, sweep_interval=None)
    with pytest.raises(ProviderError, match="no Google Cloud project for this job: set credentials.project"):
        submit(provider)


# -- status, cancel, find, logs --------------------------------------------------------------------------------


def test_status_follows_the_execution_and_deletes_the_ended_job(provider: CloudRunProvider, stub: CloudRunStub) -> None:
    run_id, infra_id = submit(provider)
    assert provider.status(infra_id).state is JobState.PENDING
    stub.start_running(infra_id)
    assert provider.status(infra_id).state is JobState.RUNNING
    stub.finish(infra_id, exit_code=0)
    done = provider.status(infra_id)
    assert (done.state, done.exit_code) == (JobState.COMPLETED, 0)
    assert job_name(run_id) not in stub.jobs, "the job is deleted once its run ended"
    assert provider.status(infra_id) == done, "the instance that deleted it still knows how it ended"
    cold = CloudRunProvider(credentials=AnonymousCredentials(), api_endpoint=stub.endpoint, sweep_interval=None)
    assert cold.status(infra_id).state is JobState.MISSING


def test_keep_job_keeps_the_ended_job(provider: CloudRunProvider, stub: CloudRunStub) -> None:
    run_id, infra_id = submit(provider, {"keep_job": True})
    stub.finish(infra_id, exit_code=1)
    failed = provider.status(infra_id)
    assert (failed.state, failed.exit_code) == (JobState.FAILED, 1)
    assert "The container exited with an exit code of 1" in str(failed.message)
    assert job_name(run_id) in stub.jobs


def test_an_execution_that_never_started_is_crashed(provider: CloudRunProvider, stub: CloudRunStub) -> None:
    _, infra_id = submit(provider)
    stub.finish(infra_id, never_started="Image 'flows:1' not found.")
    status = provider.status(infra_id)
    assert status.state is JobState.CRASHED
    assert status.message is not None and "Image 'flows:1' not found. (CONTAINER_MISSING)" in status.message


@pytest.mark.parametrize(
    ("execution", "state", "exit_code"),
    [
        ({"task_count": 1}, JobState.PENDING, None),
        ({"running_count": 1}, JobState.RUNNING, None),
        ({"completion_time": "t", "succeeded_count": 1, "task_count": 1}, JobState.COMPLETED, 0),
        ({"completion_time": "t", "failed_count": 1, "conditions": [
            {"type": "Completed", "state": "CONDITION_FAILED", "message": "exited with an exit code of 137"}]},
         JobState.FAILED, 137),
        ({"completion_time": "t", "cancelled_count": 1}, JobState.CANCELLED, None),
        ({"conditions": [{"type": "Completed", "state": "CONDITION_FAILED", "execution_reason": "CANCELLED"}]},
         JobState.CANCELLED, None),
        ({"completion_time": "t", "conditions": [
            {"type": "Completed", "state": "CONDITION_FAILED", "message": "Quota exceeded"}]}, JobState.CRASHED, None),
    ],
)  # fmt: skip
def test_execution_status_maps_cloud_run_s_words(
    execution: dict[str, Any], state: JobState, exit_code: int | None
) -> None:
    status = execution_status({"name": "projects/p/locations/r/jobs/j/executions/e", **execution})
    assert (status.state, status.exit_code) == (state, exit_code)
    assert status.message is not None and status.message.startswith("Cloud Run execution e: ")


def test_cancel_stops_the_execution_and_status_confirms(provider: CloudRunProvider, stub: CloudRunStub) -> None:
    _, infra_id = submit(provider)
    stub.start_running(infra_id)
    provider.cancel(infra_id)
    provider.cancel(infra_id)  # a repeat is harmless
    assert provider.status(infra_id).state is JobState.CANCELLED
    provider.cancel(infra_id)  # the job is gone now: nothing to stop, no error
    assert stub.calls("cancel_execution") >= 2


def test_find_answers_for_a_key_from_a_cold_instance(provider: CloudRunProvider, stub: CloudRunStub) -> None:
    run_id, infra_id = submit(provider)
    cold = CloudRunProvider(
        credentials=AnonymousCredentials(), api_endpoint=stub.endpoint, project=PROJECT, sweep_interval=None
    )
    assert cold.find(f"{run_id}-1") == infra_id
    assert cold.find(f"{run_id}-2") == infra_id, "one job per run, whatever the attempt"
    assert cold.find(f"{uuid.uuid4()}-1") is None
    # A job created without its execution (an older pushpool's, before its run_job) launched nothing.
    other = str(uuid.uuid4())
    _create_without_token(stub, other)
    assert cold.find(f"{other}-1") is None


def test_find_without_any_project_cannot_say_none(stub: CloudRunStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("PUSHPOOL_CLOUD_RUN_PROJECT", raising=False)
    lost = CloudRunProvider(credentials=AnonymousCredentials(), api_endpoint=stub.endpoint, sweep_interval=None)
    with pytest.raises(ProviderError, match="no project is known"):
        lost.find(f"{uuid.uuid4()}-1")


def test_logs_give_the_log_uri_and_the_entries(provider: CloudRunProvider, stub: CloudRunStub) -> None:
    _, infra_id = submit(provider)
    stub.log_entries[infra_id] = ["starting", "rows loaded: 42", "\x1b[2Jcleared?"]
    text = provider.logs(infra_id)
    assert text.splitlines() == [
        f"Logs: https://console.cloud.google.com/logs/viewer?execution={infra_id}",
        "starting",
        "rows loaded: 42",
        "\\x1b[2Jcleared?",
    ], "what the job wrote is shown with its control characters escaped"
    request = stub.bodies["list_entries"][-1]
    assert 'labels."run.googleapis.com/execution_name"="' + infra_id.rsplit("/", 1)[-1] in request["filter"]
    assert provider_logs("cloud-run-v2:push", infra_id, Providers({"cloud-run-v2:push": provider})) == text


def test_logs_of_a_deleted_job_still_point_at_cloud_logging(provider: CloudRunProvider, stub: CloudRunStub) -> None:
    _, infra_id = submit(provider)
    stub.finish(infra_id)
    provider.status(infra_id)  # deletes the job
    first = provider.logs(infra_id).splitlines()[0]
    assert first.startswith("Logs: https://console.cloud.google.com/logs/query;query=") and PROJECT in first


def test_logs_without_google_cloud_logging_give_the_uri_and_say_how_to_get_more(stub: CloudRunStub) -> None:
    code = textwrap.dedent(
        f"""
        import sys, uuid
        sys.modules["google.cloud.logging"] = None  # as if it were not installed
        sys.path.insert(0, "tests")
        from google.auth.credentials import AnonymousCredentials
        from test_provider_cloud_run import render_job
        from dispatcher.providers.cloud_run import CloudRunProvider
        p = CloudRunProvider(credentials=AnonymousCredentials(), api_endpoint={stub.endpoint!r}, project="p",
                             sweep_interval=None)
        run_id = str(uuid.uuid4())
        infra = p.submit(p.validate(render_job({{"image": "x"}}, run_id=run_id)), idempotency_key=run_id + "-1")
        print(p.logs(infra))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Logs: ") and "install google-cloud-logging" in result.stdout


def test_sweep_deletes_ended_jobs_but_not_running_or_kept_ones(provider: CloudRunProvider, stub: CloudRunStub) -> None:
    ended, ended_id = submit(provider)
    running, _ = submit(provider)
    kept, kept_id = submit(provider, {"keep_job": True})
    stub.finish(ended_id)
    stub.finish(kept_id)
    location = f"projects/{PROJECT}/locations/us-central1"
    assert job_name(ended) not in provider.sweep(location), "an end just now is left for the reconciler to read"
    deleted = provider.sweep(location, min_age_seconds=0)
    assert job_name(ended) in deleted and job_name(ended) not in stub.jobs
    assert job_name(running) in stub.jobs and job_name(kept) in stub.jobs


def test_a_submit_starts_a_background_sweep_at_most_once_per_interval(stub: CloudRunStub) -> None:
    provider = CloudRunProvider(
        credentials=AnonymousCredentials(), api_endpoint=stub.endpoint, project=PROJECT, sweep_interval=3600
    )
    before = stub.calls("list_jobs")
    submit(provider)
    provider.wait_for_sweep()
    submit(provider)
    provider.wait_for_sweep()
    assert stub.calls("list_jobs") == before + 1


# -- credentials -----------------------------------------------------------------------------------------------


def test_a_credentials_file_of_the_wrong_kind_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "creds.json"
    path.write_text(json.dumps({"type": "authorized_userX", "client_secret": "do-not-print"}))
    with pytest.raises(ProviderError, match="has type 'authorized_userX'") as refused:
        Clients().get(str(path))
    assert "do-not-print" not in str(refused.value) and not refused.value.transient
    with pytest.raises(ProviderError, match="cannot be read"):
        Clients().get(str(tmp_path / "missing.json"))


def test_an_external_account_configuration_gives_keyless_credentials(tmp_path: Path) -> None:
    # What `gcloud iam workload-identity-pools create-cred-config ... --aws` writes: no key anywhere.
    config = {
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/aws/providers/lambda",
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
        "token_url": "https://sts.googleapis.com/v1/token",
        "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/d@p.iam.gserviceaccount.com:generateAccessToken",
        "credential_source": {
            "environment_id": "aws1",
            "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone",
            "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials",
            "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
        },
    }
    path = tmp_path / "wif.json"
    path.write_text(json.dumps(config))
    clients = Clients(api_endpoint="http://127.0.0.1:9").get(str(path))
    assert type(clients.credentials).__module__ == "google.auth.aws"
    assert Clients(api_endpoint="http://127.0.0.1:9").get(str(path)) is not clients
    shared = Clients(api_endpoint="http://127.0.0.1:9")
    assert shared.get(str(path)) is shared.get(str(path)), "clients are built once and reused"


def test_build_job_body_is_pure_and_leaves_the_configuration_alone() -> None:
    config = parse_job(render_job({"image": "x", "env": {"A": "1"}}))
    before = config.model_dump()
    body = build_job_body(config)
    assert config.model_dump() == before
    assert {"name": "A", "value": "1"} in body["template"]["template"]["containers"][0]["env"]


def test_infrastructure_ids_name_the_execution_and_any_credentials_file(provider: CloudRunProvider) -> None:
    from dispatcher.providers.cloud_run.provider import make_infrastructure_id, split_infrastructure_id

    execution = "projects/p/locations/us-central1/jobs/pushpool-x/executions/pushpool-x-abcde"
    assert split_infrastructure_id(execution) == (None, execution)
    with_file = make_infrastructure_id(execution, "/var/task/gcp-wif.json")
    assert with_file == f"/var/task/gcp-wif.json|{execution}"
    assert split_infrastructure_id(with_file) == ("/var/task/gcp-wif.json", execution)
    status = provider.status("arn:aws:ecs:us-east-1:1:task/c/t")
    assert status.state is JobState.MISSING and "is not a Cloud Run execution name" in str(status.message)
    with pytest.raises(ProviderError, match="cannot cancel 'projects/p': .* is not a Cloud Run execution name"):
        provider.cancel("projects/p")


def test_a_run_sent_back_by_retry_gets_a_job_of_its_own(provider: CloudRunProvider, stub: CloudRunStub) -> None:
    run_id = str(uuid.uuid4())
    job = provider.validate(render_job({"image": "flows:1", "keep_job": True}, run_id=run_id))
    first_life = provider.submit(job, idempotency_key=f"{run_id}-1")
    second_life = provider.submit(job, idempotency_key=f"{run_id}-r1-1")  # dispatch.idempotency_key's form
    assert first_life != second_life
    assert second_life.startswith(f"projects/{PROJECT}/locations/us-central1/jobs/pushpool-{run_id}-r1/executions/")
    assert provider.find(f"{run_id}-r1-1") == second_life and provider.find(f"{run_id}-2") == first_life

"""ACIProvider through the real Azure SDK clients, over HTTP, against the ARM stub in tests/aci_stub.py."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aci_stub import RESOURCE_GROUP, SUBSCRIPTION, ACIStub, StubCredential
from test_aci_model import BASE, render_job

from dispatcher.errors import ProviderError
from dispatcher.providers.aci import ACIProvider
from dispatcher.providers.aci.model import group_name
from dispatcher.providers.base import JobState, provider_logs


@pytest.fixture
def stub() -> Iterator[ACIStub]:
    with ACIStub() as server:
        yield server


def make_provider(stub: ACIStub, **kwargs: Any) -> ACIProvider:
    """A provider on the stub; background sweeps off, so request counts are the test's own (see the sweep tests)."""
    kwargs = {"read_timeout": 2, "sweep_interval_seconds": None, **kwargs}
    return ACIProvider(StubCredential(), base_url=stub.url, polling_interval=0, **kwargs)


@pytest.fixture
def provider(stub: ACIStub) -> ACIProvider:
    return make_provider(stub)


def job(**variables: Any) -> tuple[dict[str, Any], str]:
    run_id = str(uuid.uuid4())
    return render_job({**BASE, "entrypoint": "", **variables}, run_id=run_id), run_id


def test_submit_creates_one_group_named_from_the_run_with_restart_policy_never(
    stub: ACIStub, provider: ACIProvider
) -> None:
    rendered, run_id = job(command="python flow.py")
    infra_id = provider.submit(rendered, idempotency_key=f"{run_id}-1")
    name = group_name(run_id)
    assert infra_id.endswith(
        f"/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.ContainerInstance/containerGroups/{name}"
    )
    group = stub.group(name)
    assert group is not None
    assert group["location"] == "westeurope"  # the resource group's
    assert group["properties"]["restartPolicy"] == "Never"
    assert group["properties"]["containers"][0]["properties"]["command"] == ["python", "flow.py"]
    assert stub.count("GET", "operation") >= 1  # the PUT's Azure-AsyncOperation was followed
    put = next(r for r in stub.requests if r.method == "PUT")
    assert put.headers["Authorization"] == "Bearer stub-token"
    assert provider.status(infra_id).state is JobState.RUNNING


def test_the_callback_token_is_a_secure_value_never_shown_by_a_get(stub: ACIStub, provider: ACIProvider) -> None:
    rendered, run_id = job()
    provider.submit(rendered, idempotency_key=f"{run_id}-1")
    kept = stub.group(group_name(run_id))
    assert kept is not None
    env = {e["name"]: e for e in kept["properties"]["containers"][0]["properties"]["environmentVariables"]}
    assert env["PUSHPOOL_CALLBACK_TOKEN"] == {"name": "PUSHPOOL_CALLBACK_TOKEN", "secureValue": "token-of-the-run"}
    gets = [r for r in stub.requests if r.method == "PUT"]
    assert "token-of-the-run" in str(gets[0].body)  # sent once, in the PUT
    group = provider._get(provider.client(SUBSCRIPTION), RESOURCE_GROUP, group_name(run_id), "GET")
    assert "token-of-the-run" not in str(group)


def test_a_resubmission_finds_the_group_instead_of_putting_it_again(stub: ACIStub, provider: ACIProvider) -> None:
    rendered, run_id = job()
    first = provider.submit(rendered, idempotency_key=f"{run_id}-1")
    gets = stub.count("GET", "get")
    stub.set_container(group_name(run_id), "Running")
    again = make_provider(stub).submit(rendered, idempotency_key=f"{run_id}-1", resubmission=True)
    later_attempt = provider.submit(rendered, idempotency_key=f"{run_id}-2")
    same_key = provider.submit(rendered, idempotency_key=f"{run_id}-1")
    assert first == again == later_attempt == same_key
    assert stub.count("PUT", "put") == 1  # a PUT on a live group would have restarted it
    assert stub.count("GET", "get") == gets + 3  # one before each PUT that was spared


def test_a_run_sent_back_by_retry_gets_a_new_group_not_its_earlier_lifes(stub: ACIStub, provider: ACIProvider) -> None:
    rendered, run_id = job(keep_container_group=True)
    first_life = provider.submit(rendered, idempotency_key=f"{run_id}-1")
    stub.set_container(group_name(run_id), "Terminated", exit_code=1)
    second_life = provider.submit(rendered, idempotency_key=f"{run_id}-r1-1")  # dispatch.idempotency_key's form
    assert second_life != first_life and second_life.endswith(group_name(f"{run_id}-r1"))
    assert stub.creates == 2
    assert provider.find(f"{run_id}-r1-1") == second_life


def test_a_409_on_put_returns_the_group_another_submit_created(stub: ACIStub, provider: ACIProvider) -> None:
    rendered, run_id = job()
    make_provider(stub).submit(rendered, idempotency_key=f"{run_id}-1")
    # This submit's GET came before the other's PUT: replay that by answering its first GET "not there".
    stub.fail_next("get", 404, "ResourceNotFound", "not found")
    stub.fail_next("put", 409, "Conflict", "another operation is in progress on the container group")
    assert provider.submit(rendered, idempotency_key=f"{run_id}-1").endswith(group_name(run_id))
    assert stub.count("PUT", "put") == 2


def test_a_put_never_overwrites_a_group_created_after_its_get(stub: ACIStub, provider: ACIProvider) -> None:
    rendered, run_id = job()
    first = make_provider(stub).submit(rendered, idempotency_key=f"{run_id}-1")
    before = stub.group(group_name(run_id))
    stub.fail_next("get", 404, "ResourceNotFound", "not found")
    assert provider.submit(rendered, idempotency_key=f"{run_id}-1", resubmission=True) == first
    put = [r for r in stub.requests if r.method == "PUT"][-1]
    assert put.headers["If-None-Match"] == "*"
    assert stub.group(group_name(run_id)) == before  # answered 412, the group untouched
    assert stub.updates == 0


def test_concurrent_submits_of_one_run_create_one_group(stub: ACIStub) -> None:
    from concurrent.futures import ThreadPoolExecutor

    stub.operation_polls = 3  # the group stays in creation a while, as on Azure
    rendered, run_id = job()
    providers = [make_provider(stub) for _ in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(lambda p: p.submit(rendered, idempotency_key=f"{run_id}-1"), providers))
    assert len(set(ids)) == 1
    assert (stub.creates, stub.updates) == (1, 0)  # the others were answered 409 or 412, then found it


@pytest.mark.parametrize(("status", "code"), [(429, "TooManyRequests"), (503, "ServiceUnavailable"), (500, "Oops")])
def test_throttling_and_server_errors_are_transient_in_azures_words(
    stub: ACIStub, provider: ACIProvider, status: int, code: str
) -> None:
    rendered, run_id = job()
    stub.fail_next("put", status, code, f"the stub says {code}")
    with pytest.raises(ProviderError) as caught:
        provider.submit(rendered, idempotency_key=f"{run_id}-1")
    assert caught.value.transient
    assert f"the stub says {code}" in str(caught.value)
    assert stub.count("PUT", "put") == 1  # the SDK retried nothing: the dispatcher owns retries


def test_a_slow_answer_is_a_transient_timeout(stub: ACIStub) -> None:
    provider = make_provider(stub, read_timeout=0.3)
    rendered, run_id = job()
    stub.slow_next("put", 1.5)
    with pytest.raises(ProviderError) as caught:
        provider.submit(rendered, idempotency_key=f"{run_id}-1")
    assert caught.value.transient


@pytest.mark.parametrize(
    ("status", "code", "words"),
    [
        (400, "InvalidContainerGroupName", "the stub says no"),
        (403, "AuthorizationFailed", "the stub says no"),
    ],
)
def test_bad_requests_and_denied_access_are_permanent(
    stub: ACIStub, provider: ACIProvider, status: int, code: str, words: str
) -> None:
    rendered, run_id = job()
    stub.fail_next("put", status, code, "the stub says no")
    with pytest.raises(ProviderError) as caught:
        provider.submit(rendered, idempotency_key=f"{run_id}-1")
    assert not caught.value.transient
    assert words in str(caught.value) and code in str(caught.value)


def test_a_missing_resource_group_is_permanent_and_says_which(stub: ACIStub, provider: ACIProvider) -> None:
    rendered, run_id = job(resource_group_name="nowhere-rg")
    with pytest.raises(ProviderError, match="resource group 'nowhere-rg' does not exist") as caught:
        provider.submit(rendered, idempotency_key=f"{run_id}-1")
    assert not caught.value.transient
    assert stub.count("PUT", "put") == 0


def test_an_inaccessible_image_is_permanent_in_azures_words(stub: ACIStub, provider: ACIProvider) -> None:
    rendered, run_id = job(image="inaccessible/flows:1")
    with pytest.raises(ProviderError, match="is not accessible") as caught:
        provider.submit(rendered, idempotency_key=f"{run_id}-1")
    assert not caught.value.transient


def test_a_provisioning_that_fails_is_permanent_and_its_group_deleted(stub: ACIStub, provider: ACIProvider) -> None:
    stub.operation_status = "Failed"
    rendered, run_id = job()
    with pytest.raises(ProviderError, match="quota exceeded") as caught:
        provider.submit(rendered, idempotency_key=f"{run_id}-1")
    assert not caught.value.transient
    assert stub.group(group_name(run_id)) is None


def test_a_failed_poll_of_the_operation_leaves_the_group_to_status(stub: ACIStub, provider: ACIProvider) -> None:
    rendered, run_id = job()
    stub.fail_next("operation", 503)
    infra_id = provider.submit(rendered, idempotency_key=f"{run_id}-1")
    assert stub.group(group_name(run_id)) is not None
    assert provider.status(infra_id).state is JobState.PENDING


def test_terminated_maps_to_completed_or_failed_and_the_group_is_deleted(stub: ACIStub, provider: ACIProvider) -> None:
    ok, ok_run = job()
    bad, bad_run = job()
    ok_id = provider.submit(ok, idempotency_key=f"{ok_run}-1")
    bad_id = provider.submit(bad, idempotency_key=f"{bad_run}-1")
    stub.set_container(group_name(ok_run), "Terminated", exit_code=0)
    stub.set_container(group_name(bad_run), "Terminated", exit_code=2, current={"detailStatus": "Error"})
    assert provider.status(ok_id).state is JobState.COMPLETED
    failed = provider.status(bad_id)
    assert (failed.state, failed.exit_code) == (JobState.FAILED, 2)
    assert stub.group(group_name(ok_run)) is None and stub.group(group_name(bad_run)) is None
    assert provider.status(ok_id).state is JobState.COMPLETED  # this provider remembers what it deleted
    assert make_provider(stub).status(ok_id).state is JobState.MISSING  # another instance finds nothing


def test_a_kept_group_outlives_its_run_and_keeps_its_logs(stub: ACIStub, provider: ACIProvider) -> None:
    rendered, run_id = job(keep_container_group=True)
    infra_id = provider.submit(rendered, idempotency_key=f"{run_id}-1")
    stub.logs[group_name(run_id)] = "hello from the flow\n"
    stub.set_container(group_name(run_id), "Terminated", exit_code=0)
    assert provider.status(infra_id).state is JobState.COMPLETED
    assert stub.group(group_name(run_id)) is not None
    assert provider_logs("azure-container-instance:push", infra_id, _providers(provider)) == "hello from the flow\n"


def test_logs_of_a_deleted_group_say_why_there_are_none(stub: ACIStub, provider: ACIProvider) -> None:
    rendered, run_id = job()
    infra_id = provider.submit(rendered, idempotency_key=f"{run_id}-1")
    stub.logs[group_name(run_id)] = "line 1\n"
    assert provider.logs(infra_id) == "line 1\n"
    stub.set_container(group_name(run_id), "Terminated", exit_code=0)
    provider.status(infra_id)
    with pytest.raises(ProviderError, match="set keep_container_group"):
        provider.logs(infra_id)


def test_an_image_that_cannot_be_pulled_is_crashed_in_azures_words(stub: ACIStub, provider: ACIProvider) -> None:
    rendered, run_id = job(image="unpullable/flows:1")
    infra_id = provider.submit(rendered, idempotency_key=f"{run_id}-1")
    status = provider.status(infra_id)
    assert status.state is JobState.CRASHED
    assert 'Failed to pull image "unpullable/flows:1"' in (status.message or "")


def test_cancel_stops_then_deletes_and_a_kept_group_is_only_stopped(stub: ACIStub, provider: ACIProvider) -> None:
    gone, gone_run = job()
    kept, kept_run = job(keep_container_group=True)
    gone_id = provider.submit(gone, idempotency_key=f"{gone_run}-1")
    kept_id = provider.submit(kept, idempotency_key=f"{kept_run}-1")
    provider.cancel(gone_id)
    provider.cancel(kept_id)
    assert stub.count("POST", "stop") == 2
    assert provider.status(gone_id).state is JobState.CANCELLED
    assert provider.status(kept_id).state is JobState.CANCELLED
    assert stub.group(group_name(gone_run)) is None
    kept_group = stub.group(group_name(kept_run))
    assert kept_group is not None and kept_group["properties"]["instanceView"]["state"] == "Stopped"
    provider.cancel(gone_id)  # already gone: a no-op
    make_provider(stub).cancel(gone_id)
    assert stub.count("POST", "stop") == 2


def test_cancel_of_an_ended_run_does_not_stop_or_change_its_outcome(stub: ACIStub, provider: ACIProvider) -> None:
    rendered, run_id = job()
    infra_id = provider.submit(rendered, idempotency_key=f"{run_id}-1")
    stub.set_container(group_name(run_id), "Terminated", exit_code=0)
    provider.cancel(infra_id)
    assert stub.count("POST", "stop") == 0
    assert provider.status(infra_id).state is JobState.COMPLETED


def test_find_gets_the_group_of_the_keys_run(stub: ACIStub, provider: ACIProvider, monkeypatch: Any) -> None:
    rendered, run_id = job()
    infra_id = provider.submit(rendered, idempotency_key=f"{run_id}-1")
    assert provider.find(f"{run_id}-1") == infra_id
    assert provider.find(f"{uuid.uuid4()}-1") is None
    # A fresh dispatcher knows only its environment: the subscription's listing finds the group.
    fresh = make_provider(stub)
    with pytest.raises(ProviderError, match="AZURE_SUBSCRIPTION_ID"):
        fresh.find(f"{run_id}-1")
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUBSCRIPTION)
    listed = stub.count("GET", "list")
    assert fresh.find(f"{run_id}-1") == infra_id
    assert stub.count("GET", "list") == listed + 1
    # Told its resource group, a fresh one GETs the group there, with no listing.
    configured = make_provider(stub, subscription_id=SUBSCRIPTION, resource_group=RESOURCE_GROUP)
    assert configured.find(f"{run_id}-1") == infra_id
    assert stub.count("GET", "list") == listed + 1


def test_clients_are_built_lazily_once_and_credentials_never_logged(
    stub: ACIStub, caplog: pytest.LogCaptureFixture
) -> None:
    credential = StubCredential()
    provider = ACIProvider(credential, base_url=stub.url, polling_interval=0)
    assert provider._clients == {}  # constructing needs no credentials and no network
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        rendered, run_id = job()
        provider.submit(rendered, idempotency_key=f"{run_id}-1")
    assert len(provider._clients) == 1
    assert credential.calls == 1  # the token is cached by the SDK's policy, the client reused
    assert "stub-token" not in caplog.text and "token-of-the-run" not in caplog.text


def test_a_bad_job_is_refused_before_any_call(stub: ACIStub, provider: ACIProvider) -> None:
    rendered, run_id = job(cpu=-1)
    with pytest.raises(ProviderError, match="cpu: input should be greater than 0") as caught:
        provider.submit(rendered, idempotency_key=f"{run_id}-1")
    assert not caught.value.transient
    assert stub.requests == []


def _providers(provider: ACIProvider) -> Any:
    from dispatcher.providers.base import Providers

    return Providers({"azure-container-instance:push": provider})


# -- the sweep: ended groups whose run ended through its callback ----------------------------------------------


def test_the_sweep_deletes_only_pushpools_unkept_groups_ended_long_enough_ago(
    stub: ACIStub, provider: ACIProvider
) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    long_ago = (now - timedelta(hours=2)).isoformat()
    recently = (now - timedelta(minutes=5)).isoformat()
    runs = {name: job(keep_container_group=name == "kept") for name in ("old", "recent", "running", "kept")}
    for rendered, run_id in runs.values():
        provider.submit(rendered, idempotency_key=f"{run_id}-1")
    for name, finished in (("old", long_ago), ("recent", recently), ("kept", long_ago)):
        stub.set_container(group_name(runs[name][1]), "Terminated", exit_code=0, current={"finishTime": finished})
    foreign = stub.group(group_name(runs["old"][1]))
    assert foreign is not None
    stub.groups[(SUBSCRIPTION, RESOURCE_GROUP, "someone-elses")] = {**foreign, "name": "someone-elses", "tags": {}}

    assert provider.sweep(SUBSCRIPTION, RESOURCE_GROUP, now=now) == [group_name(runs["old"][1])]
    left = {key[2] for key in stub.groups}
    assert group_name(runs["old"][1]) not in left
    assert {group_name(runs[n][1]) for n in ("recent", "running", "kept")} | {"someone-elses"} <= left


def test_a_submit_starts_a_sweep_at_most_once_per_interval(stub: ACIStub) -> None:
    import time

    provider = make_provider(stub, sweep_interval_seconds=600)
    for _ in range(3):
        rendered, run_id = job()
        provider.submit(rendered, idempotency_key=f"{run_id}-1")
    deadline = time.monotonic() + 5
    while stub.count("GET", "list_rg") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    assert stub.count("GET", "list_rg") == 1

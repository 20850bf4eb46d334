"""`FakeProvider`: the scriptable provider other tests drive the dispatcher with must itself behave."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import pytest

from dispatcher.errors import InvalidInput, ProviderError
from dispatcher.providers.base import JobState, JobStatus, Provider, Providers
from dispatcher.providers.fake import FakeProvider

JOB = {"command": ["python", "flow.py"], "env": {"PUSHPOOL_RUN_ID": "r-1"}}


def test_it_satisfies_the_provider_protocol_and_registry() -> None:
    fake = FakeProvider()
    typed: Provider = fake  # checked by mypy
    assert Providers({"process": typed}).get("process") is fake


def test_same_key_same_id_one_launch() -> None:
    fake = FakeProvider()
    first = fake.submit(JOB, idempotency_key="k1")
    again = fake.submit(JOB, idempotency_key="k1")
    other = fake.submit(JOB, idempotency_key="k2")
    assert first == again == "fake-k1" and other == "fake-k2"
    assert fake.launches == [("k1", JOB), ("k2", JOB)]
    assert fake.submit_calls == ["k1", "k1", "k2"]
    assert fake.infrastructure_id("k1") == "fake-k1" and fake.infrastructure_id("k3") is None


def test_find_answers_what_a_key_launched() -> None:
    fake = FakeProvider()
    fake.fail_next(transient=True)
    with pytest.raises(ProviderError):
        fake.submit(JOB, idempotency_key="k1")
    assert fake.find("k1") is None  # a failed submit launched nothing
    fake.submit(JOB, idempotency_key="k1")
    assert fake.find("k1") == "fake-k1" and fake.find("k2") is None
    fake.fail_next(transient=True, method="find")
    with pytest.raises(ProviderError):
        fake.find("k1")
    assert fake.find_calls == ["k1", "k1", "k2", "k1"] and len(fake.launches) == 1


def test_launches_keep_a_copy_of_the_job() -> None:
    fake = FakeProvider()
    job: dict[str, Any] = {"command": ["a"], "env": {"X": "1"}}
    fake.submit(job, idempotency_key="k")
    job["env"]["X"] = "changed"
    assert fake.launches[0][1] == {"command": ["a"], "env": {"X": "1"}}


def test_scripted_failures_then_success() -> None:
    fake = FakeProvider()
    fake.fail_next(2, transient=True, message="ThrottlingException: Rate exceeded")
    for _ in range(2):
        with pytest.raises(ProviderError, match="Rate exceeded") as info:
            fake.submit(JOB, idempotency_key="k")
        assert info.value.transient is True
    assert fake.launches == []  # a failed submit starts nothing and does not claim the key
    assert fake.submit(JOB, idempotency_key="k") == "fake-k"
    assert len(fake.launches) == 1 and fake.submit_calls == ["k", "k", "k"]

    fake.fail_next(1, transient=False, message="AccessDenied")
    with pytest.raises(ProviderError, match="AccessDenied") as info:
        fake.submit(JOB, idempotency_key="k2")
    assert info.value.transient is False


def test_scripted_failures_of_status_and_cancel() -> None:
    fake = FakeProvider()
    infra_id = fake.submit(JOB, idempotency_key="k")
    fake.fail_next(transient=True, message="503 from the API", method="status")
    fake.fail_next(transient=False, message="forbidden", method="cancel")
    with pytest.raises(ProviderError, match="503"):
        fake.status(infra_id)
    assert fake.status(infra_id).state is JobState.PENDING
    with pytest.raises(ProviderError, match="forbidden"):
        fake.cancel(infra_id)
    assert fake.cancelled == [] and fake.status(infra_id).state is JobState.PENDING
    # Submit was not scripted to fail.
    assert fake.submit(JOB, idempotency_key="k") == infra_id


def test_statuses() -> None:
    fake = FakeProvider()
    infra_id = fake.submit(JOB, idempotency_key="k")
    assert fake.status(infra_id) == JobStatus(JobState.PENDING)
    fake.set_status(infra_id, JobStatus(JobState.RUNNING))
    assert fake.status(infra_id).state is JobState.RUNNING
    fake.set_status(infra_id, JobStatus(JobState.FAILED, exit_code=3, message="exit code 3"))
    assert fake.status(infra_id) == JobStatus(JobState.FAILED, exit_code=3, message="exit code 3")
    assert fake.status("fake-unknown").state is JobState.MISSING
    fake.forget(infra_id)
    assert fake.status(infra_id).state is JobState.MISSING
    assert fake.status_calls == [infra_id] * 3 + ["fake-unknown", infra_id]


def test_initial_status_is_configurable() -> None:
    fake = FakeProvider(initial_status=JobStatus(JobState.RUNNING))
    assert fake.status(fake.submit(JOB, idempotency_key="k")).state is JobState.RUNNING


def test_cancel() -> None:
    fake = FakeProvider()
    running = fake.submit(JOB, idempotency_key="a")
    fake.set_status(running, JobStatus(JobState.RUNNING))
    done = fake.submit(JOB, idempotency_key="b")
    fake.set_status(done, JobStatus(JobState.COMPLETED, exit_code=0))
    fake.cancel(running)
    fake.cancel(done)
    fake.cancel("fake-unknown")
    assert fake.cancelled == [running, done, "fake-unknown"]
    assert fake.status(running).state is JobState.CANCELLED
    # A job that had already finished keeps its real outcome, as real infrastructure would report it.
    assert fake.status(done).state is JobState.COMPLETED
    assert fake.status("fake-unknown").state is JobState.MISSING


def test_validate() -> None:
    fake = FakeProvider()
    assert fake.validate(JOB) == JOB and fake.validate(JOB) is not JOB
    with pytest.raises(InvalidInput, match="command"):
        fake.validate({"env": {}})
    with pytest.raises(InvalidInput, match="command"):
        fake.validate({"command": []})
    with pytest.raises(InvalidInput, match="JSON object"):
        fake.validate("echo")  # type: ignore[arg-type]


def test_hanging_submit_outlives_a_timeout_and_the_retry_finds_it() -> None:
    fake = FakeProvider(hang_seconds=0.3)
    with ThreadPoolExecutor(max_workers=2) as pool:
        future = pool.submit(fake.submit, JOB, idempotency_key="k")
        with pytest.raises(FutureTimeout):
            future.result(timeout=0.05)  # what a dispatcher with a short provider timeout sees
        assert future.result(timeout=5) == "fake-k"  # but the launch did happen
    fake.hang_seconds = 0
    assert fake.submit(JOB, idempotency_key="k") == "fake-k"
    assert len(fake.launches) == 1


def test_hang_does_not_serialise_other_calls() -> None:
    fake = FakeProvider(hang_seconds=0.3)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(lambda key: fake.submit(JOB, idempotency_key=key), ["a", "b", "c", "d"]))
    assert ids == ["fake-a", "fake-b", "fake-c", "fake-d"]
    assert time.monotonic() - started < 1.0  # four 0.3 s submits in parallel, not 1.2 s in a row


def test_thread_safe_idempotency() -> None:
    fake = FakeProvider()
    barrier = threading.Barrier(16)
    ids: list[str] = []

    def submit() -> None:
        barrier.wait()
        ids.append(fake.submit(JOB, idempotency_key="same"))

    threads = [threading.Thread(target=submit) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert ids == ["fake-same"] * 16
    assert len(fake.launches) == 1 and len(fake.submit_calls) == 16

"""The provider conformance suite: one set of tests that every provider passes, each against its real peer.

It runs over the harnesses in tests/provider_harnesses.py (`HARNESSES`): `process` (real detached
subprocesses), `ecs` (moto's ECS server behind `EcsFront`, which honours `clientToken` and injects faults),
`fake` (dispatcher/providers/fake.py, which the dispatcher's own tests rely on behaving like a provider),
and `cloud-run` (google-cloud-run's REST client against tests/cloud_run_stub.py).

What every provider must do (SPEC §5, dispatcher/providers/base.py):
- `validate` refuses a bad job naming the field, and touches no infrastructure doing it;
- `submit` returns an id; the same key again returns the same id and starts nothing new, also when
  several submits race and when a fresh provider repeats it as a `resubmission` after a crash;
- `status` says RUNNING while the job runs, COMPLETED for exit 0, FAILED with the code for any other exit,
  MISSING for an id the infrastructure never knew;
- `cancel` stops the job (status CANCELLED) and a repeat is harmless;
- `find(key)` answers the id a key launched (also to a fresh provider), None for a key that launched nothing;
- errors are `ProviderError`s, transient for throttling, 5xx and timeouts, permanent otherwise, carrying
  the provider's own words, and a failed submit starts nothing.

Adding a provider (Cloud Run, ACI, Modal, ...) is one class in tests/provider_harnesses.py:

    class CloudRunHarness(ProviderHarness):
        name = "cloud-run"                      # the test id
        pool_type = "cloud-run-v2:push"         # what a dispatcher test registers the provider under
        faults = frozenset({"throttle", "server_error", "timeout", "permanent", "hang"})  # what it can inject
        template_path = ROOT / "templates" / "cloud-run-v2-push.json"
        def __init__(self, tmp_path): start the peer (a local stub server speaking the REST routes)
        def provider(self) / fresh_provider(self): the provider, and a new one over the same peer
        def job_variables(self): deployment variables that render into a job that runs until `finish`
        def bad_job(self): (a rendered job the model refuses, the field its error names)
        def finish(self, run_id, infrastructure_id, exit_code): make the job end with that code
        def launched(self) / touches(self): jobs really started / requests that reached the peer
        def unknown_id(self): a well-formed id the peer never heard of
        def fault(self, kind): a context manager: submit fails that way inside; yields the provider's words
        def close(self): stop the peer

then add it to `HARNESSES`. Every test here and the provider-fault scenarios in tests/reliability/ then
run on it; a fault it cannot inject is left out of `faults`, and the fault tests are generated only for the
faults each harness declares.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from provider_harnesses import HARNESSES, ProviderHarness

from dispatcher.errors import InvalidInput, ProviderError
from dispatcher.providers.base import JobState


@pytest.fixture(scope="module", params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderHarness]:
    h = HARNESSES[request.param](tmp_path_factory.mktemp(request.param))
    yield h
    h.close()


def _submit(h: ProviderHarness, **kwargs: object) -> tuple[str, str, str]:
    """Submit a fresh job under a fresh key; return (run id, key, infrastructure id)."""
    run_id = str(uuid.uuid4())
    key = f"{run_id}-1"
    job = h.provider().validate(h.job(run_id))
    return run_id, key, h.provider().submit(job, idempotency_key=key, **kwargs)  # type: ignore[arg-type]


def test_validate_refuses_a_bad_job_naming_the_field_and_touches_nothing(harness: ProviderHarness) -> None:
    job, field = harness.bad_job()
    before = harness.touches()
    with pytest.raises(InvalidInput) as caught:
        harness.provider().validate(job)
    assert field in str(caught.value)
    good = harness.provider().validate(harness.job())
    assert harness.provider().validate(good) == good, "validating a normalised job changes nothing"
    assert harness.touches() == before, "validate must be pure: no call to the infrastructure"


def test_submit_returns_an_id_and_the_same_key_starts_nothing_new(harness: ProviderHarness) -> None:
    before = harness.launched()
    run_id, key, infra_id = _submit(harness)
    assert isinstance(infra_id, str) and infra_id
    assert harness.launched() == before + 1
    job = harness.provider().validate(harness.job(run_id))
    assert harness.provider().submit(job, idempotency_key=key) == infra_id
    assert harness.launched() == before + 1


def test_concurrent_submits_of_one_key_launch_once(harness: ProviderHarness) -> None:
    before = harness.launched()
    run_id = str(uuid.uuid4())
    job = harness.provider().validate(harness.job(run_id))
    # Several dispatchers (fresh providers) racing on one attempt, as overlapping passes would.
    providers = [harness.provider()] + [harness.fresh_provider() for _ in range(3)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(lambda p: p.submit(job, idempotency_key=f"{run_id}-1"), providers))
    assert len(set(ids)) == 1
    assert harness.launched() == before + 1


def test_a_resubmission_after_a_crash_finds_the_first_launch(harness: ProviderHarness) -> None:
    run_id, key, infra_id = _submit(harness)
    before = harness.launched()
    # The dispatcher died between "launched" and "recorded"; a new one repeats the attempt.
    restarted = harness.fresh_provider()
    job = restarted.validate(harness.job(run_id))
    assert restarted.submit(job, idempotency_key=key, resubmission=True) == infra_id
    assert harness.launched() == before


@pytest.mark.parametrize(("exit_code", "state"), [(0, JobState.COMPLETED), (3, JobState.FAILED)])
def test_status_is_running_then_the_job_s_outcome(harness: ProviderHarness, exit_code: int, state: JobState) -> None:
    run_id, _, infra_id = _submit(harness)
    harness.wait_status(infra_id, JobState.RUNNING)
    harness.finish(run_id, infra_id, exit_code)
    status = harness.wait_status(infra_id, state)
    assert status.exit_code == exit_code
    assert harness.provider().status(infra_id).state is state, "a finished job's status stays put"


def test_find_answers_the_launch_of_a_key_or_none(harness: ProviderHarness) -> None:
    _, key, infra_id = _submit(harness)
    before = harness.launched()
    assert harness.provider().find(key) == infra_id
    assert harness.fresh_provider().find(key) == infra_id, "find asks the infrastructure, not a memory"
    assert harness.provider().find(f"{uuid.uuid4()}-1") is None
    assert harness.launched() == before, "find starts nothing"


def test_status_of_an_id_the_infrastructure_never_knew_is_missing(harness: ProviderHarness) -> None:
    assert harness.provider().status(harness.unknown_id()).state is JobState.MISSING


def test_cancel_stops_the_job_and_a_repeat_is_harmless(harness: ProviderHarness) -> None:
    run_id, _, infra_id = _submit(harness)
    harness.wait_status(infra_id, JobState.RUNNING)
    harness.provider().cancel(infra_id)
    harness.wait_status(infra_id, JobState.CANCELLED)
    harness.provider().cancel(infra_id)
    harness.fresh_provider().cancel(infra_id)
    assert harness.provider().status(infra_id).state is JobState.CANCELLED


def test_cancel_of_an_id_the_infrastructure_never_knew_is_not_an_error(harness: ProviderHarness) -> None:
    harness.provider().cancel(harness.unknown_id())


FAULT_CASES = [
    pytest.param(name, fault, id=f"{name}-{fault}")
    for name, cls in sorted(HARNESSES.items())
    for fault in sorted(cls.faults)
    if fault != "hang"
]


@pytest.fixture(scope="module")
def harnesses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ProviderHarness]]:
    """One harness per provider for the fault tests, built on first use."""
    built: dict[str, ProviderHarness] = {}

    class Lazy(dict[str, ProviderHarness]):
        def __missing__(self, name: str) -> ProviderHarness:
            built[name] = HARNESSES[name](tmp_path_factory.mktemp(f"faults-{name}"))
            self[name] = built[name]
            return built[name]

    yield Lazy()
    for h in built.values():
        h.close()


@pytest.mark.parametrize(("name", "fault"), FAULT_CASES)
def test_submit_errors_are_transient_or_permanent_in_the_provider_s_words(
    harnesses: dict[str, ProviderHarness], name: str, fault: str
) -> None:
    h = harnesses[name]
    before = h.launched()
    run_id = str(uuid.uuid4())
    job = h.provider().validate(h.job(run_id))
    with h.fault(fault) as words, pytest.raises(ProviderError) as caught:
        h.provider().submit(job, idempotency_key=f"{run_id}-1")
    assert caught.value.transient is (fault != "permanent"), str(caught.value)
    assert words in str(caught.value)
    assert h.launched() == before, "a failed submit starts nothing"
    assert h.provider().find(f"{run_id}-1") is None, "find knows no launch for a failed submit"
    # The infrastructure recovered: the same key now launches, once.
    infra_id = h.provider().submit(job, idempotency_key=f"{run_id}-1")
    assert infra_id and h.launched() == before + 1


@pytest.mark.parametrize("name", sorted(n for n, cls in HARNESSES.items() if "hang" in cls.faults))
def test_a_hung_submit_does_not_answer_until_released(harnesses: dict[str, ProviderHarness], name: str) -> None:
    h = harnesses[name]
    job = h.provider().validate(h.job())
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(h.provider().submit(job, idempotency_key=f"{uuid.uuid4()}-1"))
        except ProviderError as exc:
            outcome.append(exc)

    with h.fault("hang"):
        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        time.sleep(0.5)
        assert outcome == [], "a hung call must not answer while the fault holds"
    thread.join(timeout=30)
    assert not thread.is_alive() and len(outcome) == 1


def test_every_harness_declares_only_known_faults() -> None:
    from provider_harnesses import FAULTS

    for cls in HARNESSES.values():
        assert cls.faults <= set(FAULTS), cls.name
        assert Path(cls.template_path).is_file(), cls.name

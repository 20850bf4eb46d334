"""Provider faults through the dispatcher, for every provider harness and every fault it can inject.

- throttling, 5xx and timeouts: the run goes back to AwaitingRetry with a doubling backoff and its slot
  freed, and after the attempt limit it is CRASHED with the provider's words;
- a permanent error: CRASHED at once, with the provider's words;
- a hung call: the pass still ends within its time budget (the provider timeout plus a margin); the run
  waits without an infrastructure id, and once the provider answers again the reconciler re-submits it
  with the same key: exactly one launch.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from provider_harnesses import HARNESSES, TRANSIENT_FAULTS, ProviderHarness
from reliability_support import Figures
from rig import Rig

from dispatcher.config import Settings
from dispatcher.states import StateType

ATTEMPTS = 3
BACKOFF = 0.2
HANG_TIMEOUT = 0.5
PASS_MARGIN = 2.0
"""A pass may take this long beyond the provider timeout (store writes, a slow machine)."""

CASES = [
    pytest.param(name, fault, id=f"{name}-{fault}")
    for name, cls in sorted(HARNESSES.items())
    for fault in sorted(cls.faults)
]


@pytest.fixture(scope="module")
def harnesses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ProviderHarness]]:
    built: dict[str, ProviderHarness] = {}

    class Lazy(dict[str, ProviderHarness]):
        def __missing__(self, name: str) -> ProviderHarness:
            built[name] = HARNESSES[name](tmp_path_factory.mktemp(f"faults-{name}"))
            self[name] = built[name]
            return built[name]

    yield Lazy()
    for h in built.values():
        h.close()


def _settings(fault: str, harness: ProviderHarness) -> Settings:
    # A hung call must outlast the dispatcher's timeout; a slow answer (timeout) must not, so that it is the
    # provider's own timeout that fires.
    # HANG_TIMEOUT is below every harness's own client timeout (Cloud Run's is 1 s), so that it is the
    # dispatcher's timeout that fires on a hung call, not the client's.
    timeout = HANG_TIMEOUT if fault == "hang" else 15.0
    return Settings(
        submission_attempts=ATTEMPTS,
        retry_backoff_seconds=BACKOFF,
        provider_timeout_seconds=timeout,
        resubmit_grace_seconds=0.5,
        reconcile_after_seconds=60.0,
    )


@pytest.mark.parametrize(("name", "fault"), CASES)
def test_provider_faults_are_retried_with_backoff_then_crash_in_the_provider_s_words(
    harnesses: dict[str, ProviderHarness], name: str, fault: str, tmp_path: Path, figures: Figures
) -> None:
    harness = harnesses[name]
    scenario = f"faults, {name}"
    settings = _settings(fault, harness)
    rig = Rig(harness, tmp_path, settings, limit=1)
    launched_before = harness.launched()
    try:
        (run_id,) = rig.new_runs(1)
        budget = settings.provider_timeout_seconds + PASS_MARGIN
        durations: list[float] = []

        def timed_pass() -> None:
            start = time.monotonic()
            rig.pass_()
            durations.append(time.monotonic() - start)

        if fault == "hang":
            with harness.fault(fault):
                timed_pass()
                hung = rig.run(run_id)
                assert hung.state is StateType.PENDING and hung.infrastructure_id is None
            # The provider answers again: the reconciler re-submits the same attempt after its grace, with the
            # usual timeout (a short one would also cut off the answers of a slow, loaded machine).
            rig.dispatcher.settings = dataclasses.replace(settings, provider_timeout_seconds=15.0)
            deadline = time.monotonic() + 30
            while rig.run(run_id).infrastructure_id is None and time.monotonic() < deadline:
                time.sleep(0.2)
                timed_pass()
            run = rig.run(run_id)
            launches = harness.launched() - launched_before
            figures.record(scenario, "hung submit: pass over its time budget", int(durations[0] > budget), target=0)
            figures.record(scenario, "hung submit: launches once answered", launches, target=1)
            assert durations[0] <= budget, f"a pass with a hung call took {durations[0]:.1f}s"
            assert run.infrastructure_id is not None and launches == 1
            return

        with harness.fault(fault) as words:
            deadline = time.monotonic() + 60
            while not rig.run(run_id).is_terminal and time.monotonic() < deadline:
                timed_pass()
                time.sleep(0.05)
        run = rig.run(run_id)
        retries = [r for r in run.state_history if r.name == "AwaitingRetry"]
        backoffs = [float(m.group(1)) for r in retries if (m := re.search(r"retrying in ([\d.]+)s", r.message or ""))]
        expected_backoffs = [BACKOFF * 2**i for i in range(ATTEMPTS - 1)] if fault in TRANSIENT_FAULTS else []
        crashed_message = run.state_history[-1].message or ""
        launches = harness.launched() - launched_before
        slots = rig.active_slots()

        figures.record(
            scenario, f"{fault}: retries (backoff {'/'.join(f'{b:g}' for b in backoffs) or '-'} s)", len(retries)
        )
        figures.record(
            scenario,
            f"{fault}: not CRASHED in the provider's words",
            int(run.state is not StateType.CRASHED or words not in crashed_message),
            target=0,
        )
        figures.record(scenario, f"{fault}: slowest pass over budget", int(max(durations) > budget), target=0)
        assert run.state is StateType.CRASHED, run.state_history
        assert words in crashed_message, crashed_message
        assert backoffs == pytest.approx(expected_backoffs), backoffs
        assert run.submission_attempts == (ATTEMPTS if fault in TRANSIENT_FAULTS else 1)
        assert max(durations) <= budget, durations
        assert slots == 0
        assert launches == 0
    finally:
        rig.close()

"""`flow-run retry` end to end: a real process fails, is retried, and runs again as a new launch (issue 11)."""

from __future__ import annotations

import sys
from pathlib import Path

from test_dispatch_e2e import Harness, example_pool, harness  # noqa: F401  (harness is a fixture)

from dispatcher import deployments
from dispatcher.dispatch import idempotency_key
from dispatcher.flow_runs import retry_run
from dispatcher.states import StateType
from dispatcher.store.base import pool_slot


def test_a_failed_run_retried_runs_again_as_a_new_launch(harness: Harness, tmp_path: Path) -> None:  # noqa: F811
    h = harness
    example_pool(h, 1, {})
    mark = tmp_path / "ran-once"
    # Fails the first time (exit 3), succeeds once the mark exists: what a flaky job does.
    command = [
        sys.executable,
        "-c",
        f"import os, sys; seen = os.path.exists({str(mark)!r}); open({str(mark)!r}, 'w').close(); "
        "sys.exit(0 if seen else 3)",
    ]
    deployments.create_deployment(h.store, "flaky", pool="p", job_variables={"command": command})
    run = deployments.run_deployment(h.store, "flaky")
    h.drive(lambda: h.run(run.id).is_terminal, what="the first attempt")
    failed = h.run(run.id)
    assert failed.state is StateType.FAILED and failed.infrastructure_id is not None
    first_launch, first_key = failed.infrastructure_id, idempotency_key(failed)

    retried = retry_run(h.store, run.id)
    assert (retried.state, retried.state_name, retried.retries) == (StateType.SCHEDULED, "AwaitingRetry", 1)
    h.drive(lambda: h.run(run.id).is_terminal, what="the retried run")

    done = h.run(run.id)
    assert done.state is StateType.COMPLETED, [(r.name, r.message) for r in done.state_history]
    assert done.infrastructure_id is not None and done.infrastructure_id != first_launch  # a second process
    assert idempotency_key(done) != first_key and done.submission_attempts == 1
    names = [r.name for r in done.state_history if r.applied]
    assert names.index("Failed") < names.index("AwaitingRetry") < names.index("Completed")
    assert h.store.slots([pool_slot("p")])[pool_slot("p")].active == 0

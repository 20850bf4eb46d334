"""The Cloud Run half of dispatch_overhead.py: a pass over N runs of a `cloud-run-v2:push` pool vs the same raw
google-cloud-run call a first submission makes (create_job with a startExecutionToken, which starts the job's
execution in the same operation) against the local Cloud Run stub in its own process.

Both sides use google-cloud-run's REST clients with AnonymousCredentials, the same concurrency (the
dispatcher's submit pool size) and the same job body (the one the provider built for the warm-up run, with
a fresh run id, env and labels per job). The stub counts the requests each side makes, per route: they must be
the same per run, or the comparison is refused. Median of --repeat rounds after one warm-up round; the same pass
with a provider that calls nothing is printed beside them (the store, admission and rendering alone).
"""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TARGET_RATIO = 1.3
PROJECT = "bench-project"
REGION = "us-central1"
IMAGE = "europe-docker.pkg.dev/bench-project/flows/etl:7"
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def stub_server() -> Iterator[tuple[str, Callable[[], Counter[str]]]]:
    """tests/cloud_run_stub.py in a process of its own (so it does not share this one's GIL): its endpoint, and a
    function that returns the requests it has served so far, per route."""
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "cloud_run_stub.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        endpoint = server.stdout.readline().strip()
        if not endpoint.startswith("http://"):
            raise RuntimeError("the Cloud Run stub did not start")

        def calls() -> Counter[str]:
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write("calls\n")
            server.stdin.flush()
            return Counter(json.loads(server.stdout.readline()))

        yield endpoint, calls
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)


def bench_cloud_run(tmp: Path, n: int, repeat: int) -> int:
    with stub_server() as (endpoint, calls):
        return _bench(endpoint, calls, tmp, n, repeat)


def _bench(endpoint: str, calls: Callable[[], Counter[str]], tmp: Path, n: int, repeat: int) -> int:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import run_v2

    from dispatcher.cancelling import cancel_run
    from dispatcher.deployments import create_deployment, run_deployment
    from dispatcher.dispatch import Dispatcher
    from dispatcher.pools import create_pool
    from dispatcher.provider_events import apply_status
    from dispatcher.providers.base import JobState, JobStatus, Providers
    from dispatcher.providers.cloud_run import CloudRunProvider
    from dispatcher.providers.cloud_run.model import build_job_body, parse_job
    from dispatcher.providers.fake import FakeProvider
    from dispatcher.store.sqlite import SQLiteStore

    store = SQLiteStore(str(tmp / "pushpool.db"))
    create_pool(store, "bench", type="cloud-run-v2:push", job_variables={"image": IMAGE, "region": REGION})
    create_deployment(
        store,
        "nightly",
        pool="bench",
        job_variables={"command": "pushpool-run -- python -m flows.nightly", "env": {"MODE": "full"}},
        parameters={"day": "2026-03-01"},
    )
    provider = CloudRunProvider(
        credentials=AnonymousCredentials(), api_endpoint=endpoint, project=PROJECT, sweep_interval=None
    )
    dispatcher = Dispatcher(
        store, providers=Providers({"cloud-run-v2:push": provider}), callback_base_url="https://cb.example"
    )
    workers = dispatcher.settings.submit_concurrency
    raw_pool = ThreadPoolExecutor(max_workers=workers)

    class CallsNothing(FakeProvider):
        """Validates as Cloud Run does and submits nowhere: a pass with it is the store, admission and rendering."""

        def validate(self, job: dict[str, Any]) -> dict[str, Any]:
            return provider.validate(job)

    quiet = Dispatcher(
        store, providers=Providers({"cloud-run-v2:push": CallsNothing()}), callback_base_url="https://cb.example"
    )
    options = ClientOptions(api_endpoint=endpoint)
    jobs = run_v2.JobsClient(credentials=AnonymousCredentials(), transport="rest", client_options=options)

    def one_pass(count: int, through: Dispatcher = dispatcher) -> float:
        runs = [run_deployment(store, "nightly").id for _ in range(count)]
        start = time.perf_counter()
        summary = through.run_pass()
        elapsed = time.perf_counter() - start
        if sorted(summary.submitted) != sorted(runs):
            raise RuntimeError(f"the pass did not submit every run: {summary.headline()}; {summary.problems}")
        for run_id in runs:
            apply_status(store, run_id, JobStatus(JobState.COMPLETED, exit_code=0), source=f"bench:{run_id}")
        return elapsed

    warm_seconds = one_pass(1)  # the SDK imported, clients built: what a warm function has
    pool = store.get_pool("bench")
    assert pool is not None
    deployment = store.get_deployment("nightly")
    assert deployment is not None
    sample = run_deployment(store, "nightly")
    body = build_job_body(parse_job(dispatcher._render(pool, deployment, sample)))  # the job a run submits
    cancel_run(store, sample.id)  # SCHEDULED -> CANCELLED at once: it only lent its job
    parent = f"projects/{PROJECT}/locations/{REGION}"

    def raw_one(job_body: dict[str, Any]) -> str:
        run_id = str(uuid.uuid4())
        job = run_v2.Job(job_body)
        job.labels["pushpool-run-id"] = run_id
        operation = jobs.create_job(parent=parent, job=job, job_id=f"pushpool-{run_id}", retry=None, timeout=10)
        return str(operation.result(timeout=20).latest_created_execution.name)

    snake = run_v2.Job.to_dict(run_v2.Job.from_json(json.dumps(body)))

    def raw(count: int) -> float:
        bodies = [copy.deepcopy(snake) for _ in range(count)]
        start = time.perf_counter()
        names = list(raw_pool.map(raw_one, bodies))
        elapsed = time.perf_counter() - start
        assert all(names)
        return elapsed

    raw(1)  # warm-up
    passes, raws, core = [], [], []
    pass_calls: Counter[str] = Counter()
    raw_calls: Counter[str] = Counter()
    for _ in range(repeat):
        before = calls()
        passes.append(one_pass(n))
        middle = calls()
        raws.append(raw(n))
        pass_calls += middle - before
        raw_calls += calls() - middle
        core.append(one_pass(n, quiet))
    dispatcher.close()
    quiet.close()
    raw_pool.shutdown()
    per_run = {side: _per_run(counted, n * repeat) for side, counted in (("pass", pass_calls), ("raw", raw_calls))}
    if per_run["pass"] != per_run["raw"]:
        raise RuntimeError(f"the two sides made different Cloud Run requests per run: {per_run}")

    pass_s, raw_s = statistics.median(passes), statistics.median(raws)
    ratio = pass_s / raw_s
    print(
        f"dispatch overhead, Cloud Run: {n} runs per pass, the Cloud Run stub in its own process, SQLite store, "
        f"median of {repeat}"
    )
    print(f"(warm-up pass of 1 run, building the Cloud Run clients: {warm_seconds * 1000:.0f} ms)")
    print()
    print(f"{'what':62} {'total ms':>9} {'ms/run':>7}")
    for what, seconds in (
        (f"raw create_job (starting) x{n}, {workers} threads (the baseline)", raw_s),
        (f"run_pass(): {n} runs admitted, rendered, submitted, recorded", pass_s),
    ):
        print(f"{what:62} {seconds * 1000:9.0f} {seconds * 1000 / n:7.1f}")
    print()
    print("Cloud Run requests per run, counted by the stub (the same on both sides): " + per_run["pass"])
    print()
    print(f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'}  pass / raw = {ratio:.2f} (target <= {TARGET_RATIO})")
    print(
        f"info  the same pass with a provider that calls nothing takes {statistics.median(core) * 1000:.0f} ms "
        "(the store, admission and rendering alone)"
    )
    return 0 if ratio <= TARGET_RATIO else 1


def _per_run(counted: Counter[str], runs: int) -> str:
    return ", ".join(f"{route} {count / runs:.2f}" for route, count in sorted(counted.items())) or "none"

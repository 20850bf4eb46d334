"""dispatch_overhead.py's ACI part: a pass over an `azure-container-instance:push` pool vs raw Azure SDK calls.

N runs through one `Dispatcher.run_pass()` to the ARM stub of tests/aci_stub.py (in its own process), against
N container group PUTs made directly with the Azure SDK (`begin_create_or_update(...).result()`: the PUT and
its Azure-AsyncOperation followed to the end, as a hand-written submitter would), with the same body, client
options and concurrency. A pass's submission is a GET (is the group there?), the PUT and the operation's
polls; the raw side's is the PUT, the polls and the SDK poller's final GET: the same number of requests.
Target (issue 13): pass / raw <= 1.3. Run through `dispatch_overhead.py --only aci`.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TARGET_RATIO = 1.3


TESTS = Path(__file__).resolve().parents[1] / "tests"


@contextmanager
def aci_stub_server() -> Iterator[str]:
    """tests/aci_stub.py's ARM stub in a process of its own, on a free local port; yields its URL."""
    server = subprocess.Popen(
        [sys.executable, str(TESTS / "aci_stub.py")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError("the ACI stub did not start")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def bench_aci(tmp: Path, n: int, repeat: int) -> int:
    """The ACI figures, printed; 0 when the target is met, 1 when missed."""
    with aci_stub_server() as url:
        return _bench(url, tmp, n, repeat)


def _bench(url: str, tmp: Path, n: int, repeat: int) -> int:
    sys.path.insert(0, str(TESTS))
    from aci_stub import RESOURCE_GROUP, SUBSCRIPTION, StubCredential

    from dispatcher.deployments import create_deployment, run_deployment
    from dispatcher.dispatch import Dispatcher
    from dispatcher.pools import create_pool
    from dispatcher.provider_events import apply_status
    from dispatcher.providers.aci import ACIProvider
    from dispatcher.providers.base import JobState, JobStatus, Providers
    from dispatcher.providers.fake import FakeProvider
    from dispatcher.store.sqlite import SQLiteStore

    store = SQLiteStore(str(tmp / "pushpool.db"))
    variables = {"image": "flows:7", "resource_group_name": RESOURCE_GROUP, "subscription_id": SUBSCRIPTION}
    create_pool(store, "bench", type="azure-container-instance:push", job_variables={**variables, "entrypoint": ""})
    create_deployment(
        store,
        "nightly",
        pool="bench",
        job_variables={"command": "pushpool-run -- python -m flows.nightly", "env": {"MODE": "full"}},
        parameters={"day": "2026-03-01"},
    )
    provider = ACIProvider(StubCredential(), base_url=url, polling_interval=0)
    dispatcher = Dispatcher(
        store, providers=Providers({"azure-container-instance:push": provider}), callback_base_url="https://cb.example"
    )
    workers = dispatcher.settings.submit_concurrency
    raw_pool = ThreadPoolExecutor(max_workers=workers)

    class CallsNothing(FakeProvider):
        """Validates as ACI does and submits nowhere: a pass with it is the store, admission and rendering alone."""

        def validate(self, job: dict[str, Any]) -> dict[str, Any]:
            return provider.validate(job)

    quiet = Dispatcher(store, providers=Providers({"azure-container-instance:push": CallsNothing()}))

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

    warm_seconds = one_pass(1)  # the client built, the resource group's location looked up
    # The raw side: the same client options the provider uses (no SDK retries, no polling delay), built alike.
    client = provider.client(SUBSCRIPTION)

    def raw_body() -> bytes:
        run_id = str(uuid.uuid4())
        env = {
            "MODE": "full",
            "PUSHPOOL_RUN_ID": run_id,
            "PUSHPOOL_DEPLOYMENT": "nightly",
            "PUSHPOOL_POOL": "bench",
            "PUSHPOOL_QUEUE": "default",
            "PUSHPOOL_PARAMETERS": '{"day": "2026-03-01"}',
            "PUSHPOOL_CALLBACK_URL": f"https://cb.example/callbacks/runs/{run_id}",
        }
        environment = [{"name": k, "value": v} for k, v in env.items()]
        environment.append({"name": "PUSHPOOL_CALLBACK_TOKEN", "secureValue": uuid.uuid4().hex * 2})
        container = {
            "name": "pushpool",
            "properties": {
                "image": "flows:7",
                "command": ["pushpool-run", "--", "python", "-m", "flows.nightly"],
                "resources": {"requests": {"cpu": 1.0, "memoryInGB": 1.0}},
                "environmentVariables": environment,
            },
        }
        body = {
            "location": "westeurope",
            "tags": {"Name": f"nightly-{run_id[:8]}", "pushpool.io_run-id": run_id, "pushpool.io_pool": "bench"},
            "properties": {"containers": [container], "osType": "Linux", "restartPolicy": "Never"},
        }
        return json.dumps(body).encode()

    def raw_put(body: bytes) -> Any:
        name = f"raw-{uuid.uuid4().hex[:20]}"
        return client.container_groups.begin_create_or_update(RESOURCE_GROUP, name, body).result()

    def raw(count: int, concurrent: bool) -> float:
        bodies = [raw_body() for _ in range(count)]
        start = time.perf_counter()
        answers = list(raw_pool.map(raw_put, bodies)) if concurrent else [raw_put(b) for b in bodies]
        elapsed = time.perf_counter() - start
        assert all(a.provisioning_state == "Succeeded" for a in answers)
        return elapsed

    raw(1, concurrent=False)  # warm-up

    passes, raws, raws_sequential, core = [], [], [], []
    for _ in range(repeat):
        passes.append(one_pass(n))
        raws.append(raw(n, concurrent=True))
        raws_sequential.append(raw(n, concurrent=False))
        core.append(one_pass(n, quiet))
    dispatcher.close()
    quiet.close()
    raw_pool.shutdown()

    pass_s, raw_s = statistics.median(passes), statistics.median(raws)
    seq_s = statistics.median(raws_sequential)
    ratio = pass_s / raw_s
    print(
        f"dispatch overhead (ACI): {n} runs per pass, the ARM stub in its own process, SQLite store, median of {repeat}"
    )
    print(f"(warm-up pass of 1 run, building the client and looking up the location: {warm_seconds * 1000:.0f} ms)")
    print()
    print(f"{'what':62} {'total ms':>9} {'ms/run':>7}")
    rows = [
        (f"raw container group PUT x{n}, {workers} threads (the baseline)", raw_s),
        (f"raw container group PUT x{n}, one after another", seq_s),
        (f"run_pass(): {n} runs admitted, rendered, submitted, recorded", pass_s),
    ]
    for what, seconds in rows:
        print(f"{what:62} {seconds * 1000:9.0f} {seconds * 1000 / n:7.1f}")
    print()
    core_s = statistics.median(core)
    print(f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'}  ACI pass / raw = {ratio:.2f} (target <= {TARGET_RATIO})")
    print(
        f"info  the same pass with a provider that calls nothing takes {core_s * 1000:.0f} ms (the store, admission "
        f"and rendering alone; SQLite's writes, in {tmp.parent}, are most of it on a busy disk)"
    )
    return 0 if ratio <= TARGET_RATIO else 1

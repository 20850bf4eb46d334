"""pushpool `serve`'s side of benchmarks/latency.py: a real `pushpool serve` subprocess on SQLite, process pools.

The serve runs at its default settings (a timed pass every 5 s, plus whatever wakes it). The benchmark talks to
it as users and jobs do: runs are created through its management API, and every job is a real process started
by the `process` provider under `pushpool-run`, whose signed COMPLETED callback frees the run's slot. Every
timestamp is read afterwards from the runs' state history in the store, never from polling here:

- created: the run's `created`; scheduled: its `scheduled_time`;
- submitted: the applied `InfrastructurePending` record (the dispatcher saw the provider accept the job);
- slot freed: the applied record that took a run out of PENDING/RUNNING (its job's COMPLETED callback).

Three measures, each on its own pool, run at the same time in the one serve (as one serve serves many pools):
(a) ad-hoc run created -> submitted, pool without a limit; (b) slot freed -> next waiting run submitted, pool
limit N, jobs sleeping a random while; (c) scheduled time -> submitted, runs created ahead with scheduled
times spread at random. Creations and job ends fall at random offsets, so they land at every phase of the
timed pass, not at a lucky one.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from dispatcher.deployments import create_deployment
from dispatcher.models import utcnow
from dispatcher.pools import create_pool
from dispatcher.store import open_store
from dispatcher.store.base import Store

from .common import Measured, freed_at, pair_frees, scheduled_lateness, submitted_at, wait_runs

_URL = re.compile(r"serving on (http://\S+?)[ ,(]")


class Serve:
    """`pushpool serve` (via `python -m dispatcher serve`, the `pushpool` command) in a process group of its own,
    on a SQLite store under `workdir`, its process jobs' state under `workdir/processes`."""

    def __init__(self, workdir: Path, *, extra_args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.store_url = f"sqlite:///{workdir / 'pushpool.db'}"
        self.token = secrets.token_urlsafe(16)
        self.extra_args = extra_args or []
        self.url = ""
        self.output: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHPOOL_")}
        env.update(
            PUSHPOOL_STORE=self.store_url,
            PUSHPOOL_API_TOKEN=self.token,
            PUSHPOOL_PROCESS_DIR=str(self.workdir / "processes"),
            HOME=str(self.workdir),  # ~/.pushpool of this serve and of its CLI neighbours stays in the workdir
        )
        return env

    def open_store(self) -> Store:
        return open_store(self.store_url)

    def start(self, timeout: float = 60.0) -> Serve:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "dispatcher", "serve", "--port", "0", *self.extra_args],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        found = threading.Event()

        def read() -> None:
            assert self._proc is not None and self._proc.stdout is not None
            for line in self._proc.stdout:
                self.output.append(line.rstrip("\n"))
                match = _URL.search(line)
                if match and not self.url:
                    self.url = match.group(1)
                    found.set()

        self._reader = threading.Thread(target=read, name="serve-output", daemon=True)
        self._reader.start()
        if not found.wait(timeout):
            self.stop()
            raise RuntimeError("pushpool serve did not start: " + " | ".join(self.output[-10:]))
        return self

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._proc = None

    def create_run(self, deployment: str, body: dict[str, Any] | None = None) -> str:
        """A run through the management API (`POST /deployments/{name}/runs`), as `deployment run` makes one."""
        request = urllib.request.Request(
            f"{self.url}/deployments/{deployment}/runs",
            data=json.dumps(body or {}).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(json.loads(response.read())["id"])


@contextmanager
def serving(workdir: Path, **kwargs: Any) -> Iterator[Serve]:
    serve = Serve(workdir, **kwargs).start()
    try:
        yield serve
    finally:
        serve.stop()


def _process_deployment(store: Store, pool: str, limit: int | None, command: list[str]) -> str:
    create_pool(store, pool, type="process", concurrency_limit=limit)
    return create_deployment(store, f"{pool}-flow", pool=pool, job_variables={"command": command}).name


@dataclass
class Sizes:
    """How many samples of each measure, and how the load is spread (see `run_all`)."""

    adhoc: int = 200
    freed: int = 200
    scheduled: int = 200
    limit: int = 8
    gap: tuple[float, float] = (0.05, 0.9)
    """(a): seconds between two creations, uniform: creations land at every phase of the timed pass."""
    job_seconds: tuple[float, float] = (0.5, 4.0)
    """(b): how long each job sleeps, uniform: its COMPLETED callback lands at every phase."""
    lead: float = 8.0
    window: float = 100.0
    """(c): scheduled times uniform over `window` seconds starting `lead` seconds after creation."""
    timeout: float = 600.0


def measure_adhoc(serve: Serve, store: Store, sizes: Sizes, rng: random.Random) -> Measured:
    deployment = _process_deployment(store, "lat-adhoc", None, ["true"])
    ids = []
    for _ in range(sizes.adhoc):
        time.sleep(rng.uniform(*sizes.gap))
        ids.append(serve.create_run(deployment))
    runs = wait_runs(store, "lat-adhoc", ids, lambda r: submitted_at(r) is not None, sizes.timeout)
    out = Measured(runs=len(ids))
    for run in runs:
        at = submitted_at(run)
        if at is None:
            out.unfinished += 1
        else:
            out.samples.append((at - run.created).total_seconds())
    return out


def measure_freed(serve: Serve, store: Store, sizes: Sizes, rng: random.Random) -> Measured:
    """Limit N, N + `freed` runs due at once; each job sleeps a random while, then its callback frees the slot."""
    create_pool(store, "lat-freed", type="process", concurrency_limit=sizes.limit)
    deployment = create_deployment(store, "lat-freed-flow", pool="lat-freed").name
    ids = [
        serve.create_run(
            deployment, {"job_variables": {"command": ["sleep", f"{rng.uniform(*sizes.job_seconds):.3f}"]}}
        )
        for _ in range(sizes.freed + sizes.limit)
    ]
    runs = wait_runs(store, "lat-freed", ids, lambda r: freed_at(r) is not None, sizes.timeout, drained=True)
    frees = [at for at in (freed_at(r) for r in runs) if at is not None]
    subs = [at for at in (submitted_at(r) for r in runs) if at is not None]
    out = Measured(runs=len(ids), unfinished=len(ids) - len(frees))
    # The last N frees leave nobody waiting: they pair with nothing.
    out.samples = pair_frees(frees, subs, sizes.limit)[: sizes.freed]
    sources = {r.state_history[-1].source.partition(":")[0] for r in runs if freed_at(r) is not None}
    out.notes.append(f"slots freed by: {', '.join(sorted(sources))}")
    return out


def measure_scheduled(serve: Serve, store: Store, sizes: Sizes, rng: random.Random) -> Measured:
    deployment = _process_deployment(store, "lat-scheduled", None, ["true"])
    start = utcnow() + timedelta(seconds=sizes.lead)
    ids = []
    for _ in range(sizes.scheduled):
        at = start + timedelta(seconds=rng.uniform(0, sizes.window))
        ids.append(serve.create_run(deployment, {"scheduled_time": at.isoformat()}))
    runs = wait_runs(
        store, "lat-scheduled", ids, lambda r: submitted_at(r) is not None, sizes.lead + sizes.window + sizes.timeout
    )
    return scheduled_lateness(runs, len(ids))


def run_all(workdir: Path, sizes: Sizes, seed: int = 16, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The three measures at once against one `pushpool serve`; their samples and the serve's last lines."""
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    results: dict[str, Any] = {}
    measures = {"a": measure_adhoc, "b": measure_freed, "c": measure_scheduled}

    def one(serve: Serve, key: str, own: random.Random) -> None:
        started = time.monotonic()
        store = serve.open_store()
        try:
            results[key] = measures[key](serve, store, sizes, own).as_dict()
        except Exception as exc:  # reported as this measure's result, so the others still count
            results[key] = {"error": f"{type(exc).__name__}: {exc}", "samples": []}
        finally:
            store.close()
        log(f"  serve ({key}) done in {time.monotonic() - started:.0f} s")

    with serving(workdir) as serve:
        log(f"pushpool serve up at {serve.url}")
        threads = [
            threading.Thread(target=one, args=(serve, key, random.Random(rng.random())), name=f"serve-{key}")
            for key in measures
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results["serve_output_tail"] = serve.output[-20:]
    return results

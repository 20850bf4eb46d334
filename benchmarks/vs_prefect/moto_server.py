"""moto's server in a process of its own, answering one request at a time: every benchmark's AWS peer.

The same server as the tests and benchmarks/dynamodb_cost.py (tests/moto_serial.py: one request at a time is
the faithful peer of DynamoDB, which serialises conflicting writes), run apart so that the benchmark's own
processes do not share an interpreter with it. `moto_process()` starts it and, when it stops, reads how long
its requests took (queued behind others, and answered), so a figure can say how much of it is the emulator.

Run as a script it prints its URL, serves until its stdin closes, then prints its request timings as JSON.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from moto_serial import serial_moto_server  # noqa: E402


def _quantile(values: list[float], q: float) -> float:
    """Nearest rank, as benchmarks/latency.py's figures."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1] if ordered else 0.0


def request_stats(timings: list[tuple[float, float]]) -> dict[str, Any]:
    """Requests, and p50/p99/max seconds of moto's answer alone (`served`) and with the queue (`answered`)."""
    served = [s for _, s in timings]
    answered = [q + s for q, s in timings]
    return {
        "requests": len(timings),
        **{
            name: {"p50": _quantile(xs, 0.5), "p99": _quantile(xs, 0.99), "max": max(xs, default=0.0)}
            for name, xs in (("served", served), ("answered", answered))
        },
    }


@dataclass
class MotoProcess:
    """A running moto server: its URL, and its request timings once it has stopped."""

    url: str
    stats: dict[str, Any] = field(default_factory=dict)


@contextmanager
def moto_process() -> Iterator[MotoProcess]:
    """This file as a subprocess; its `stats` are filled in when the block ends."""
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve())], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    handle = MotoProcess(server.stdout.readline().strip())
    try:
        yield handle
    finally:
        if server.stdin:
            server.stdin.close()  # the server stops and prints its timings
        try:
            server.wait(timeout=30)
            handle.stats = json.loads(server.stdout.read() or "{}")
        except (subprocess.TimeoutExpired, ValueError):
            server.kill()
            server.wait()


def main() -> None:
    timings: list[tuple[float, float]] = []
    server = serial_moto_server("127.0.0.1", timings)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    sys.stdin.read()
    server.stop()
    print(json.dumps(request_stats(timings)), flush=True)


if __name__ == "__main__":
    main()

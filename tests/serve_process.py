"""`pushpool serve` as a real subprocess on a free port: started, and its announced URL read, in one place for the
tests and benchmarks that talk to a real server."""

from __future__ import annotations

import re
import select
import subprocess
import sys
from collections.abc import Mapping

ANNOUNCE = re.compile(r"pushpool serving on (http://127\.0\.0\.1:(\d+))")
"""The line `serve` prints first: the URL it listens on (port 0 asks the kernel for a free one)."""


def start_serve(env: Mapping[str, str], *args: str, timeout: float = 30.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m dispatcher serve --port 0 ARGS` with `env`; the process and the URL it announced.

    Its stdout stays a pipe the caller may read further (pass headlines); stderr is dropped. A server that does
    not announce itself within `timeout` is killed and RuntimeError names what it printed.
    """
    command = [sys.executable, "-m", "dispatcher", "serve", "--port", "0", *args]
    process = subprocess.Popen(
        command, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline().decode() if ready else ""
    match = ANNOUNCE.search(line)
    if match is None:
        process.kill()
        process.communicate(timeout=10)
        raise RuntimeError(f"pushpool serve did not announce itself within {timeout:g} s: {line!r}")
    return process, match.group(1)

"""One Lambda execution environment of benchmarks/latency.py's AWS side: a process that runs one function's
handler, one invocation at a time, as Lambda runs a warm instance.

    python -m latency_parts.lambda_instance FUNCTION LOG_FILE      (cwd or PYTHONPATH: benchmarks/ and the repo)

Its environment is the function's (PUSHPOOL_STORE, PUSHPOOL_DISPATCH_FUNCTION, `_HANDLER`, ...), set by the
harness (lambda_service.py) as a stack's deploy file sets it. At init it imports handlers/aws_lambda.py under
`_HANDLER`, so the function's own modules load there, as under Lambda. Then, per line on stdin, an invocation:
`{"event": ..., "timeout": seconds}`; per invocation one line back on the protocol pipe (the original stdout):
`{"started", "ended", "answer" | "error"}`, times in seconds since the epoch. The handler's own output (its
structured logs and EMF metrics, which Lambda sends to CloudWatch) goes to LOG_FILE. Exits when stdin closes.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

ACCOUNT, REGION = "123456789012", "us-east-1"


class Context:
    """What the Lambda runtime hands a handler; the remaining time counts down from the function's timeout."""

    def __init__(self, function_name: str, timeout: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "2026/12/07/[$LATEST]0123456789abcdef"
        self.deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def main() -> None:
    function, log_file = sys.argv[1], sys.argv[2]
    # The protocol keeps the original stdout; the handler's prints (Logger, EMF) go to the log file.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    log = open(log_file, "a", buffering=1)  # noqa: SIM115 - open for the process's life
    os.dup2(log.fileno(), 1)
    sys.stdout = log
    from handlers import aws_lambda  # `_HANDLER` is set: the function's modules load now, at init

    handler = getattr(aws_lambda, os.environ["_HANDLER"].rpartition(".")[2])
    protocol.write(json.dumps({"ready": time.time()}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        started = time.time()
        reply: dict[str, Any] = {"started": started}
        try:
            reply["answer"] = handler(request["event"], Context(function, float(request["timeout"])))
        except Exception as exc:  # Lambda records the error and the caller sees it; the instance lives on
            reply["error"] = f"{type(exc).__name__}: {exc}"
        reply["ended"] = time.time()
        sys.stdout.flush()
        protocol.write(json.dumps(reply, default=str) + "\n")
    aws_lambda.reset_runtime()


if __name__ == "__main__":
    main()

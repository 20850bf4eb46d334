"""moto's DynamoDB on 127.0.0.1 in a process of its own, answering one request at a time; prints its URL.

The same server as the tests and benchmarks/dynamodb_cost.py (tests/moto_serial.py: one request at a time is
the faithful peer of DynamoDB, which serialises conflicting writes), run apart so that the pushpool side's
dispatchers do not share an interpreter with it. Stops when its stdin closes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from moto_serial import serial_moto_server  # noqa: E402


def main() -> None:
    server = serial_moto_server("127.0.0.1")
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()

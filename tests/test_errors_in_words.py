"""A bad day in one sentence: a full, damaged or read-only SQLite store, a template whose `$ref` cycles, a
file that never ends. Each is a real condition (a file size limit the kernel enforces, overwritten pages, a
read-only mount, /dev/zero), met through the real command line or HTTP server: no traceback, no MemoryError,
no hint pointing at the wrong thing.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dispatcher import deployments, pools, templating
from dispatcher.admit_pass import admit_pool
from dispatcher.callbacks import SECRET_ENV, callback_url, run_token
from dispatcher.errors import TemplateError
from dispatcher.models import WorkPool, WorkQueue, utcnow
from dispatcher.signing import SIGNATURE_HEADER, sign
from dispatcher.store.sqlite import SQLiteStore

SECRET = "errors-in-words-secret"


def _cli(
    store_path: Path, *args: str, preexec: Callable[[], None] | None = None, wrap: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PUSHPOOL_STORE": f"sqlite:///{store_path}", SECRET_ENV: SECRET, "COLUMNS": "200"}
    command = [*(wrap or []), sys.executable, "-m", "dispatcher", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, preexec_fn=preexec)


def _one_sentence(result: subprocess.CompletedProcess[str], exit_code: int, *words: str) -> str:
    err = result.stderr.strip()
    assert result.returncode == exit_code, (result.returncode, err)
    assert "Traceback" not in err and "Error:" in err, err
    line = err.splitlines()[-1]
    for word in words:
        assert word in line, line
    return line


def _file_size_limit(limit: int) -> Callable[[], None]:
    """In the child: writes past `limit` bytes fail with EFBIG, as a full disk's fail with ENOSPC."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "s.db"
    store = SQLiteStore(str(path))
    pools.create_pool(store, "pool")
    deployments.create_deployment(store, "dep", pool="pool")
    store.close()
    return path


def test_a_full_sqlite_store_is_one_sentence(store_path: Path) -> None:
    big = json.dumps({"blob": "x" * 60_000})
    result = _cli(store_path, "deployment", "run", "dep", "--parameters", big, preexec=_file_size_limit(1))
    line = _one_sentence(result, 5, str(store_path), "cannot be written", "full")
    assert "check the path" not in line


def test_a_damaged_sqlite_store_is_one_sentence(store_path: Path) -> None:
    with store_path.open("r+b") as handle:  # overwrite pages past the header, as a bad disk or a bad copy would
        handle.seek(100)
        handle.write(b"\xff" * 8192)
    line = _one_sentence(_cli(store_path, "work-pool", "ls"), 5, "is damaged", "backup")
    assert "check the path" not in line


def _read_only_wrapper(directory: Path) -> list[str] | None:
    """How to run a command that sees `directory` read-only: a private read-only bind mount as root, nothing
    more as anyone else (the caller makes the files read-only, which root would ignore)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return None
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
    probe = subprocess.run(["unshare", "-m", "sh", "-c", script, str(directory), "true"], capture_output=True)
    return ["unshare", "-m", "sh", "-c", script, str(directory)] if probe.returncode == 0 else None


def test_a_read_only_sqlite_store_is_one_sentence(store_path: Path) -> None:
    wrap = _read_only_wrapper(store_path.parent)
    if wrap is None:
        pytest.skip("running as root without a way to mount read-only here")
    for path in (store_path, store_path.parent):
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        result = _cli(store_path, "work-pool", "create", "another", wrap=wrap)
    finally:
        store_path.parent.chmod(0o700)
        store_path.chmod(0o600)
    line = _one_sentence(result, 5, "read-only")
    assert "check the path" not in line
    assert SQLiteStore(str(store_path)).get_pool("another") is None


def test_job_variables_from_dev_zero_are_refused_without_reading_it_all(store_path: Path) -> None:
    _one_sentence(_cli(store_path, "deployment", "run", "dep", "--job-variables", "@/dev/zero"), 2, "--job-variables")
    line = _one_sentence(_cli(store_path, "apply", "/dev/zero"), 2, "/dev/zero", "1024 KB")
    assert "MemoryError" not in line


def test_a_template_whose_ref_refers_to_itself_is_refused_and_a_stored_one_is_a_sentence(tmp_path: Path) -> None:
    cyclic = {
        "job_configuration": {"command": "{{ command }}"},
        "variables": {
            "type": "object",
            "properties": {"command": {"$ref": "#/definitions/a"}},
            "definitions": {"a": {"$ref": "#/definitions/b"}, "b": {"allOf": [{"$ref": "#/definitions/a"}]}},
        },
    }
    with pytest.raises(TemplateError, match=r"variables\.properties\.command\.\$ref: .* refers to itself"):
        templating.validate_template(cyclic)
    itself = {
        "job_configuration": {"command": "{{ command }}"},
        "variables": {"type": "object", "properties": {"command": {"$ref": "#/properties/command"}}},
    }
    with pytest.raises(TemplateError, match="refers to itself"):
        templating.validate_template(itself)
    # A schema that recurses into parts of the value is fine.
    tree = {
        "job_configuration": {"command": "{{ command }}"},
        "variables": {
            "type": "object",
            "properties": {"command": {"$ref": "#/definitions/tree"}},
            "definitions": {
                "tree": {
                    "type": "object",
                    "properties": {"kids": {"type": "array", "items": {"$ref": "#/definitions/tree"}}},
                }
            },
        },
    }
    templating.validate_template(tree)

    # One stored before cycles were refused: using it is a sentence, not a RecursionError.
    store = SQLiteStore(str(tmp_path / "s.db"))
    try:
        store.create_pool(
            WorkPool(name="old", base_job_template=itself), WorkQueue(pool="old", name="default", priority=1)
        )
        with pytest.raises(TemplateError, match="refers back to itself"):
            deployments.create_deployment(store, "d", pool="old", job_variables={"command": "echo hi"})
    finally:
        store.close()


class _Serve:
    """`pushpool serve` in a process whose writes past the store's current size fail (a full disk)."""

    def __init__(self, store_path: Path) -> None:
        env = {
            **os.environ,
            "PUSHPOOL_STORE": f"sqlite:///{store_path}",
            SECRET_ENV: SECRET,
            "PUSHPOOL_PROCESS_DIR": str(store_path.parent / "procs"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        env.pop("PUSHPOOL_API_TOKEN", None)
        # The write-ahead log is emptied first; the limit leaves room for SQLite's 32 KB shared-memory file
        # and none for a run row of 60 KB of job variables: saving it is the write the full disk refuses.
        with sqlite3.connect(store_path) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        limit = 40_000
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dispatcher", "serve", "--port", "0", "--interval", "60", "--quiet"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_file_size_limit(limit),
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        assert ready, "pushpool serve printed nothing"
        match = re.search(r"http://127\.0\.0\.1:(\d+)", self.process.stdout.readline().decode())
        assert match
        self.port = int(match.group(1))

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, dict(response.getheaders()), json.loads(data) if data else None

    def close(self) -> None:
        self.process.kill()
        self.process.communicate(timeout=10)


@pytest.fixture
def full_disk_server(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Serve, str, str]]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    store = SQLiteStore(str(store_path))
    run = deployments.run_deployment(
        # 60 KB in the run's own row (parameters that large are kept apart, written once; job variables are not).
        store,
        "dep",
        scheduled_time=utcnow() - timedelta(seconds=1),
        job_variables={"env": {"BLOB": "x" * 60_000}},
    )
    admit_pool(store, "pool", utcnow())
    token = run_token(SECRET.encode(), run.deployment_id, run.id)
    store.close()
    server = _Serve(store_path)
    yield server, run.id, token
    server.close()


def test_a_callback_during_a_full_disk_is_503_with_retry_after(
    full_disk_server: tuple[_Serve, str, str], store_path: Path
) -> None:
    server, run_id, token = full_disk_server
    body = json.dumps({"state": "RUNNING"}).encode()
    path = callback_url("", run_id)
    status, headers, answer = server.post(path, body, {SIGNATURE_HEADER: sign(token, body, int(utcnow().timestamp()))})
    assert status == 503, answer
    assert int(headers["Retry-After"]) > 0
    assert "cannot be written" in answer["error"] and "\n" not in answer["error"]
    server.close()
    stored = SQLiteStore(str(store_path)).get_run(run_id)
    assert stored is not None and stored.state.value == "PENDING"  # nothing half-written

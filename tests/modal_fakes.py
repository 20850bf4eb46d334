"""`FakeModal`: the Modal calls of `dispatcher.providers.modal.ModalAPI`, in memory, behaving as Modal does.

Modal has no offline server, so the provider's tests run against this class; tests/test_provider_modal.py
checks separately that every call the real adapter (`ModalSDK`) makes exists in the installed SDK with
those parameters. What the fake copies from Modal:

- apps are created on first use (App.lookup(create_if_missing=True)); a lookup by name in an app that does
  not exist is NotFoundError;
- a sandbox's name is unique among the app's *running* sandboxes (AlreadyExistsError); once it ends, the
  name is free again and `find_by_name` no longer finds it (V1 sandboxes, which Sandbox.create makes);
- names and tags follow Modal's client-side rules (the SDK's own checks raise InvalidError);
- a missing Secret is NotFoundError; an image that cannot be pulled is ImageBuildError;
- `poll` is None while running, then the exit code; a timeout is 124 and a termination 137, told apart
  as `wait()` tells them (SandboxTimeoutError, SandboxTerminatedError); `terminate` of an ended sandbox does
  nothing; an unknown sandbox id is NotFoundError everywhere;
- `find_by_tags` lists running sandboxes only, as Sandbox.list does.

Tests script the rest: `finish`, `time_out`, `kill` (Modal terminates it), `fail_next`, `fail_always`
(every call of a method fails until cleared), `hold` (creates wait until released, as a call that does not
answer; the sandbox starts once it is released), and `lose_next_answer` (the sandbox starts but the create
call fails on the way back).
"""

from __future__ import annotations

import copy
import secrets
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from modal import exception as modal_exception
from modal._utils.name_utils import check_object_name, check_tag_dict

from dispatcher.providers.modal import SandboxEnd, _class_words


@dataclass
class FakeSandbox:
    """One sandbox as the fake keeps it; `end` is None while it runs."""

    id: str
    app: str
    profile: str | None
    name: str
    tags: dict[str, str]
    command: list[str]
    image: str
    env: dict[str, str]
    secrets: list[str]
    resources: dict[str, Any]
    end: SandboxEnd | None = None
    stdout: str = ""
    stderr: str = ""
    terminate_calls: int = 0


class FakeModal:
    """A scriptable, thread-safe `ModalAPI`. `calls` records every call as (method, arguments)."""

    def __init__(
        self, *, secret_names: tuple[str, ...] = ("db-credentials",), bad_images: tuple[str, ...] = ()
    ) -> None:
        self.secret_names = set(secret_names)
        self.bad_images = set(bad_images)
        self.apps: dict[tuple[str, str | None], str] = {}
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._failures: dict[str, deque[BaseException]] = {}
        self._always: dict[str, BaseException] = {}
        self._lose_answers = 0
        self.released = threading.Event()
        self.released.set()

    # -- scripting ---------------------------------------------------------------------------------------------

    def fail_next(self, method: str, error: BaseException, n: int = 1) -> None:
        """The next `n` calls of `method` raise `error` before doing anything."""
        with self._lock:
            self._failures.setdefault(method, deque()).extend([error] * n)

    def fail_always(self, method: str, error: BaseException | None) -> None:
        """Every call of `method` raises `error` before doing anything, until called again with None."""
        with self._lock:
            if error is None:
                self._always.pop(method, None)
            else:
                self._always[method] = error

    def hold(self) -> None:
        """Creates wait (outside the lock) until `release`, then go on: a call that hangs, then answers."""
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def lose_next_answer(self) -> None:
        """The next create starts its sandbox, then fails as a dropped connection would."""
        with self._lock:
            self._lose_answers += 1

    def finish(self, sandbox_id: str, code: int, *, stdout: str = "", stderr: str = "") -> None:
        """The sandbox's command exits with `code` having written `stdout` and `stderr`."""
        with self._lock:
            box = self.sandboxes[sandbox_id]
            box.end, box.stdout, box.stderr = SandboxEnd(code), stdout, stderr

    def time_out(self, sandbox_id: str) -> None:
        """Modal stops the sandbox at its timeout."""
        error = modal_exception.SandboxTimeoutError()
        with self._lock:
            self.sandboxes[sandbox_id].end = SandboxEnd(124, type(error).__name__, _class_words(error))

    def kill(self, sandbox_id: str) -> None:
        """Modal terminates the sandbox for a reason of its own."""
        with self._lock:
            self._terminate(self.sandboxes[sandbox_id])

    def running(self) -> list[FakeSandbox]:
        with self._lock:
            return [box for box in self.sandboxes.values() if box.end is None]

    def of_run(self, run_id: str) -> list[FakeSandbox]:
        """Every sandbox started for a run, running or ended."""
        with self._lock:
            return [box for box in self.sandboxes.values() if box.tags.get("pushpool.io_run-id") == run_id]

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [args for name, args in self.calls if name == method]

    # -- ModalAPI ----------------------------------------------------------------------------------------------

    def create(
        self,
        command: list[str],
        *,
        app_name: str,
        name: str,
        tags: dict[str, str],
        image: str,
        env: dict[str, str],
        secrets: list[str],
        cpu: float | None,
        memory: int | None,
        gpu: str | None,
        timeout: int,
        region: str | list[str] | None,
        profile: str | None,
    ) -> str:
        self.released.wait(timeout=120)
        with self._lock:
            self._record("create", locals())
            check_object_name(name, "Sandbox")
            check_tag_dict(tags)
            if not command or not all(isinstance(arg, str) for arg in command):
                raise modal_exception.InvalidError("All entrypoint arguments must be strings")
            for secret in secrets:
                if secret not in self.secret_names:
                    raise modal_exception.NotFoundError(f"Secret '{secret}' not found in environment 'main'")
            if image in self.bad_images:
                raise modal_exception.ImageBuildError(f"Image build for im-{image} failed", image_id="im-test")
            self.apps.setdefault((app_name, profile), "ap-" + secrets_token(22))
            if any(b.name == name and b.end is None for b in self._in_app(app_name, profile)):
                raise modal_exception.AlreadyExistsError(f"Sandbox with name '{name}' already exists in the app")
            box = FakeSandbox(
                id="sb-" + secrets_token(22),
                app=app_name,
                profile=profile,
                name=name,
                tags=dict(tags),
                command=list(command),
                image=image,
                env=dict(env),
                secrets=list(secrets),
                resources={"cpu": cpu, "memory": memory, "gpu": gpu, "timeout": timeout, "region": region},
            )
            self.sandboxes[box.id] = box
            if self._lose_answers:
                self._lose_answers -= 1
                raise modal_exception.ConnectionError("Deadline exceeded while waiting for the server's answer")
            return box.id

    def find_by_name(self, app_name: str, name: str, *, profile: str | None) -> str | None:
        with self._lock:
            self._record("find_by_name", locals())
            if (app_name, profile) not in self.apps:
                raise modal_exception.NotFoundError(f"App '{app_name}' not found")
            found = [b for b in self._in_app(app_name, profile) if b.name == name and b.end is None]
            return found[0].id if found else None

    def find_by_tags(self, app_name: str, tags: dict[str, str], *, profile: str | None) -> list[str]:
        with self._lock:
            self._record("find_by_tags", locals())
            self.apps.setdefault((app_name, profile), "ap-" + secrets_token(22))
            boxes = self._in_app(app_name, profile)
            return [b.id for b in boxes if b.end is None and tags.items() <= b.tags.items()]

    def poll(self, sandbox_id: str, *, profile: str | None) -> SandboxEnd | None:
        with self._lock:
            self._record("poll", locals())
            return copy.copy(self._box(sandbox_id).end)

    def terminate(self, sandbox_id: str, *, profile: str | None) -> None:
        with self._lock:
            self._record("terminate", locals())
            box = self._box(sandbox_id)
            box.terminate_calls += 1
            if box.end is None:
                self._terminate(box)

    def output(self, sandbox_id: str, *, profile: str | None) -> tuple[str, str]:
        with self._lock:
            self._record("output", locals())
            box = self._box(sandbox_id)
            return box.stdout, box.stderr

    # -- internals ---------------------------------------------------------------------------------------------

    def _record(self, method: str, arguments: dict[str, Any]) -> None:
        self.calls.append((method, {k: copy.deepcopy(v) for k, v in arguments.items() if k != "self"}))
        if method in self._always:
            raise self._always[method]
        queue = self._failures.get(method)
        if queue:
            raise queue.popleft()

    def _in_app(self, app_name: str, profile: str | None) -> list[FakeSandbox]:
        return [b for b in self.sandboxes.values() if b.app == app_name and b.profile == profile]

    def _box(self, sandbox_id: str) -> FakeSandbox:
        box = self.sandboxes.get(sandbox_id)
        if box is None:
            raise modal_exception.NotFoundError(f"Sandbox {sandbox_id} not found")
        return box

    @staticmethod
    def _terminate(box: FakeSandbox) -> None:
        error = modal_exception.SandboxTerminatedError()
        box.end = SandboxEnd(137, type(error).__name__, _class_words(error))


def secrets_token(length: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))

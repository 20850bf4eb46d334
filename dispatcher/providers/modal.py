"""The `modal:push` provider: each run is one Modal Sandbox running the job's image and command.

Submission (SPEC §5, issue 14), for a rendered job (templates/modal-push.json):

    Sandbox.create(*command, app=App.lookup(app_name, create_if_missing=True),
                   image=Image.from_registry(image), name=pushpool-<idempotency key>,
                   tags={pushpool.io_run-id: <run id>, ...}, env=..., secrets=[Secret.from_name(...)],
                   cpu=..., memory=..., gpu=..., timeout=..., region=...)

The infrastructure id is the sandbox's object id (`sb-...`), prefixed with `<profile>/` when the pool names
a Modal profile, so the later calls use the same credentials.

Idempotency: Modal keeps a sandbox's name unique among the app's running sandboxes. A create that finds
its name taken means an earlier call with the same key started it (a crash, or a timeout, between "created"
and "recorded"), so the provider looks that sandbox up by name instead of starting another. A resubmission
or a later attempt first lists the app's running sandboxes tagged with the run's id (a create whose answer
was lost). Modal forgets a V1 sandbox's name once it has ended; a job that ended before its launch was
recorded has reported its end through its callback, and the reconciler does not resubmit a finished run.

Every Modal call sits in `ModalSDK`, the only code here that imports `modal`, and only when a call is made:
loading this module, constructing the provider and `validate()` need neither the SDK nor credentials.
Tests drive the provider through a fake of the same shape (tests/modal_fakes.py) and check every call
`ModalSDK` makes against the installed package (tests/test_provider_modal.py).

Credentials are Modal's own: MODAL_TOKEN_ID / MODAL_TOKEN_SECRET in the dispatcher's environment, else the
active profile of the Modal config file, or the profile a pool names in `modal_credentials`. pushpool never
stores, logs or passes them on: the sandbox gets the job's env, which holds only its own run's token.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from ..errors import InvalidInput, ProviderError
from .base import JobState, JobStatus, first_attempt, job_settings_error, key_head, split_command

if importlib.util.find_spec("modal") is None:
    # Checked here, not imported: the registry turns this into "pip install 'pushpool[modal]'", while a
    # dispatcher with the extra installed still pays for the SDK only on its first Modal call.
    raise ModuleNotFoundError("No module named 'modal'", name="modal")

__all__ = [
    "DEFAULT_APP_NAME",
    "ModalAPI",
    "ModalJobConfiguration",
    "ModalProvider",
    "ModalSDK",
    "SandboxEnd",
    "end_status",
    "modal_error",
    "sandbox_name",
    "sandbox_tags",
]

DEFAULT_APP_NAME = "pushpool"
DEFAULT_TIMEOUT = 3600
MAX_TIMEOUT = 86400
"""Modal's maximum lifetime of a sandbox: 24 hours."""

RUN_ID_TAG = "pushpool.io_run-id"
"""The run's id (Modal tags allow no '/', so the label pushpool.io/run-id becomes this)."""
LAUNCH_TAG = "pushpool.io_launch"
"""The head of the submission key (`<run id>`, or `<run id>-r<N>` after `flow-run retry`): the tag the provider
finds a launch by across attempts, and never a retried run's earlier life."""
KEY_TAG = "pushpool.io_submission"

# Modal's rules: object names are 1-64 of these characters; tag keys and values 1-63 of them.
_OBJECT_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_NOT_TAG_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_TAG_LENGTH = 63
_PROFILE = r"^[A-Za-z0-9_-]{1,64}$"
_GPU = re.compile(r"[A-Za-z0-9._-]{1,64}(:[1-9][0-9]?)?")
_IMAGE = re.compile(r"\S{1,1024}")
_SANDBOX_ID = re.compile(r"(?:(?P<profile>[A-Za-z0-9_-]{1,64})/)?(?P<id>sb-[A-Za-z0-9]+)")
_TOKEN_KEYS = ("token", "secret")

# Modal's exception classes (modal.exception) by what a retry can do about them. A class named in neither
# tuple is permanent; every name must exist in the installed SDK (the contract test checks both lists).
TRANSIENT_ERRORS = (
    "ConnectionError",
    "ResourceExhaustedError",
    "InternalError",
    "InternalFailure",
    "ServiceError",
    "TimeoutError",
    "RemoteError",
    "ClientClosed",
)
PERMANENT_ERRORS = (
    "AuthError",
    "PermissionDeniedError",
    "NotFoundError",
    "InvalidError",
    "AlreadyExistsError",
    "ImageBuildError",
    "VersionError",
    "RequestSizeError",
    "UnimplementedError",
)
"""Checked before TRANSIENT_ERRORS: ImageBuildError is a RemoteError, but a bad image stays bad."""


# -- configuration model ---------------------------------------------------------------------------------------


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


class ModalCredentials(BaseModel):
    """`modal_credentials`: which Modal profile's token the dispatcher uses; none means Modal's own lookup."""

    model_config = ConfigDict(extra="forbid")

    profile: str | None = Field(default=None, pattern=_PROFILE)


class ModalJobConfiguration(BaseModel):
    """A rendered `modal:push` job (templates/modal-push.json) after the dispatcher injected env, labels and name."""

    model_config = ConfigDict(extra="forbid")

    image: str
    command: list[str]
    env: dict[str, str | None] = {}
    cpu: float | None = Field(default=None, gt=0)
    memory: int | None = Field(default=None, ge=1)
    gpu: str | None = None
    timeout: int = Field(default=DEFAULT_TIMEOUT, ge=1, le=MAX_TIMEOUT)
    region: str | list[str] | None = None
    app_name: str = DEFAULT_APP_NAME
    secrets: list[str] = []
    modal_credentials: ModalCredentials | None = None
    name: str | None = None
    labels: dict[str, str] = {}

    @field_validator("gpu", "name", "region", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("image", mode="before")
    @classmethod
    def _image(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError("is required: a registry reference such as python:3.11-slim")
        if isinstance(value, str) and not _IMAGE.fullmatch(value):
            raise ValueError("must be a registry reference such as python:3.11-slim, without spaces")
        return value

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, value: str | None) -> str | None:
        if value is not None and not _GPU.fullmatch(value):
            raise ValueError("must be a Modal GPU type, optionally with a count, such as A10G or H100:2")
        return value

    @field_validator("app_name")
    @classmethod
    def _app_name(cls, value: str) -> str:
        if not _OBJECT_NAME.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits, '.', '-' or '_' (Modal's rule for app names)")
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        # A string is split as a shell would split it, but no shell ever runs it (SPEC §5).
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError("is required: a sandbox without a command would idle until its timeout")
        value = split_command(value)
        if isinstance(value[0], str) and not value[0].strip():
            raise ValueError("must start with a program name, not a blank argument")
        return value

    @field_validator("cpu", "memory", "timeout", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return value

    @field_validator("timeout", "app_name", mode="before")
    @classmethod
    def _unset_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return DEFAULT_TIMEOUT if info.field_name == "timeout" else DEFAULT_APP_NAME
        return value

    @field_validator("region")
    @classmethod
    def _regions(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and (not value or any(not item.strip() for item in value)):
            raise ValueError("must name at least one region, and no blank one")
        return value

    @field_validator("env", "labels", "secrets", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return [] if info.field_name == "secrets" else {}
        return value

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not _OBJECT_NAME.fullmatch(name)]
        if bad:
            raise ValueError(
                f"{', '.join(repr(b) for b in bad)} is not a Modal Secret name (1-64 letters, digits, '.', '-' or '_')"
            )
        return value

    @field_validator("modal_credentials", mode="before")
    @classmethod
    def _no_token(cls, value: Any) -> Any:
        if value in (None, "", {}):
            return None
        if isinstance(value, dict):
            # Say which keys, never their values: a token in a template would be stored with the pool.
            tokens = sorted(str(k) for k in value if any(word in str(k).lower() for word in _TOKEN_KEYS))
            if tokens:
                raise ValueError(
                    f"{', '.join(tokens)} would store a Modal token with the pool; set MODAL_TOKEN_ID and "
                    f"MODAL_TOKEN_SECRET in the dispatcher's environment, or name a profile: "
                    f'{{"profile": "NAME"}}'
                )
        return value

    @property
    def profile(self) -> str | None:
        return self.modal_credentials.profile if self.modal_credentials else None


# -- pure mapping: job -> Modal names, tags, ids, statuses -----------------------------------------------------


def sandbox_name(idempotency_key: str) -> str:
    """The sandbox's Modal name for a submission: `pushpool-<key>` when Modal allows it, else a digest of the key.

    The prefix keeps it clear of Modal's app ids (`ap-...`), which a name may not look like.
    """
    name = f"pushpool-{idempotency_key}"
    if _OBJECT_NAME.fullmatch(name):
        return name
    return "pushpool-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]


def _tag_text(text: str) -> str:
    # Out-of-range characters become "_" rather than failing the run: a pool named "nightly (eu)" is fine.
    return _NOT_TAG_CHARS.sub("_", text)[:_TAG_LENGTH] or "_"


def sandbox_tags(config: ModalJobConfiguration, idempotency_key: str) -> dict[str, str]:
    """The sandbox's tags: `name` from the job's name, the labels (pushpool's run, pool and deployment among
    them), the run id, the launch (the key's head) and the submission key, spelled as Modal allows."""
    merged: dict[str, str] = {}
    if config.name:
        merged["name"] = config.name
    merged.update(config.labels)
    tags = {_tag_text(key): _tag_text(value) for key, value in merged.items()}
    run_id = config.env.get("PUSHPOOL_RUN_ID") or config.labels.get("pushpool.io/run-id")
    tags[RUN_ID_TAG] = _tag_text(run_id or key_head(idempotency_key))
    tags[LAUNCH_TAG] = _tag_text(key_head(idempotency_key))
    tags[KEY_TAG] = _tag_text(idempotency_key)
    return tags


def make_infrastructure_id(sandbox_id: str, profile: str | None) -> str:
    """`sb-...`, or `<profile>/sb-...` when the pool named a Modal profile (later calls need its credentials)."""
    return f"{profile}/{sandbox_id}" if profile else sandbox_id


def split_infrastructure_id(infrastructure_id: str) -> tuple[str, str | None]:
    """(sandbox id, profile) of an infrastructure id; ValueError if this provider did not make it."""
    match = _SANDBOX_ID.fullmatch(infrastructure_id)
    if match is None:
        raise ValueError(f"{infrastructure_id!r} is not a Modal sandbox id (sb-...)")
    return match.group("id"), match.group("profile")


@dataclass(frozen=True)
class SandboxEnd:
    """How a sandbox ended: its return code and, when Modal ended it, Modal's exception class and words."""

    returncode: int
    reason: str | None = None
    """`SandboxTimeoutError` or `SandboxTerminatedError` when Modal stopped it; None when its command exited."""
    words: str | None = None


def end_status(sandbox_id: str, end: SandboxEnd | None, *, cancelled: bool = False) -> JobStatus:
    """What a sandbox's poll() says of its job.

    None (still running): RUNNING, since Modal does not tell a sandbox being scheduled from one running.
    Exit 0: COMPLETED. Another exit: FAILED with the code. Timed out: FAILED (the job outlived the time its
    pool gives it), in Modal's words. Terminated: CANCELLED if pushpool asked, else CRASHED (Modal stopped it).
    """
    if end is None:
        return JobStatus(JobState.RUNNING, message=f"sandbox {sandbox_id} is running")
    code = end.returncode
    if end.reason == "SandboxTerminatedError":
        state = JobState.CANCELLED if cancelled else JobState.CRASHED
        return JobStatus(state, exit_code=code, message=f"sandbox {sandbox_id} was terminated: {end.words}")
    if end.reason == "SandboxTimeoutError":
        return JobStatus(JobState.FAILED, exit_code=code, message=f"sandbox {sandbox_id} timed out: {end.words}")
    if code == 0:
        return JobStatus(JobState.COMPLETED, exit_code=0)
    return JobStatus(JobState.FAILED, exit_code=code, message=f"the command exited with code {code}")


# -- errors ----------------------------------------------------------------------------------------------------


def _class_words(exc: BaseException) -> str:
    """An exception's text, or Modal's description of its class when it has none (SandboxTimeoutError())."""
    text = str(exc).strip()
    if text:
        return text
    doc = (type(exc).__doc__ or "").strip().splitlines()
    return doc[0].removeprefix("Raised when ").rstrip(".") if doc else type(exc).__name__


def modal_error(exc: BaseException, action: str) -> ProviderError:
    """A Modal SDK error as a ProviderError in Modal's words; transient when a retry may help."""
    from modal import exception as modal_exception

    words = f"Modal {action} failed: {type(exc).__name__}: {_class_words(exc)}"
    permanent = tuple(getattr(modal_exception, name) for name in PERMANENT_ERRORS)
    transient = tuple(getattr(modal_exception, name) for name in TRANSIENT_ERRORS)
    if isinstance(exc, permanent):
        return ProviderError(words, transient=False)
    if isinstance(exc, (*transient, OSError, TimeoutError)):
        return ProviderError(words, transient=True)  # OSError covers the builtin ConnectionError
    if isinstance(exc, modal_exception.Error):
        return ProviderError(words, transient=False)
    # Not Modal's: a bug or an unexpected library error. A retry is cheap and the words are kept.
    return ProviderError(words, transient=True)


def _is(exc: BaseException, name: str) -> bool:
    from modal import exception as modal_exception

    return isinstance(exc, getattr(modal_exception, name))


# -- the SDK adapter -------------------------------------------------------------------------------------------


class ModalAPI(Protocol):
    """The Modal calls the provider makes; `ModalSDK` makes them, tests/modal_fakes.py fakes them.

    Methods raise Modal's own exceptions (modal.exception); the provider maps them. `profile` None means
    Modal's default credentials.
    """

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
        """Start a sandbox; its object id."""
        ...

    def find_by_name(self, app_name: str, name: str, *, profile: str | None) -> str | None:
        """The running sandbox of that name in the app, or None."""
        ...

    def find_by_tags(self, app_name: str, tags: dict[str, str], *, profile: str | None) -> list[str]:
        """The app's running sandboxes that carry at least these tags."""
        ...

    def poll(self, sandbox_id: str, *, profile: str | None) -> SandboxEnd | None:
        """None while the sandbox runs, else how it ended."""
        ...

    def terminate(self, sandbox_id: str, *, profile: str | None) -> None: ...

    def output(self, sandbox_id: str, *, profile: str | None) -> tuple[str, str]:
        """(stdout, stderr) of an ended sandbox, as far as Modal still has them."""
        ...


class ModalSDK:
    """`ModalAPI` on the modal package: the only code in pushpool that calls Modal.

    The package is imported on the first call. Apps (one App.lookup per name and profile) and per-profile
    clients are kept for the life of the object, so warm Lambda invocations reuse them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._apps: dict[tuple[str, str | None], Any] = {}

    @staticmethod
    def _modal() -> Any:
        import modal

        return modal

    def _client(self, profile: str | None) -> Any:
        """None (Modal's own lookup: MODAL_TOKEN_ID/SECRET, else the active profile) or the profile's client."""
        if profile is None:
            return None
        with self._lock:
            if profile not in self._clients:
                modal = self._modal()
                # use_env=False: MODAL_TOKEN_ID/SECRET are the default credentials, not this profile's.
                token_id = modal.config.config.get("token_id", profile=profile, use_env=False)
                token_secret = modal.config.config.get("token_secret", profile=profile, use_env=False)
                if not token_id or not token_secret:
                    raise modal.exception.AuthError(
                        f"profile {profile!r} has no token in the Modal config file; "
                        f"run `modal token set --profile {profile}` where the dispatcher runs"
                    )
                self._clients[profile] = modal.Client.from_credentials(token_id, token_secret)
            return self._clients[profile]

    def _app(self, app_name: str, profile: str | None) -> Any:
        key = (app_name, profile)
        app = self._apps.get(key)
        if app is None:
            client = self._client(profile)
            app = self._modal().App.lookup(app_name, create_if_missing=True, client=client)
            with self._lock:
                self._apps[key] = app
        return app

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
        modal = self._modal()
        client = self._client(profile)
        sandbox = modal.Sandbox.create(
            *command,
            app=self._app(app_name, profile),
            name=name,
            tags=tags,
            image=modal.Image.from_registry(image),
            env=env,
            secrets=[modal.Secret.from_name(secret, client=client) for secret in secrets],
            cpu=cpu,
            memory=memory,
            gpu=gpu,
            timeout=timeout,
            region=region,
            client=client,
        )
        return str(sandbox.object_id)

    def find_by_name(self, app_name: str, name: str, *, profile: str | None) -> str | None:
        modal = self._modal()
        try:
            sandbox = modal.Sandbox.from_name(app_name, name, client=self._client(profile))
        except modal.exception.NotFoundError:
            return None
        return str(sandbox.object_id)

    def find_by_tags(self, app_name: str, tags: dict[str, str], *, profile: str | None) -> list[str]:
        modal = self._modal()
        app = self._app(app_name, profile)
        found = modal.Sandbox.list(app_id=app.app_id, tags=tags, client=self._client(profile))
        return [str(sandbox.object_id) for sandbox in found]

    def poll(self, sandbox_id: str, *, profile: str | None) -> SandboxEnd | None:
        modal = self._modal()
        sandbox = modal.Sandbox.from_id(sandbox_id, client=self._client(profile))
        code = sandbox.poll()
        if code is None:
            return None
        if code in (124, 137):
            # Modal reports a timeout as 124 and a termination as 137; so may a command itself. wait() on an
            # ended sandbox returns at once, raising only if Modal stopped it: that tells the two apart.
            try:
                sandbox.wait(raise_on_termination=True)
            except (modal.exception.SandboxTimeoutError, modal.exception.SandboxTerminatedError) as exc:
                return SandboxEnd(int(code), type(exc).__name__, _class_words(exc))
        return SandboxEnd(int(code))

    def terminate(self, sandbox_id: str, *, profile: str | None) -> None:
        modal = self._modal()
        modal.Sandbox.from_id(sandbox_id, client=self._client(profile)).terminate()

    def output(self, sandbox_id: str, *, profile: str | None) -> tuple[str, str]:
        modal = self._modal()
        sandbox = modal.Sandbox.from_id(sandbox_id, client=self._client(profile))
        return str(sandbox.stdout.read()), str(sandbox.stderr.read())


# -- the provider ----------------------------------------------------------------------------------------------


class ModalProvider:
    """Runs jobs as Modal Sandboxes. Thread-safe: the dispatcher submits from several threads at once.

    `sdk`: the Modal calls to use (a fake in tests); `ModalSDK()` otherwise, which touches nothing until used.
    """

    status_is_cheap = False
    """status() is a Modal call: the reconciler asks only about runs that have been silent for a while."""

    def __init__(self, sdk: ModalAPI | None = None) -> None:
        self.sdk: ModalAPI = sdk if sdk is not None else ModalSDK()
        self._lock = threading.Lock()
        self._apps: dict[tuple[str, str | None], None] = {(DEFAULT_APP_NAME, None): None}
        """(app, profile) pairs to search in `find`: the default app, then every app this provider used."""
        self._cancelled: set[str] = set()

    # -- Provider protocol -------------------------------------------------------------------------------------

    def validate(self, job: dict[str, Any]) -> dict[str, Any]:
        """Check a rendered job against `ModalJobConfiguration`; return it normalised (command as a list)."""
        return self._parse(job).model_dump(mode="json", exclude_none=True)

    def submit(self, job: dict[str, Any], *, idempotency_key: str, resubmission: bool = False) -> str:
        """Start the job's sandbox once per key; return its infrastructure id (see the module docstring)."""
        try:
            config = self._parse(job)
        except InvalidInput as exc:
            raise ProviderError(str(exc), transient=False) from None
        profile, app_name = config.profile, config.app_name
        with self._lock:
            self._apps[(app_name, profile)] = None
        tags = sandbox_tags(config, idempotency_key)

        if resubmission or not first_attempt(idempotency_key):
            # An earlier call may have started a sandbox whose id never came back: find this launch's, any attempt.
            running = self._call(
                "Sandbox.list", self.sdk.find_by_tags, app_name, {LAUNCH_TAG: tags[LAUNCH_TAG]}, profile=profile
            )
            if running:
                return make_infrastructure_id(running[0], profile)

        name = sandbox_name(idempotency_key)
        try:
            sandbox_id = self.sdk.create(
                list(config.command),
                app_name=app_name,
                name=name,
                tags=tags,
                image=config.image,
                env={key: value for key, value in config.env.items() if value is not None},
                secrets=list(config.secrets),
                cpu=config.cpu,
                memory=config.memory,
                gpu=config.gpu,
                timeout=config.timeout,
                region=config.region,
                profile=profile,
            )
        except Exception as exc:
            if not _is(exc, "AlreadyExistsError"):
                raise modal_error(exc, "Sandbox.create") from None
            # The name is taken: this submission's sandbox runs already. Return it instead of a second one.
            found = self._call("Sandbox.from_name", self.sdk.find_by_name, app_name, name, profile=profile)
            if found is None:  # it ended between the two calls, or Modal's lookup lags: try again later
                raise ProviderError(
                    f"Modal Sandbox.create refused name {name} as taken in app {app_name}, and Sandbox.from_name "
                    f"does not find it: {_class_words(exc)}",
                    transient=True,
                ) from None
            return make_infrastructure_id(found, profile)
        return make_infrastructure_id(sandbox_id, profile)

    def find(self, idempotency_key: str) -> str | None:
        """The running sandbox launched for this key: by its name, else by its launch tag (a sandbox of an earlier
        attempt that was never recorded counts, as for ECS: the launch has happened; a retried run's earlier life
        does not).

        It searches the default app and the apps this provider used. Modal forgets a sandbox's name once it
        ends and lists only running sandboxes, so an ended launch is not found (see the module docstring).
        """
        name = sandbox_name(idempotency_key)
        launch = {LAUNCH_TAG: _tag_text(key_head(idempotency_key))}
        with self._lock:
            places = list(self._apps)
        for app_name, profile in places:
            try:
                found = self.sdk.find_by_name(app_name, name, profile=profile)
                if found is None:
                    found = next(iter(self.sdk.find_by_tags(app_name, launch, profile=profile)), None)
            except Exception as exc:
                if _is(exc, "NotFoundError"):
                    continue  # the app itself does not exist (yet)
                raise modal_error(exc, "Sandbox.from_name") from None
            if found is not None:
                return make_infrastructure_id(found, profile)
        return None

    def status(self, infrastructure_id: str) -> JobStatus:
        """The sandbox's status (see `end_status`); MISSING when Modal does not know it."""
        try:
            sandbox_id, profile = split_infrastructure_id(infrastructure_id)
        except ValueError as exc:
            return JobStatus(JobState.MISSING, message=str(exc))
        try:
            end = self.sdk.poll(sandbox_id, profile=profile)
        except Exception as exc:
            if _is(exc, "NotFoundError"):
                return JobStatus(JobState.MISSING, message=f"Modal does not know sandbox {sandbox_id}: {exc}")
            raise modal_error(exc, "Sandbox.poll") from None
        with self._lock:
            cancelled = infrastructure_id in self._cancelled
        return end_status(sandbox_id, end, cancelled=cancelled)

    def cancel(self, infrastructure_id: str) -> None:
        """Sandbox.terminate(); a sandbox that has ended or that Modal no longer knows needs nothing."""
        try:
            sandbox_id, profile = split_infrastructure_id(infrastructure_id)
        except ValueError as exc:
            raise ProviderError(f"cannot stop {infrastructure_id!r}: {exc}", transient=False) from None
        with self._lock:
            self._cancelled.add(infrastructure_id)
        try:
            self.sdk.terminate(sandbox_id, profile=profile)
        except Exception as exc:
            if _is(exc, "NotFoundError"):
                return  # nothing runs there to stop; status() will say MISSING
            raise modal_error(exc, "Sandbox.terminate") from None

    def logs(self, infrastructure_id: str) -> str:
        """The sandbox's stdout, then its stderr under a header, where Modal still keeps them.

        Modal streams a running sandbox's output to its end, so a running one is refused with a pointer to
        `modal container logs`, which follows it live.
        """
        try:
            sandbox_id, profile = split_infrastructure_id(infrastructure_id)
        except ValueError as exc:
            raise ProviderError(f"cannot read the logs of {infrastructure_id!r}: {exc}", transient=False) from None
        if self._call("Sandbox.poll", self.sdk.poll, sandbox_id, profile=profile) is None:
            raise ProviderError(
                f"sandbox {sandbox_id} is still running; its output can be read here once it ends, or followed "
                f"live with `modal container logs {sandbox_id}`",
                transient=True,
            )
        stdout, stderr = self._call("Sandbox.stdout/stderr", self.sdk.output, sandbox_id, profile=profile)
        return stdout + (f"--- stderr ---\n{stderr}" if stderr else "")

    # -- internals ---------------------------------------------------------------------------------------------

    @staticmethod
    def _parse(job: Any) -> ModalJobConfiguration:
        if not isinstance(job, dict):
            raise InvalidInput(f"a modal:push job must be a JSON object, not {type(job).__name__}.")
        try:
            return ModalJobConfiguration.model_validate(job)
        except ValidationError as exc:
            raise InvalidInput(
                job_settings_error(exc, "modal:push", ModalJobConfiguration, {"modal_credentials": ModalCredentials})
            ) from None

    @staticmethod
    def _call(action: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            raise modal_error(exc, action) from None

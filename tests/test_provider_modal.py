"""The `modal:push` provider through `FakeModal` (tests/modal_fakes.py), and the contract of its real adapter.

Modal has no offline server. The provider is driven through a fake that behaves as Modal does; the
contract tests at the end run the real adapter, `ModalSDK`, against a stand-in of the `modal` module whose
every callable checks its arguments against the installed SDK's signature, so an SDK change that would
break a call fails here instead of in production. No test talks to Modal.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import modal
import pytest
from modal import exception as modal_exception
from modal._utils.name_utils import check_object_name, check_tag_dict
from modal_fakes import FakeModal

from dispatcher import templating
from dispatcher.errors import ConfigError, InvalidInput, ProviderError
from dispatcher.providers.base import JobState, Provider, Providers, provider_logs
from dispatcher.providers.modal import (
    PERMANENT_ERRORS,
    TRANSIENT_ERRORS,
    ModalJobConfiguration,
    ModalProvider,
    ModalSDK,
    SandboxEnd,
    modal_error,
    sandbox_name,
    sandbox_tags,
)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "templates" / "modal-push.json"
ISSUE_VARIABLES = {
    "image",
    "command",
    "env",
    "cpu",
    "memory",
    "gpu",
    "timeout",
    "region",
    "app_name",
    "secrets",
    "modal_credentials",
    "name",
    "labels",
}


def render_job(job_variables: dict[str, Any], *, run_id: str | None = None, pool: str = "modal pool") -> dict[str, Any]:
    """A job as the dispatcher makes it: template validated, variables resolved, rendered, run context injected."""
    template = json.loads(TEMPLATE.read_text())
    templating.validate_template(template)
    values = templating.resolve_job_variables(template, None, job_variables, None)
    job = templating.render(template["job_configuration"], values, {})
    run_id = run_id or str(uuid.uuid4())
    return templating.inject_run_context(
        job,
        run_id=run_id,
        deployment="nightly",
        pool=pool,
        queue="default",
        parameters={"day": "2026-03-01"},
        callback_url=f"http://127.0.0.1:4300/callbacks/runs/{run_id}",
        callback_token="token-of-the-run",
        run_name="silent-heron",
    )


@pytest.fixture
def fake() -> FakeModal:
    return FakeModal()


@pytest.fixture
def provider(fake: FakeModal) -> ModalProvider:
    return ModalProvider(fake)


def submit(provider: ModalProvider, variables: dict[str, Any] | None = None, **kw: Any) -> tuple[str, str, str]:
    """(run id, key, infrastructure id) of a fresh run's first submission."""
    run_id = str(uuid.uuid4())
    job = provider.validate(render_job({"command": "python -m flows.nightly", **(variables or {})}, run_id=run_id))
    key = f"{run_id}-1"
    return run_id, key, provider.submit(job, idempotency_key=key, **kw)


# -- the template and the model --------------------------------------------------------------------------------


def test_template_declares_the_model_s_fields_and_its_defaults_render_into_a_valid_job(
    provider: ModalProvider,
) -> None:
    template = json.loads(TEMPLATE.read_text())
    templating.validate_template(template)
    fields = set(ModalJobConfiguration.model_fields)
    assert set(template["variables"]["properties"]) == ISSUE_VARIABLES == fields
    assert set(template["job_configuration"]) == fields
    assert template["variables"]["properties"]["app_name"]["default"] == "pushpool"

    job = provider.validate(render_job({"command": "python -m flows.nightly"}))
    assert job["app_name"] == "pushpool" and job["timeout"] == 3600 and job["image"] == "python:3.11-slim"
    assert job["command"] == ["python", "-m", "flows.nightly"]
    assert job["labels"]["pushpool.io/pool"] == "modal pool"
    assert provider.validate(job) == job, "validate() is idempotent: its output validates to itself"


def test_every_variable_set_renders_into_a_job_the_model_accepts(provider: ModalProvider) -> None:
    job = provider.validate(
        render_job(
            {
                "image": "ghcr.io/acme/flows:2",
                "command": ["python", "-m", "flows.train"],
                "env": {"MODE": "full"},
                "cpu": 2.5,
                "memory": 8192,
                "gpu": "H100:2",
                "timeout": 86400,
                "region": ["us-east", "eu-west"],
                "app_name": "flows-prod",
                "secrets": ["db-credentials", "wandb"],
                "modal_credentials": {"profile": "team-a"},
                "name": "nightly-train",
                "labels": {"team": "ml"},
            }
        )
    )
    config = ModalJobConfiguration.model_validate(job)
    assert (config.cpu, config.memory, config.gpu, config.timeout) == (2.5, 8192, "H100:2", 86400)
    assert config.region == ["us-east", "eu-west"] and config.profile == "team-a"
    assert config.secrets == ["db-credentials", "wandb"] and config.env["MODE"] == "full"


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        ({}, "command: field required"),
        ({"command": "x", "image": " "}, "image: is required"),
        ({"command": "x", "image": "python 3"}, "image: must be a registry reference"),
        ({"command": "python 'unclosed"}, "command: cannot be split"),
        ({"command": "x", "gpu": "two h100s"}, "gpu: must be a Modal GPU type"),
        ({"command": "x", "timeout": 90000}, "timeout: "),
        ({"command": "x", "app_name": "my app"}, "app_name: must be 1-64"),
        ({"command": "x", "secrets": ["no/slash"]}, "secrets: 'no/slash' is not a Modal Secret name"),
        ({"command": "x", "region": []}, "region: must name at least one region"),
        ({"command": "x", "modal_credentials": {"profile": "a b"}}, "modal_credentials.profile"),
    ],
)
def test_validate_names_the_field_and_the_rule(provider: ModalProvider, variables: dict[str, Any], words: str) -> None:
    job = render_job({})
    job.update(variables)  # straight into the job: the model, not the template's schema, is under test
    if "command" not in variables:
        job.pop("command", None)
    with pytest.raises(InvalidInput, match=words.replace("(", r"\(")):
        provider.validate(job)


def test_a_token_in_the_template_is_refused_without_echoing_it(provider: ModalProvider) -> None:
    job = render_job({"command": "x"})
    job["modal_credentials"] = {"token_id": "ak-123", "token_secret": "as-very-secret"}
    with pytest.raises(InvalidInput) as caught:
        provider.validate(job)
    message = str(caught.value)
    assert "token_id, token_secret would store a Modal token" in message and "MODAL_TOKEN_ID" in message
    assert "as-very-secret" not in message and "ak-123" not in message
    job["modal_credentials"] = {"profile": "a", "workspace": "w"}
    with pytest.raises(InvalidInput, match="modal_credentials.workspace: is not a setting .* allowed: profile"):
        provider.validate(job)


def test_validate_and_construction_import_nothing_of_modal_and_an_ecs_pass_never_does() -> None:
    job = render_job({"command": "python -m flows"})
    code = textwrap.dedent(
        f"""
        import json, sys
        from dispatcher.providers.base import Providers
        providers = Providers()
        provider = providers.get("modal:push")
        provider.validate(json.loads({json.dumps(job)!r}))
        assert not [m for m in sys.modules if m.split(".")[0] in ("modal", "grpclib", "synchronicity")], "modal"
        providers.get("ecs:push")
        import dispatcher.dispatch
        assert "modal" not in sys.modules
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_without_the_extra_the_pool_type_names_the_install_command() -> None:
    code = textwrap.dedent(
        """
        import sys
        class NoModal:
            def find_spec(self, name, path=None, target=None):
                if name == "modal" or name.startswith("modal."):
                    raise ModuleNotFoundError("No module named 'modal'", name="modal")
                return None
        sys.meta_path.insert(0, NoModal())
        from dispatcher.providers.base import load_provider_class
        from dispatcher.errors import ConfigError
        try:
            load_provider_class("modal:push")
        except ConfigError as exc:
            print(exc)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pip install 'pushpool[modal]'" in result.stdout
    assert ConfigError  # the error class the registry raises


def test_the_registry_gives_the_modal_provider() -> None:
    loaded = Providers().get("modal:push")
    assert isinstance(loaded, ModalProvider) and isinstance(loaded.sdk, ModalSDK)
    typed: Provider = loaded  # the protocol, checked by mypy
    assert typed is loaded


# -- names, tags, submission -----------------------------------------------------------------------------------


def test_sandbox_names_and_tags_keep_to_modal_s_rules() -> None:
    key = f"{uuid.uuid4()}-12"
    assert sandbox_name(key) == f"pushpool-{key}"
    long_key = "run/with:odd chars-" + "x" * 80
    for name in (sandbox_name(key), sandbox_name(long_key), sandbox_name("ap-" + "a" * 22)):
        check_object_name(name, "Sandbox")  # Modal's own client-side check
    assert sandbox_name(long_key) != sandbox_name(long_key + "y")

    job = render_job({"command": "x", "labels": {"team/owner": "data (eu)", "long": "v" * 100}, "name": "a b"})
    config = ModalJobConfiguration.model_validate(ModalProvider(FakeModal()).validate(job))
    tags = sandbox_tags(config, key)
    check_tag_dict(tags)
    assert tags["pushpool.io_pool"] == "modal_pool" and tags["team_owner"] == "data__eu_"
    assert tags["name"] == "a_b" and len(tags["long"]) == 63
    assert tags["pushpool.io_run-id"] == config.env["PUSHPOOL_RUN_ID"] and tags["pushpool.io_submission"] == key
    assert tags["pushpool.io_launch"] == key.rpartition("-")[0]


def test_submit_creates_one_sandbox_with_the_job_s_settings(provider: ModalProvider, fake: FakeModal) -> None:
    run_id, key, infra_id = submit(
        provider,
        {"cpu": 1.5, "memory": 4096, "gpu": "A10G", "timeout": 600, "region": "us-east", "secrets": ["db-credentials"]},
    )
    (call,) = fake.calls_of("create")
    assert infra_id.startswith("sb-") and fake.sandboxes[infra_id].name == f"pushpool-{key}"
    assert call["command"] == ["python", "-m", "flows.nightly"] and call["image"] == "python:3.11-slim"
    assert call["app_name"] == "pushpool" and call["profile"] is None
    assert call["secrets"] == ["db-credentials"]
    assert (call["cpu"], call["memory"], call["gpu"], call["timeout"], call["region"]) == (
        1.5,
        4096,
        "A10G",
        600,
        "us-east",
    )
    # the sandbox gets its own run's token through its env, and nothing of the dispatcher's
    assert call["env"]["PUSHPOOL_CALLBACK_TOKEN"] == "token-of-the-run" and call["env"]["PUSHPOOL_RUN_ID"] == run_id
    assert not [k for k in call["env"] if k.startswith("MODAL_")]
    assert call["tags"]["pushpool.io_run-id"] == run_id
    assert not fake.calls_of("find_by_tags"), "a first submission spares the lookup"


def test_the_same_key_twice_returns_the_running_sandbox(provider: ModalProvider, fake: FakeModal) -> None:
    run_id, key, infra_id = submit(provider)
    job = provider.validate(render_job({"command": "python -m flows.nightly"}, run_id=run_id))
    assert provider.submit(job, idempotency_key=key) == infra_id  # Modal refused the taken name
    assert len(fake.of_run(run_id)) == 1
    assert provider.submit(job, idempotency_key=key, resubmission=True) == infra_id  # found by its run tag
    assert len(fake.calls_of("create")) == 2 and len(fake.of_run(run_id)) == 1
    assert provider.find(key) == infra_id
    assert provider.find(f"{run_id}-7") == infra_id, "a later attempt's key finds the run's sandbox by its tag"
    assert provider.find(f"{uuid.uuid4()}-1") is None
    fake.finish(infra_id, 0)
    assert provider.find(key) is None, "Modal forgets an ended sandbox's name"


def test_a_retried_run_never_takes_its_earlier_life_s_sandbox(provider: ModalProvider, fake: FakeModal) -> None:
    run_id, key, earlier = submit(provider)  # still running: the run was crashed while Modal kept it
    job = provider.validate(render_job({"command": "python -m flows.nightly"}, run_id=run_id))
    for retry_key in (f"{run_id}-r1-1", f"{run_id}-r1-2"):
        assert provider.find(retry_key) is None
    later = provider.submit(job, idempotency_key=f"{run_id}-r1-2", resubmission=True)
    assert later != earlier and len(fake.of_run(run_id)) == 2
    assert fake.sandboxes[later].tags["pushpool.io_launch"] == f"{run_id}-r1"
    assert provider.find(f"{run_id}-r1-5") == later


def test_a_create_whose_answer_was_lost_is_found_by_the_next_attempt(provider: ModalProvider, fake: FakeModal) -> None:
    fake.lose_next_answer()
    run_id = str(uuid.uuid4())
    job = provider.validate(render_job({"command": "x"}, run_id=run_id))
    with pytest.raises(ProviderError) as caught:
        provider.submit(job, idempotency_key=f"{run_id}-1")
    assert caught.value.transient and "ConnectionError" in str(caught.value)
    infra_id = provider.submit(job, idempotency_key=f"{run_id}-2")  # the dispatcher's retry: a new attempt
    assert [box.id for box in fake.of_run(run_id)] == [infra_id]


def test_a_name_taken_by_a_sandbox_that_then_ended_is_retried_later(provider: ModalProvider, fake: FakeModal) -> None:
    run_id, key, infra_id = submit(provider)
    fake.finish(infra_id, 0)  # it ends just after Modal refused the name, before the lookup
    fake.fail_next("create", modal_exception.AlreadyExistsError(f"Sandbox with name 'pushpool-{key}' already exists"))
    job = provider.validate(render_job({"command": "python -m flows.nightly"}, run_id=run_id))
    # Modal said the name is taken, then could not find it: never start a second one on the spot.
    with pytest.raises(ProviderError, match="refused name .* as taken") as caught:
        provider.submit(job, idempotency_key=key)
    assert caught.value.transient
    assert len(fake.of_run(run_id)) == 1


def test_a_profile_travels_in_the_infrastructure_id(provider: ModalProvider, fake: FakeModal) -> None:
    _, key, infra_id = submit(provider, {"modal_credentials": {"profile": "team-a"}, "app_name": "flows"})
    assert infra_id.startswith("team-a/sb-")
    assert provider.status(infra_id).state is JobState.RUNNING
    assert fake.calls_of("poll")[-1]["profile"] == "team-a"
    assert provider.find(key) == infra_id, "find searches the apps this provider used"


# -- status, cancel, logs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "state", "code", "words"),
    [
        (lambda f, i: None, JobState.RUNNING, None, "is running"),
        (lambda f, i: f.finish(i, 0), JobState.COMPLETED, 0, None),
        (lambda f, i: f.finish(i, 3), JobState.FAILED, 3, "exited with code 3"),
        (lambda f, i: f.finish(i, 124), JobState.FAILED, 124, "exited with code 124"),
        (lambda f, i: f.time_out(i), JobState.FAILED, 124, "timed out: a Sandbox exceeds its execution duration"),
        (lambda f, i: f.kill(i), JobState.CRASHED, 137, "was terminated: a Sandbox is terminated for an internal"),
    ],
)
def test_status_follows_poll_in_modal_s_words(
    provider: ModalProvider,
    fake: FakeModal,
    script: Callable[[FakeModal, str], None],
    state: JobState,
    code: int | None,
    words: str | None,
) -> None:
    _, _, infra_id = submit(provider)
    script(fake, infra_id)
    status = provider.status(infra_id)
    assert (status.state, status.exit_code) == (state, code)
    if words:
        assert words in (status.message or "")


def test_cancel_terminates_and_status_then_says_cancelled(provider: ModalProvider, fake: FakeModal) -> None:
    _, _, infra_id = submit(provider)
    provider.cancel(infra_id)
    provider.cancel(infra_id)  # asked again on the next pass: harmless
    assert fake.sandboxes[infra_id].terminate_calls == 2
    status = provider.status(infra_id)
    assert (status.state, status.exit_code) == (JobState.CANCELLED, 137)
    provider.cancel("sb-" + "x" * 22)  # Modal does not know it: nothing to stop
    assert provider.status("sb-" + "x" * 22).state is JobState.MISSING
    with pytest.raises(ProviderError, match="not a Modal sandbox id"):
        provider.cancel("arn:aws:ecs:task/1")


def test_logs_read_the_ended_sandbox_s_output(provider: ModalProvider, fake: FakeModal) -> None:
    _, _, infra_id = submit(provider)
    with pytest.raises(ProviderError, match=f"still running.*modal container logs {infra_id}"):
        provider.logs(infra_id)
    fake.finish(infra_id, 1, stdout="loading\n", stderr="Traceback: boom\n")
    text = provider_logs("modal:push", infra_id, Providers({"modal:push": provider}))
    assert text == "loading\n--- stderr ---\nTraceback: boom\n"
    with pytest.raises(ProviderError, match="NotFoundError"):
        provider.logs("sb-" + "y" * 22)


# -- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (modal_exception.ResourceExhaustedError("Rate limit exceeded for sandbox creation"), True),
        (modal_exception.ConnectionError("Could not connect to the Modal server"), True),
        (modal_exception.InternalFailure("retriable failure"), True),
        (modal_exception.InternalError("internal server error"), True),
        (ConnectionResetError("connection reset by peer"), True),
        (modal_exception.AuthError("Token missing. Could not authenticate client."), False),
        (modal_exception.PermissionDeniedError("not allowed in workspace"), False),
        (modal_exception.NotFoundError("Secret 'db' not found"), False),
        (modal_exception.ImageBuildError("Image build for im-1 failed", image_id="im-1"), False),
        (modal_exception.InvalidError("Invalid GPU type"), False),
        (modal_exception.Error("something new"), False),
    ],
)
def test_create_errors_are_transient_or_permanent_in_modal_s_words(
    provider: ModalProvider, fake: FakeModal, error: BaseException, transient: bool
) -> None:
    fake.fail_next("create", error)
    with pytest.raises(ProviderError) as caught:
        submit(provider)
    assert caught.value.transient is transient
    assert str(caught.value) == f"Modal Sandbox.create failed: {type(error).__name__}: {error}"
    assert not fake.sandboxes


def test_what_modal_refuses_crashes_the_submission(fake: FakeModal) -> None:
    provider = ModalProvider(FakeModal(bad_images=("ghcr.io/acme/missing:1",)))
    with pytest.raises(ProviderError, match="ImageBuildError: Image build for") as caught:
        submit(provider, {"image": "ghcr.io/acme/missing:1"})
    assert not caught.value.transient
    with pytest.raises(ProviderError, match="NotFoundError: Secret 'wandb' not found") as caught:
        submit(provider, {"secrets": ["wandb"]})
    assert not caught.value.transient


def test_status_and_cancel_errors_are_wrapped(provider: ModalProvider, fake: FakeModal) -> None:
    _, _, infra_id = submit(provider)
    fake.fail_next("poll", modal_exception.ResourceExhaustedError("slow down"))
    with pytest.raises(ProviderError, match="Modal Sandbox.poll failed: ResourceExhaustedError: slow down") as c1:
        provider.status(infra_id)
    assert c1.value.transient
    fake.fail_next("terminate", modal_exception.AuthError("Token invalid"))
    with pytest.raises(ProviderError, match="Modal Sandbox.terminate failed: AuthError") as c2:
        provider.cancel(infra_id)
    assert not c2.value.transient


# -- the contract with the installed modal package -------------------------------------------------------------


class _Checked:
    """One SDK callable of the stand-in: each call must bind to the real callable's signature; it is recorded."""

    def __init__(self, real: Any, label: str, calls: list[str], result: Any = None, raises: Any = None) -> None:
        signature = inspect.signature(real)
        parameters = list(signature.parameters.values())
        if parameters and parameters[0].name == "cls":
            # A classmethod behind synchronicity's wrapper shows `cls`; Python binds it when the method is called.
            signature = signature.replace(parameters=parameters[1:])
        self.signature = signature
        self.label, self.calls, self.result, self.raises = label, calls, result, raises

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.signature.bind(*args, **kwargs)  # TypeError if the installed SDK would refuse this call
        self.calls.append(self.label)
        if self.raises is not None:
            raise self.raises
        return self.result


class _Bound(_Checked):
    """An instance method: the real signature starts with `self`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(None, *args, **kwargs)


def stand_in_modal(calls: list[str], *, poll: int | None = None, wait_raises: Any = None) -> SimpleNamespace:
    """The parts of `modal` the adapter uses, each taken by name from the installed package (so a removed or
    renamed one fails with AttributeError) and checked call by call against its real signature."""
    from modal.io_streams import StreamReader

    for cls, attribute in ((modal.Sandbox, "object_id"), (modal.Sandbox, "stdout"), (modal.App, "app_id")):
        assert hasattr(cls, attribute), f"modal.{cls.__name__}.{attribute} is gone"
    stream = SimpleNamespace(read=_Bound(StreamReader.read, "StreamReader.read", calls, "text"))
    sandbox = SimpleNamespace(
        object_id="sb-contract",
        poll=_Bound(modal.Sandbox.poll, "Sandbox.poll", calls, poll),
        wait=_Bound(modal.Sandbox.wait, "Sandbox.wait", calls, raises=wait_raises),
        terminate=_Bound(modal.Sandbox.terminate, "Sandbox.terminate", calls),
        stdout=stream,
        stderr=stream,
    )
    return SimpleNamespace(
        exception=modal.exception,
        App=SimpleNamespace(
            lookup=_Checked(modal.App.lookup, "App.lookup", calls, SimpleNamespace(app_id="ap-contract"))
        ),
        Image=SimpleNamespace(from_registry=_Checked(modal.Image.from_registry, "Image.from_registry", calls, "img")),
        Secret=SimpleNamespace(from_name=_Checked(modal.Secret.from_name, "Secret.from_name", calls, "secret")),
        Client=SimpleNamespace(
            from_credentials=_Checked(modal.Client.from_credentials, "Client.from_credentials", calls, "client")
        ),
        config=SimpleNamespace(config=SimpleNamespace(get=_Bound(modal.config.Config.get, "Config.get", calls, "t"))),
        Sandbox=SimpleNamespace(
            create=_Checked(modal.Sandbox.create, "Sandbox.create", calls, sandbox),
            from_name=_Checked(modal.Sandbox.from_name, "Sandbox.from_name", calls, sandbox),
            from_id=_Checked(modal.Sandbox.from_id, "Sandbox.from_id", calls, sandbox),
            list=_Checked(modal.Sandbox.list, "Sandbox.list", calls, [sandbox]),
        ),
    )


class ContractSDK(ModalSDK):
    """The real adapter, with the stand-in in place of the modal package."""

    def __init__(self, stand_in: SimpleNamespace) -> None:
        super().__init__()
        self._stand_in = stand_in

    def _modal(self) -> Any:  # type: ignore[override]
        return self._stand_in


def exercise(sdk: ModalSDK, profile: str | None) -> dict[str, Any]:
    return {
        "create": sdk.create(
            ["python", "-m", "flows"],
            app_name="pushpool",
            name="pushpool-run-1",
            tags={"pushpool.io_run-id": "run"},
            image="python:3.11-slim",
            env={"PUSHPOOL_RUN_ID": "run"},
            secrets=["db-credentials"],
            cpu=0.5,
            memory=512,
            gpu="T4",
            timeout=60,
            region=["us-east"],
            profile=profile,
        ),
        "find_by_name": sdk.find_by_name("pushpool", "pushpool-run-1", profile=profile),
        "find_by_tags": sdk.find_by_tags("pushpool", {"pushpool.io_run-id": "run"}, profile=profile),
        "poll": sdk.poll("sb-contract", profile=profile),
        "terminate": sdk.terminate("sb-contract", profile=profile),
        "output": sdk.output("sb-contract", profile=profile),
    }


def test_every_call_of_the_adapter_fits_the_installed_sdk() -> None:
    calls: list[str] = []
    results = exercise(ContractSDK(stand_in_modal(calls, poll=3)), None)
    assert results == {
        "create": "sb-contract",
        "find_by_name": "sb-contract",
        "find_by_tags": ["sb-contract"],
        "poll": SandboxEnd(3),
        "terminate": None,
        "output": ("text", "text"),
    }
    with_profile: list[str] = []
    timed_out = stand_in_modal(with_profile, poll=124, wait_raises=modal_exception.SandboxTimeoutError())
    exercise(ContractSDK(timed_out), "p")
    assert set(calls) | set(with_profile) == {
        "App.lookup",
        "Image.from_registry",
        "Secret.from_name",
        "Sandbox.create",
        "Sandbox.from_name",
        "Sandbox.list",
        "Sandbox.from_id",
        "Sandbox.poll",
        "Sandbox.wait",
        "Sandbox.terminate",
        "StreamReader.read",
        "Client.from_credentials",
        "Config.get",
    }
    assert calls.count("App.lookup") == 1, "the app is looked up once and kept"


def test_poll_tells_modal_s_timeout_and_termination_from_a_command_s_exit() -> None:
    timed_out = ContractSDK(stand_in_modal([], poll=124, wait_raises=modal_exception.SandboxTimeoutError()))
    end = timed_out.poll("sb-contract", profile=None)
    assert end is not None and end.reason == "SandboxTimeoutError" and "execution duration" in (end.words or "")
    killed = ContractSDK(stand_in_modal([], poll=137, wait_raises=modal_exception.SandboxTerminatedError()))
    assert (killed.poll("sb-contract", profile=None) or SandboxEnd(0)).reason == "SandboxTerminatedError"
    calls: list[str] = []
    assert ContractSDK(stand_in_modal(calls, poll=124)).poll("sb-contract", profile=None) == SandboxEnd(124)
    assert ContractSDK(stand_in_modal(calls, poll=None)).poll("sb-contract", profile=None) is None
    assert calls.count("Sandbox.wait") == 1, "wait() only for the codes Modal uses for its own stops"


def test_the_exception_classes_and_exit_codes_the_provider_relies_on_exist() -> None:
    from modal.sandbox._common import _result_returncode
    from modal_proto import api_pb2

    for name in (*TRANSIENT_ERRORS, *PERMANENT_ERRORS, "Error", "SandboxTimeoutError", "SandboxTerminatedError"):
        assert issubclass(getattr(modal_exception, name), BaseException), name
    assert issubclass(modal_exception.ImageBuildError, modal_exception.RemoteError), "checked before RemoteError"
    assert not modal_error(modal_exception.ImageBuildError("bad", image_id="im"), "x").transient
    # poll() reports Modal's own stops with these codes; ModalSDK.poll asks wait() only for them.
    assert _result_returncode(api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_TIMEOUT)) == 124
    assert _result_returncode(api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_TERMINATED)) == 137


def test_a_profile_without_a_token_is_an_auth_error_in_words() -> None:
    stand_in = stand_in_modal([])
    stand_in.config.config.get = _Bound(modal.config.Config.get, "Config.get", [], None)
    provider = ModalProvider(ContractSDK(stand_in))
    words = "AuthError: profile 'team-b' has no token .*`modal token set --profile team-b`"
    with pytest.raises(ProviderError, match=words) as caught:
        submit(provider, {"modal_credentials": {"profile": "team-b"}})
    assert not caught.value.transient

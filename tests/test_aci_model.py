"""The azure-container-instance:push template, its configuration model, the group body and the status mapping.

All pure: no Azure SDK, no network. The template file and `ACIJobConfiguration` are tied here, so neither can
drift from the other or from Prefect's worker.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from dispatcher import templating
from dispatcher.errors import InvalidInput
from dispatcher.providers.aci import ACIJobConfiguration, ACIProvider
from dispatcher.providers.aci.model import KEEP_TAG, container_group_body, group_name, parse_job
from dispatcher.providers.aci.status import group_status
from dispatcher.providers.base import JobState

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "templates" / "azure-container-instance-push.json"

# Prefect's azure-container-instance worker (prefect-azure, AzureContainerVariables): name -> (type, default).
PREFECT_VARIABLES: dict[str, tuple[Any, Any]] = {
    "aci_credentials": (None, None),
    "command": (["string", "array"], None),
    "cpu": ("number", 1.0),
    "dns_servers": ("array", None),
    "entrypoint": ("string", "/opt/prefect/entrypoint.sh"),
    "env": ("object", None),
    "gpu_count": ("integer", None),
    "gpu_sku": ("string", None),
    "identities": ("array", None),
    "image": ("string", None),
    "image_registry": (None, None),
    "labels": ("object", None),
    "memory": ("number", 1.0),
    "name": ("string", None),
    "resource_group_name": ("string", None),
    "stream_output": ("boolean", False),
    "subnet_ids": ("array", None),
    "subscription_id": ("string", None),
    "task_start_timeout_seconds": ("integer", 240),
    "task_watch_poll_interval": ("number", 5.0),
}
SUBSCRIPTION = "00000000-0000-0000-0000-0000000000aa"


def _template() -> dict[str, Any]:
    template: dict[str, Any] = json.loads(TEMPLATE.read_text())
    return template


def render_job(
    job_variables: dict[str, Any], *, run_id: str | None = None, template: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A job as the dispatcher makes it: template validated, variables resolved, rendered, run context injected."""
    template = template or _template()
    templating.validate_template(template)
    values = templating.resolve_job_variables(template, None, job_variables, None)
    job = templating.render(template["job_configuration"], values, {})
    run_id = run_id or str(uuid.uuid4())
    return templating.inject_run_context(
        job,
        run_id=run_id,
        deployment="nightly",
        pool="aci pool",
        queue="default",
        parameters={"day": "2026-03-01"},
        callback_url=f"http://127.0.0.1:4300/callbacks/runs/{run_id}",
        callback_token="token-of-the-run",
        run_name="silent-heron",
    )


BASE = {"image": "flows:1", "resource_group_name": "flows-rg", "subscription_id": SUBSCRIPTION}


# -- the template and the model --------------------------------------------------------------------------------


def test_template_has_every_prefect_variable_with_its_type_and_default_plus_keep_container_group() -> None:
    template = _template()
    templating.validate_template(template)
    properties = template["variables"]["properties"]
    assert set(properties) == set(PREFECT_VARIABLES) | {"keep_container_group"}
    for name, (kind, default) in PREFECT_VARIABLES.items():
        if kind is not None:
            assert properties[name]["type"] == kind, name
        assert properties[name].get("default") == default, name
    assert properties["keep_container_group"] == {**properties["keep_container_group"], "type": "boolean"}
    assert properties["keep_container_group"]["default"] is False
    # Every variable reaches the job, under its own name, so the model sees all of them.
    assert template["job_configuration"] == {name: f"{{{{ {name} }}}}" for name in properties}


def test_every_key_of_the_rendered_template_is_a_field_of_the_model() -> None:
    fields = set(ACIJobConfiguration.model_fields)
    assert set(_template()["job_configuration"]) <= fields
    # The one field beyond the template's keys is Prefect's own ARM template, for its templates verbatim.
    assert fields - set(_template()["job_configuration"]) == {"arm_template"}


def test_rendered_defaults_pass_the_model() -> None:
    config = ACIJobConfiguration.model_validate(ACIProvider().validate(render_job(BASE)))
    assert (config.cpu, config.memory, config.entrypoint) == (1.0, 1.0, "/opt/prefect/entrypoint.sh")
    assert config.keep_container_group is False and config.stream_output is False
    assert config.command is None  # the image's own command
    assert config.env["PUSHPOOL_CALLBACK_TOKEN"] == "token-of-the-run"


def test_validate_is_pure_and_imports_nothing_of_azure() -> None:
    before = {name for name in sys.modules if name.startswith("azure")}
    ACIProvider().validate(render_job(BASE))
    assert {name for name in sys.modules if name.startswith("azure")} == before


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        ({"image": ""}, "image: is required"),
        ({"resource_group_name": "bad/rg"}, "resource_group_name: must be 1-90"),
        ({"subscription_id": "a b"}, "subscription_id: must be a subscription id"),
        ({"cpu": 0}, "cpu: input should be greater than 0"),
        ({"gpu_count": 1}, "gpu_sku: is required when gpu_count is set"),
        ({"gpu_count": 1, "gpu_sku": "H100"}, "gpu_sku: must be one of K80, P100, V100"),
        ({"command": "python 'unclosed"}, "command: cannot be split like a shell command line"),
        (
            {"aci_credentials": {"client_id": "c", "client_secret": "s3cret"}},
            "aci_credentials.client_secret: pushpool never stores credentials",
        ),
    ],
)
def test_bad_values_are_refused_in_one_sentence_naming_the_field(variables: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        # Rendering is inside: a secret in a credentials variable is refused with the job variables.
        parse_job(render_job({**BASE, **variables}))
    assert words in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_an_unknown_key_is_refused_with_the_allowed_ones() -> None:
    job = {**render_job(BASE), "location": "westeurope"}
    with pytest.raises(InvalidInput, match=r"location: is not a setting .* allowed: image, resource_group_name"):
        parse_job(job)


def test_prefects_own_base_job_template_works_verbatim() -> None:
    """Prefect's template for this type (its worker's generated one, with the ARM template) renders and submits."""
    prefect = _template()
    prefect["job_configuration"] = {
        **{key: value for key, value in prefect["job_configuration"].items() if key != "keep_container_group"},
        "arm_template": {
            "$schema": "https://schema.management.azure.com/schemas/2019-08-01/deploymentTemplate.json#",
            "contentVersion": "1.0.0.0",
            "parameters": {"location": {"type": "string", "defaultValue": "[resourceGroup().location]"}},
            "resources": [
                {
                    "type": "Microsoft.ContainerInstance/containerGroups",
                    "apiVersion": "2022-09-01",
                    "name": "[parameters('container_group_name')]",
                    "location": "[parameters('location')]",
                    "properties": {
                        "containers": [
                            {
                                "name": "[parameters('container_name')]",
                                "properties": {
                                    "image": "{{ image }}",
                                    "command": "{{ command }}",
                                    "resources": {"requests": {"cpu": "{{ cpu }}", "memoryInGB": "{{ memory }}"}},
                                    "environmentVariables": [],
                                },
                            }
                        ],
                        "osType": "Linux",
                        "restartPolicy": "Never",
                    },
                }
            ],
        },
    }
    del prefect["variables"]["properties"]["keep_container_group"]
    job = render_job({**BASE, "command": "python -m prefect.engine"}, template=prefect)
    config = parse_job(job)
    body = container_group_body(config, location="westeurope")
    assert body["location"] == "westeurope"  # the ARM expression resolved as ARM would: the group's location
    container = body["properties"]["containers"][0]
    assert container["name"] == "pushpool"
    assert container["properties"]["command"] == ["/opt/prefect/entrypoint.sh", "python", "-m", "prefect.engine"]
    assert body["properties"]["restartPolicy"] == "Never"


# -- the container group body ----------------------------------------------------------------------------------


def test_body_maps_every_variable_and_keeps_the_token_secure() -> None:
    job = render_job(
        {
            **BASE,
            "command": ["pushpool-run", "--", "python", "flow.py"],
            "entrypoint": "",
            "env": {"MODE": "fast", "PREFECT_API_KEY": "pk"},
            "labels": {"team": "data"},
            "cpu": 2,
            "memory": 4.5,
            "gpu_count": 1,
            "gpu_sku": "V100",
            "subnet_ids": ["/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/virtualNetworks/v/subnets/a"],
            "dns_servers": ["10.0.0.10"],
            "identities": [
                "/subscriptions/s/resourceGroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i"
            ],
            "image_registry": {"registry_url": "flows.azurecr.io", "identity": "/subscriptions/s/identity"},
            "keep_container_group": True,
            "name": "nightly run",
        }
    )
    body = container_group_body(parse_job(job), location="northeurope")
    properties = body["properties"]
    main = properties["containers"][0]["properties"]
    assert main["command"] == ["pushpool-run", "--", "python", "flow.py"]
    assert main["resources"]["requests"] == {"cpu": 2.0, "memoryInGB": 4.5, "gpu": {"count": 1, "sku": "V100"}}
    env = {item["name"]: item for item in main["environmentVariables"]}
    assert env["MODE"] == {"name": "MODE", "value": "fast"}
    assert env["PUSHPOOL_CALLBACK_TOKEN"] == {"name": "PUSHPOOL_CALLBACK_TOKEN", "secureValue": "token-of-the-run"}
    assert env["PREFECT_API_KEY"] == {"name": "PREFECT_API_KEY", "secureValue": "pk"}
    assert properties["restartPolicy"] == "Never" and properties["osType"] == "Linux"
    assert properties["subnetIds"][0]["id"].endswith("/subnets/a")
    assert properties["dnsConfig"] == {"nameServers": ["10.0.0.10"]}
    assert properties["imageRegistryCredentials"] == [
        {"server": "flows.azurecr.io", "identity": "/subscriptions/s/identity"}
    ]
    assert body["identity"]["type"] == "UserAssigned"
    assert body["location"] == "northeurope"
    tags = body["tags"]
    assert tags[KEEP_TAG] == "true" and tags["team"] == "data" and tags["Name"] == "nightly run"
    assert tags["pushpool.io_run-id"] == job["env"]["PUSHPOOL_RUN_ID"]  # "/" is not allowed in an ARM tag name


def test_entrypoint_goes_before_a_command_only() -> None:
    with_command = parse_job(render_job({**BASE, "command": "python flow.py"}))
    main = container_group_body(with_command, location="x")["properties"]["containers"][0]["properties"]
    assert main["command"] == ["/opt/prefect/entrypoint.sh", "python", "flow.py"]
    without = parse_job(render_job(BASE))
    assert "command" not in container_group_body(without, location="x")["properties"]["containers"][0]["properties"]


def test_a_value_never_becomes_shell_syntax_or_a_second_argument() -> None:
    config = parse_job(render_job({**BASE, "entrypoint": "", "command": ["echo", "$(id); rm -rf /"]}))
    main = container_group_body(config, location="x")["properties"]["containers"][0]["properties"]
    assert main["command"] == ["echo", "$(id); rm -rf /"]


@pytest.mark.parametrize(
    "run_id",
    ["3f2a0c1e-8b7d-4c6e-9f10-1234567890ab", "Run_With.Odd/Chars--x", "-" * 80, "a" * 200, "UPPER-case"],
)
def test_group_names_are_valid_arm_names_and_stable(run_id: str) -> None:
    name = group_name(run_id)
    assert name == group_name(run_id)
    assert 1 <= len(name) <= 63
    assert name[0].isalnum() and name[-1].isalnum() and "--" not in name
    assert all(c.islower() or c.isdigit() or c == "-" for c in name)


def test_different_run_ids_never_share_a_group() -> None:
    assert group_name("a/b") != group_name("a:b")
    assert group_name("Run-1") != group_name("run-1")


# -- status mapping --------------------------------------------------------------------------------------------


def _group(state: str | None, *, exit_code: int | None = None, provisioning: str = "Succeeded", **extra: Any) -> Any:
    current: dict[str, Any] = {"state": state} if state else {}
    if exit_code is not None:
        current["exitCode"] = exit_code
    current.update(extra.pop("current", {}))
    view: dict[str, Any] = {"currentState": current, "events": extra.pop("events", [])}
    return {
        "name": "pp-x",
        "tags": {},
        "properties": {
            "provisioningState": provisioning,
            "containers": [{"name": "pushpool", "properties": {"instanceView": view}}],
            "instanceView": extra.pop("group_view", {}),
        },
    }


@pytest.mark.parametrize(
    ("group", "state", "code"),
    [
        (_group("Terminated", exit_code=0), JobState.COMPLETED, 0),
        (_group("Terminated", exit_code=3), JobState.FAILED, 3),
        (_group("Terminated"), JobState.CRASHED, None),
        (_group("Running"), JobState.RUNNING, None),
        (_group("Waiting", current={"detailStatus": "ContainerCreating"}), JobState.PENDING, None),
        (_group(None, provisioning="Creating"), JobState.PENDING, None),
        (_group(None, provisioning="Failed"), JobState.CRASHED, None),
        (_group(None, group_view={"state": "Stopped"}), JobState.CRASHED, None),
    ],
)
def test_instance_view_maps_to_status(group: Any, state: JobState, code: int | None) -> None:
    status = group_status(group)
    assert (status.state, status.exit_code) == (state, code)


def test_waiting_on_an_image_pull_error_is_crashed_in_azures_words() -> None:
    words = 'Failed to pull image "flows:missing": manifest unknown'
    group = _group(
        "Waiting",
        current={"detailStatus": "ErrImagePull"},
        events=[{"name": "Pulling", "type": "Normal"}, {"name": "Failed", "message": words, "type": "Warning"}],
    )
    status = group_status(group)
    assert status.state is JobState.CRASHED
    assert words in (status.message or "")

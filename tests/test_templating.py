"""Tests for dispatcher.templating (SPEC §4): template and variable validation, merge, render, inject."""

from __future__ import annotations

import copy
import json
import pathlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.errors import InvalidInput, TemplateError
from dispatcher.templating import (
    PARAMETERS_INLINE_BYTES,
    PLACEHOLDER,
    inject_run_context,
    merge_job_variables,
    placeholders,
    render,
    resolve_job_variables,
    validate_job_variables,
    validate_template,
    variable_defaults,
)

PROCESS_TEMPLATE = pathlib.Path(__file__).parents[1] / "templates" / "process.json"


@pytest.fixture(autouse=True)
def operator_allows_aws_region(monkeypatch: pytest.MonkeyPatch) -> None:
    """validate_template reads PUSHPOOL_TEMPLATE_ENV from the environment: these templates read $AWS_REGION."""
    monkeypatch.setenv("PUSHPOOL_TEMPLATE_ENV", "AWS_REGION")


def ecs_like_template() -> dict[str, Any]:
    """A small template with the features the rules talk about: required, defaults, bounds, enum, env."""
    return {
        "job_configuration": {
            "image": "{{ image }}",
            "cpu": "{{ cpu }}",
            "launch_type": "{{ launch_type }}",
            "env": "{{ env }}",
            "command": ["run", "{{ command }}"],
            "region": "{{ $AWS_REGION }}",
        },
        "variables": {
            "type": "object",
            "required": ["image"],
            "properties": {
                "image": {"type": "string", "title": "Image"},
                "cpu": {"type": "integer", "minimum": 256, "maximum": 4096, "default": 1024},
                "launch_type": {"type": "string", "enum": ["FARGATE", "EC2"], "default": "FARGATE"},
                "env": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
                "command": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
        },
    }


def error_message(exc_info: pytest.ExceptionInfo[TemplateError]) -> str:
    message = str(exc_info.value)
    # Every message is one sentence: it ends with a period and has no sentence break inside.
    assert message.endswith("."), message
    return message


# --- PLACEHOLDER and placeholders() -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [("{{ x }}", "x"), ("{{x}}", "x"), ("{{   cpu_2  }}", "cpu_2"), ("{{ $HOME }}", "$HOME"), ("{{$A_B}}", "$A_B")],
)
def test_placeholder_regex_matches_names_with_optional_whitespace(text: str, name: str) -> None:
    match = PLACEHOLDER.fullmatch(text)
    assert match is not None
    assert match.group(1) == name


@pytest.mark.parametrize("text", ["{{ a-b }}", "{{.Id}}", "{{ }}", "{ x }", "{{ 1x }}", "{{ $ }}", "{{ a b }}"])
def test_placeholder_regex_rejects_non_identifiers(text: str) -> None:
    assert PLACEHOLDER.search(text) is None


def test_placeholders_finds_names_in_nested_strings_but_not_keys() -> None:
    config = {
        "a": "{{ x }}",
        "{{ key_name }}": ["pre {{ y }} and {{$HOME}}", {"deep": "{{ z }}"}],
        "n": 5,
        "b": True,
        "none": None,
    }
    assert placeholders(config) == {"x", "y", "z", "$HOME"}


def test_placeholders_of_a_plain_string_and_of_scalars() -> None:
    assert placeholders("{{ a }}{{ b }}") == {"a", "b"}
    assert placeholders(3) == set()
    assert placeholders(None) == set()


# --- validate_template ------------------------------------------------------------------------------


def test_process_template_passes_validation() -> None:
    template = json.loads(PROCESS_TEMPLATE.read_text())
    validate_template(template)
    properties = template["variables"]["properties"]
    assert set(properties) == {"name", "env", "labels", "command", "working_dir", "stream_output"}
    for name, schema in properties.items():
        assert schema.get("title") and schema.get("description"), name


def test_process_template_accepts_command_as_string_or_list_and_rejects_others() -> None:
    template = json.loads(PROCESS_TEMPLATE.read_text())
    for command in ("python -m flow", ["python", "-m", "flow"]):
        validate_job_variables(template, {"command": command}, field="job_variables", enforce_required=True)
    with pytest.raises(TemplateError) as exc_info:
        validate_job_variables(template, {"command": 5}, field="job_variables", enforce_required=True)
    assert error_message(exc_info).startswith("job_variables.command: 5 is not of type 'string', 'array'")
    with pytest.raises(TemplateError) as exc_info:
        validate_job_variables(template, {"command": ["a", 3]}, field="job_variables", enforce_required=True)
    assert error_message(exc_info).startswith("job_variables.command[1]:")


def test_process_template_renders_with_defaults_and_drops_unset_keys() -> None:
    template = json.loads(PROCESS_TEMPLATE.read_text())
    values = resolve_job_variables(template, None, {"command": "python flow.py"}, {"env": {"A": "1"}})
    job = render(template["job_configuration"], values, {})
    assert job == {"command": "python flow.py", "env": {"A": "1"}, "stream_output": True}


def test_template_error_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        validate_template([])


@pytest.mark.parametrize("template", [[], "x", None, 3])
def test_template_must_be_an_object(template: Any) -> None:
    with pytest.raises(TemplateError) as exc_info:
        validate_template(template)
    message = error_message(exc_info)
    assert "job_configuration" in message and "variables" in message


def test_template_missing_key_is_named() -> None:
    with pytest.raises(TemplateError) as exc_info:
        validate_template({"job_configuration": {}})
    message = error_message(exc_info)
    assert "missing variables" in message
    assert "exactly the keys job_configuration and variables" in message


def test_template_unknown_key_is_named() -> None:
    template = ecs_like_template()
    template["extra"] = 1
    with pytest.raises(TemplateError) as exc_info:
        validate_template(template)
    assert "unknown keys extra" in error_message(exc_info)


def test_job_configuration_must_be_an_object() -> None:
    with pytest.raises(TemplateError) as exc_info:
        validate_template({"job_configuration": ["{{ x }}"], "variables": {"type": "object"}})
    assert error_message(exc_info).startswith("job_configuration must be a JSON object")


@pytest.mark.parametrize("variables", [{}, {"type": "array"}, [], {"properties": {}}])
def test_variables_must_be_an_object_schema(variables: Any) -> None:
    with pytest.raises(TemplateError) as exc_info:
        validate_template({"job_configuration": {}, "variables": variables})
    assert error_message(exc_info).startswith('variables must be a JSON Schema object with "type": "object"')


def test_variables_properties_must_be_an_object() -> None:
    with pytest.raises(TemplateError) as exc_info:
        validate_template({"job_configuration": {}, "variables": {"type": "object", "properties": []}})
    assert error_message(exc_info).startswith("variables.properties must be a JSON object")


def test_variable_names_must_be_usable_in_placeholders() -> None:
    variables = {"type": "object", "properties": {"bad-name": {"type": "string"}}}
    with pytest.raises(TemplateError) as exc_info:
        validate_template({"job_configuration": {}, "variables": variables})
    message = error_message(exc_info)
    assert "'bad-name'" in message and "letters, digits and underscores" in message


def test_variables_required_must_be_a_list_of_declared_names() -> None:
    with pytest.raises(TemplateError) as exc_info:
        validate_template({"job_configuration": {}, "variables": {"type": "object", "required": "image"}})
    assert error_message(exc_info).startswith("variables.required must be a list")
    variables = {"type": "object", "required": ["image", "cpu"], "properties": {"cpu": {"type": "integer"}}}
    with pytest.raises(TemplateError) as exc_info:
        validate_template({"job_configuration": {}, "variables": variables})
    message = error_message(exc_info)
    assert message.startswith("variables.required names image, which variables.properties does not declare")


def test_invalid_json_schema_is_wrapped_with_its_path() -> None:
    variables = {"type": "object", "properties": {"cpu": {"type": "integr"}}}
    with pytest.raises(TemplateError) as exc_info:
        validate_template({"job_configuration": {"cpu": "{{ cpu }}"}, "variables": variables})
    message = error_message(exc_info)
    assert message.startswith("variables.properties.cpu.type is not valid JSON Schema")
    assert "'integr'" in message


def test_property_schema_must_be_a_schema() -> None:
    variables = {"type": "object", "properties": {"cpu": "integer"}}
    with pytest.raises(TemplateError) as exc_info:
        validate_template({"job_configuration": {}, "variables": variables})
    assert error_message(exc_info).startswith("variables.properties.cpu is not valid JSON Schema")


def ref_template(ref: str, **extra: Any) -> dict[str, Any]:
    variables = {
        "type": "object",
        "definitions": {"Size": {"type": "integer", "minimum": 1}},
        "properties": {"cpu": {"$ref": ref, **extra}},
    }
    return {"job_configuration": {"cpu": "{{ cpu }}"}, "variables": variables}


def test_references_inside_the_variables_schema_work_for_defaults_and_values() -> None:
    template = ref_template("#/definitions/Size", default=2)
    validate_template(template)
    validate_job_variables(template, {"cpu": 4}, field="job_variables", enforce_required=True)
    with pytest.raises(TemplateError, match=r"job_variables\.cpu: 0 is less than the minimum of 1"):
        validate_job_variables(template, {"cpu": 0}, field="job_variables", enforce_required=True)
    with pytest.raises(TemplateError, match=r"variables\.properties\.cpu\.default: 0 is less than the minimum"):
        validate_template(ref_template("#/definitions/Size", default=0))


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("#/nope", "points to nothing in the variables schema"),
        ("#/definitions/Missing", "points to nothing in the variables schema"),
        ("https://example.invalid/s.json", "points outside the template"),
        ("other.json#/x", "points outside the template"),
    ],
)
def test_a_reference_that_cannot_be_resolved_is_refused_when_the_template_is_written(ref: str, says: str) -> None:
    with pytest.raises(TemplateError) as exc_info:
        validate_template(ref_template(ref))
    message = error_message(exc_info)
    assert message.startswith(f"variables.properties.cpu.$ref: {ref!r} {says}")


def test_a_ref_key_inside_data_is_not_a_reference() -> None:
    template = ref_template("#/definitions/Size")
    template["variables"]["properties"]["labels"] = {"type": "object", "default": {"$ref": "not a reference"}}
    validate_template(template)


def test_a_stored_template_with_a_broken_reference_fails_validation_in_words() -> None:
    # Written before references were checked: a run's variables are refused with a sentence, not a traceback.
    template = ref_template("#/nope")
    with pytest.raises(TemplateError, match="has a \\$ref that cannot be resolved.*work-pool update"):
        validate_job_variables(template, {"cpu": 1}, field="job_variables", enforce_required=True)


def test_undeclared_placeholders_are_listed() -> None:
    template = ecs_like_template()
    template["job_configuration"]["extra"] = ["{{ zeta }}", {"x": "a {{ alpha }} b"}]
    with pytest.raises(TemplateError) as exc_info:
        validate_template(template)
    message = error_message(exc_info)
    assert "undeclared variables alpha, zeta" in message
    assert "add them to variables.properties" in message


def test_env_placeholders_need_no_declaration() -> None:
    template = {"job_configuration": {"r": "{{ $AWS_REGION }}"}, "variables": {"type": "object"}}
    validate_template(template, {"PUSHPOOL_TEMPLATE_ENV": "AWS_REGION"})


def test_placeholder_in_a_key_needs_no_declaration() -> None:
    template = {"job_configuration": {"{{ nope }}": 1}, "variables": {"type": "object"}}
    validate_template(template)


def test_default_must_satisfy_its_own_schema() -> None:
    template = ecs_like_template()
    template["variables"]["properties"]["cpu"]["default"] = 5000
    with pytest.raises(TemplateError) as exc_info:
        validate_template(template)
    assert error_message(exc_info) == "variables.properties.cpu.default: 5000 is greater than the maximum of 4096."


def test_default_error_names_the_nested_path() -> None:
    template = ecs_like_template()
    template["variables"]["properties"]["tags"]["default"] = ["ok", 7]
    with pytest.raises(TemplateError) as exc_info:
        validate_template(template)
    assert error_message(exc_info) == "variables.properties.tags.default[1]: 7 is not of type 'string'."


def test_valid_template_passes() -> None:
    validate_template(ecs_like_template())


# --- validate_job_variables -------------------------------------------------------------------------


def test_job_variables_must_be_an_object() -> None:
    with pytest.raises(TemplateError) as exc_info:
        validate_job_variables(ecs_like_template(), ["cpu"], field="job_variables", enforce_required=False)
    assert error_message(exc_info) == (
        "job_variables must be a JSON object mapping variable names to values, not an array."
    )


def test_unknown_variable_is_rejected_with_allowed_list() -> None:
    with pytest.raises(TemplateError) as exc_info:
        validate_job_variables(ecs_like_template(), {"foo": 1}, field="job_variables", enforce_required=False)
    assert error_message(exc_info) == (
        "job_variables: 'foo' is not a variable of this pool; allowed: command, cpu, env, image, launch_type, tags."
    )


def test_several_unknown_variables_are_all_named_and_field_is_used() -> None:
    with pytest.raises(TemplateError) as exc_info:
        validate_job_variables(
            ecs_like_template(), {"zz": 1, "aa": 2, "cpu": 512}, field="pool job_variables", enforce_required=False
        )
    message = error_message(exc_info)
    assert message.startswith("pool job_variables: 'aa', 'zz' are not variables of this pool; allowed: ")


def test_pool_without_variables_rejects_everything() -> None:
    template = {"job_configuration": {}, "variables": {"type": "object"}}
    validate_job_variables(template, {}, field="job_variables", enforce_required=True)
    with pytest.raises(TemplateError) as exc_info:
        validate_job_variables(template, {"x": 1}, field="job_variables", enforce_required=True)
    assert "allowed: none" in error_message(exc_info)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"cpu": 5000}, "job_variables.cpu: 5000 is greater than the maximum of 4096."),
        ({"cpu": 1}, "job_variables.cpu: 1 is less than the minimum of 256."),
        ({"cpu": "big"}, "job_variables.cpu: 'big' is not of type 'integer'."),
        ({"launch_type": "SPOT"}, "job_variables.launch_type: 'SPOT' is not one of ['FARGATE', 'EC2']."),
        ({"env": {"A": 3}}, "job_variables.env.A: 3 is not of type 'string', 'null'."),
        ({"tags": ["a", "b", False]}, "job_variables.tags[2]: False is not of type 'string'."),
    ],
)
def test_schema_failures_name_the_path_and_rule(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(TemplateError) as exc_info:
        validate_job_variables(ecs_like_template(), values, field="job_variables", enforce_required=False)
    assert error_message(exc_info) == expected


def test_required_is_enforced_only_when_asked() -> None:
    template = ecs_like_template()
    validate_job_variables(template, {"cpu": 512}, field="deployment job_variables", enforce_required=False)
    with pytest.raises(TemplateError) as exc_info:
        validate_job_variables(template, {"cpu": 512}, field="job_variables", enforce_required=True)
    assert error_message(exc_info) == "job_variables: 'image' is a required property."
    validate_job_variables(template, {"image": "x"}, field="job_variables", enforce_required=True)


def test_validate_job_variables_does_not_change_the_template() -> None:
    template = ecs_like_template()
    before = copy.deepcopy(template)
    validate_job_variables(template, {"cpu": 512}, field="job_variables", enforce_required=False)
    assert template == before


def test_reported_error_does_not_depend_on_key_order() -> None:
    template = ecs_like_template()
    one = {"cpu": 1, "launch_type": "SPOT", "tags": [1]}
    other = dict(reversed(list(one.items())))
    messages = set()
    for values in (one, other):
        with pytest.raises(TemplateError) as exc_info:
            validate_job_variables(template, values, field="job_variables", enforce_required=False)
        messages.add(str(exc_info.value))
    assert len(messages) == 1


# --- merge, defaults, resolve -----------------------------------------------------------------------


def test_merge_precedence_later_layer_wins_whole() -> None:
    merged = merge_job_variables(
        {"cpu": 1, "labels": {"a": "1", "b": "2"}, "image": "d"},
        {"cpu": 2, "labels": {"c": "3"}},
        {"cpu": 3},
        {"image": "run"},
    )
    assert merged == {"cpu": 3, "labels": {"c": "3"}, "image": "run"}


def test_merge_env_key_by_key() -> None:
    merged = merge_job_variables(
        {"env": {"A": "default", "B": "default"}},
        {"env": {"B": "pool", "C": "pool"}},
        {"env": {"C": "deployment", "D": None}},
        {"env": {"A": "run"}},
    )
    assert merged == {"env": {"A": "run", "B": "pool", "C": "deployment", "D": None}}


def test_merge_non_object_env_replaces_whole() -> None:
    assert merge_job_variables({"env": {"A": "1"}}, {"env": None}) == {"env": None}
    assert merge_job_variables({"env": None}, {"env": {"A": "1"}}) == {"env": {"A": "1"}}


def test_merge_does_not_mutate_or_alias_layers() -> None:
    layers: list[dict[str, Any]] = [{"env": {"A": "1"}, "tags": ["x"]}, {"env": {"B": "2"}}, {"cfg": {"deep": [1]}}]
    before = copy.deepcopy(layers)
    merged = merge_job_variables(*layers)
    merged["env"]["Z"] = "z"
    merged["tags"].append("y")
    merged["cfg"]["deep"].append(2)
    assert layers == before


def test_merge_skips_none_layers_and_rejects_non_objects() -> None:
    assert merge_job_variables(None, {"a": 1}, None) == {"a": 1}
    assert merge_job_variables() == {}
    with pytest.raises(TemplateError) as exc_info:
        merge_job_variables({"a": 1}, ["b"])  # type: ignore[arg-type]
    assert error_message(exc_info).startswith("job variables layer 2 must be a JSON object")


def test_variable_defaults_only_for_properties_with_default() -> None:
    template = ecs_like_template()
    defaults = variable_defaults(template)
    assert defaults == {"cpu": 1024, "launch_type": "FARGATE"}
    template["variables"]["properties"]["tags"]["default"] = ["a"]
    defaults = variable_defaults(template)
    defaults["tags"].append("b")
    assert template["variables"]["properties"]["tags"]["default"] == ["a"]


def test_resolve_applies_precedence_and_env_merge() -> None:
    template = ecs_like_template()
    resolved = resolve_job_variables(
        template,
        {"cpu": 2048, "env": {"A": "pool", "B": "pool"}},
        {"image": "dep", "env": {"B": "dep"}},
        {"launch_type": "EC2", "env": {"C": "run"}},
    )
    assert resolved == {
        "cpu": 2048,
        "launch_type": "EC2",
        "image": "dep",
        "env": {"A": "pool", "B": "dep", "C": "run"},
    }


def test_resolve_enforces_required_on_the_merged_values() -> None:
    with pytest.raises(TemplateError) as exc_info:
        resolve_job_variables(ecs_like_template(), {"cpu": 512}, {}, {})
    assert error_message(exc_info) == "job_variables: 'image' is a required property."


def test_resolve_rejects_undeclared_run_variables() -> None:
    with pytest.raises(TemplateError) as exc_info:
        resolve_job_variables(ecs_like_template(), {}, {"image": "x"}, {"memory": 512})
    assert error_message(exc_info).startswith("job_variables: 'memory' is not a variable of this pool")


def test_resolve_validates_merged_values_against_bounds() -> None:
    with pytest.raises(TemplateError) as exc_info:
        resolve_job_variables(ecs_like_template(), {}, {"image": "x"}, {"cpu": 9999})
    assert error_message(exc_info) == "job_variables.cpu: 9999 is greater than the maximum of 4096."


# --- render -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [5, 2.5, True, False, None, "text", {"a": [1, {"b": None}]}, [1, "2", None]])
def test_whole_placeholder_keeps_the_type(value: Any) -> None:
    out = render({"k": "{{ x }}", "l": ["{{x}}"]}, {"x": value}, {})
    assert json.dumps(out) == json.dumps({"k": value, "l": [value]})


@pytest.mark.parametrize(
    ("value", "text"),
    [("s", "s"), (5, "5"), (2.5, "2.5"), (True, "true"), (None, ""), ({"a": [1, 2]}, '{"a":[1,2]}'), ([], "[]")],
)
def test_embedded_placeholder_renders_text(value: Any, text: str) -> None:
    assert render({"k": "pre-{{ x }}-post"}, {"x": value}, {}) == {"k": f"pre-{text}-post"}


def test_surrounding_whitespace_makes_it_an_embedded_placeholder() -> None:
    assert render({"k": " {{ x }}"}, {"x": 5}, {}) == {"k": " 5"}
    assert render({"k": "{{ x }}\n"}, {}, {}) == {"k": "\n"}


def test_several_placeholders_in_one_string() -> None:
    out = render(
        {"k": "{{a}}:{{ b }}:{{ $E }}:{{ missing }}"}, {"a": 1, "b": "two"}, {"E": "env", "PUSHPOOL_TEMPLATE_ENV": "E"}
    )
    assert out == {"k": "1:two:env:"}


def test_missing_variable_removes_key_and_item() -> None:
    config = {"gone": "{{ missing }}", "kept": "x", "list": ["a", "{{ missing }}", "{{ present }}", "b"]}
    assert render(config, {"present": 1}, {}) == {"kept": "x", "list": ["a", 1, "b"]}


def test_null_value_keeps_the_key_as_null() -> None:
    assert render({"k": "{{ x }}", "l": ["{{ x }}"]}, {"x": None}, {}) == {"k": None, "l": [None]}


def test_env_placeholders_read_the_env_mapping() -> None:
    config = {"whole": "{{ $REGION }}", "embedded": "r={{$REGION}}", "gone": "{{ $NOPE }}", "blank": "x{{ $NOPE }}"}
    out = render(config, {"REGION": "not this one"}, {"REGION": "eu-west-1", "PUSHPOOL_TEMPLATE_ENV": "REGION, NOPE"})
    assert out == {"whole": "eu-west-1", "embedded": "r=eu-west-1", "blank": "x"}


def test_variables_do_not_read_env_and_env_does_not_read_variables() -> None:
    out = render({"a": "{{ X }}", "b": "{{ $Y }}"}, {"Y": "var"}, {"X": "env", "PUSHPOOL_TEMPLATE_ENV": "Y"})
    assert out == {}


def test_values_are_never_rendered_again() -> None:
    values = {"x": "{{ y }} and {{ $HOME }}", "y": "BOOM", "o": {"inner": "{{ y }}"}}
    out = render({"a": "{{ x }}", "b": "<{{ x }}>", "c": "{{ o }}"}, values, {"HOME": "/root"})
    assert out == {"a": "{{ y }} and {{ $HOME }}", "b": "<{{ y }} and {{ $HOME }}>", "c": {"inner": "{{ y }}"}}


def test_dict_keys_are_never_rendered() -> None:
    assert render({"{{ x }}": "{{ x }}"}, {"x": "v"}, {}) == {"{{ x }}": "v"}


def test_non_placeholder_braces_stay_literal() -> None:
    config = {"cmd": "docker inspect --format '{{.Id}}' {{ a-b }}"}
    assert render(config, {}, {}) == config


def test_non_string_scalars_pass_through() -> None:
    config = {"n": 1, "f": 1.5, "b": False, "z": None, "l": [1, None]}
    assert render(config, {}, {}) == config


def test_top_level_placeholder() -> None:
    assert render("{{ x }}", {"x": [1]}, {}) == [1]
    assert render("{{ x }}", {}, {}) is None
    assert render(["{{ x }}"], {}, {}) == []


def test_render_returns_new_structure_and_copies_values() -> None:
    config = {"a": {"b": ["{{ x }}"]}, "c": "{{ x }}"}
    values = {"x": {"deep": [1]}}
    config_before, values_before = copy.deepcopy(config), copy.deepcopy(values)
    out = render(config, values, {})
    out["a"]["b"][0]["deep"].append(2)
    out["c"]["deep"].append(3)
    out["a"]["new"] = 1
    assert config == config_before
    assert values == values_before


# --- inject_run_context -----------------------------------------------------------------------------

RUN_CONTEXT: dict[str, Any] = {
    "run_id": "r-1",
    "deployment": "flow/dep",
    "pool": "pool-a",
    "queue": "default",
    "parameters": {"b": 2, "a": [1]},
    "callback_url": "https://cb/runs/r-1",
    "callback_token": "tok",
    "run_name": "happy-otter",
}

PUSHPOOL_ENV = {
    "PUSHPOOL_RUN_ID": "r-1",
    "PUSHPOOL_DEPLOYMENT": "flow/dep",
    "PUSHPOOL_POOL": "pool-a",
    "PUSHPOOL_QUEUE": "default",
    "PUSHPOOL_PARAMETERS": '{"a": [1], "b": 2}',
    "PUSHPOOL_CALLBACK_URL": "https://cb/runs/r-1",
    "PUSHPOOL_CALLBACK_TOKEN": "tok",
}

PUSHPOOL_LABELS = {"pushpool.io/run-id": "r-1", "pushpool.io/pool": "pool-a", "pushpool.io/deployment": "flow/dep"}


def test_inject_creates_env_labels_and_name() -> None:
    job = inject_run_context({"image": "x"}, **RUN_CONTEXT)
    assert job == {"image": "x", "env": PUSHPOOL_ENV, "labels": PUSHPOOL_LABELS, "name": "happy-otter"}


def test_inject_dispatcher_values_win_and_user_values_stay() -> None:
    job = {
        "env": {"PUSHPOOL_RUN_ID": "forged", "USER_VAR": "u"},
        "labels": {"pushpool.io/pool": "forged", "team": "data"},
        "name": "custom",
    }
    out = inject_run_context(job, **RUN_CONTEXT)
    assert out["env"] == {"USER_VAR": "u", **PUSHPOOL_ENV}
    assert out["labels"] == {"team": "data", **PUSHPOOL_LABELS}
    assert out["name"] == "custom"


@pytest.mark.parametrize("job", [{"name": None}, {"name": ""}, {}])
def test_inject_sets_name_only_when_unset(job: dict[str, Any]) -> None:
    assert inject_run_context(job, **RUN_CONTEXT)["name"] == "happy-otter"


def test_inject_stringifies_env_values_and_drops_nulls() -> None:
    job = {"env": {"N": 5, "B": True, "L": [1, "a"], "O": {"k": 1}, "S": "s", "GONE": None}, "labels": None}
    env = inject_run_context(job, **RUN_CONTEXT)["env"]
    assert {k: env[k] for k in ("N", "B", "L", "O", "S")} == {
        "N": "5",
        "B": "true",
        "L": '[1,"a"]',
        "O": '{"k":1}',
        "S": "s",
    }
    assert "GONE" not in env
    assert all(isinstance(value, str) for value in env.values())


def test_inject_does_not_mutate_the_job() -> None:
    job = {"env": {"A": "1"}, "labels": {"x": "y"}, "spec": {"deep": [1]}}
    before = copy.deepcopy(job)
    out = inject_run_context(job, **RUN_CONTEXT)
    out["spec"]["deep"].append(2)
    assert job == before


@pytest.mark.parametrize(
    ("job", "start"),
    [
        ({"env": ["A=1"]}, "job env must be a JSON object"),
        ({"labels": "x"}, "job labels must be a JSON object"),
        ([], "the rendered job must be a JSON object"),
    ],
)
def test_inject_rejects_malformed_env_labels_and_job(job: Any, start: str) -> None:
    with pytest.raises(TemplateError) as exc_info:
        inject_run_context(job, **RUN_CONTEXT)
    assert error_message(exc_info).startswith(start)


# --- properties -------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=15,
)
NAMES = ["a", "b", "c", "$E", "$F"]


@st.composite
def placeholder_text(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(NAMES))
    left, right = draw(st.sampled_from(["", " ", "  "])), draw(st.sampled_from(["", " "]))
    return "{{" + left + name + right + "}}"


# Text made of plain pieces and placeholder syntax, so values look like templates.
template_like_text = st.lists(st.text(max_size=4) | placeholder_text(), max_size=5).map("".join)


@given(json_values)
def test_property_whole_placeholder_preserves_value_and_type(value: Any) -> None:
    out = render({"k": "{{ x }}"}, {"x": value}, {})
    # json.dumps tells 1 from 1.0 and True from 1, which == does not.
    assert json.dumps(out) == json.dumps({"k": value})


plain_text = st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=6)


@given(template_like_text, plain_text, plain_text)
def test_property_values_come_out_literally(x: str, prefix: str, suffix: str) -> None:
    # Every name a value might mention has a value, so any second pass would change the text.
    values = {"x": x, "a": "A!", "b": 7, "c": None}
    env = {"E": "env!", "F": "f!"}
    config = {"whole": "{{ x }}", "embedded": prefix + "{{x}}" + suffix, "list": ["{{ x }}"]}
    out = render(config, values, env)
    assert out == {"whole": x, "embedded": prefix + x + suffix, "list": [x]}


json_keys = st.sampled_from(["k1", "k2", "k3", "{{ a }}", "$E"])
template_leaves = placeholder_text() | template_like_text | st.integers() | st.booleans() | st.none()
templates = st.recursive(
    template_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=4),
    max_leaves=20,
)
value_maps = st.dictionaries(st.sampled_from(["a", "b", "c"]), json_values, max_size=3)
env_maps = st.dictionaries(st.sampled_from(["E", "F"]), st.text(max_size=5), max_size=2)


def assert_rendered_shape(template: Any, out: Any, values: dict[str, Any], env: dict[str, str]) -> None:
    """An exact oracle for render's structure: keys and items are kept or removed, never added."""
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template)
        if whole is not None:
            name = whole.group(1)
            source = env if name.startswith("$") else values
            assert json.dumps(out) == json.dumps(source[name.lstrip("$")])
        else:
            assert isinstance(out, str)
        return
    if isinstance(template, dict):
        assert isinstance(out, dict)
        removed = {key for key, child in template.items() if is_missing_placeholder(child, values, env)}
        assert list(out) == [key for key in template if key not in removed]
        for key in out:
            assert_rendered_shape(template[key], out[key], values, env)
        return
    if isinstance(template, list):
        assert isinstance(out, list)
        kept = [item for item in template if not is_missing_placeholder(item, values, env)]
        assert len(out) == len(kept)
        for item, rendered in zip(kept, out, strict=True):
            assert_rendered_shape(item, rendered, values, env)
        return
    assert json.dumps(out) == json.dumps(template)


def is_missing_placeholder(node: Any, values: dict[str, Any], env: dict[str, str]) -> bool:
    if not isinstance(node, str) or (whole := PLACEHOLDER.fullmatch(node)) is None:
        return False
    name = whole.group(1)
    return (name[1:] not in env) if name.startswith("$") else (name not in values)


@given(st.dictionaries(json_keys, templates, max_size=5), value_maps, env_maps)
def test_property_structure_is_kept_or_removed_never_added(
    template: dict[str, Any], values: dict[str, Any], env: dict[str, str]
) -> None:
    before = copy.deepcopy((template, values, env))
    out = render(template, values, {**env, "PUSHPOOL_TEMPLATE_ENV": "E,F"})
    assert_rendered_shape(template, out, values, env)
    assert (template, values, env) == before


@given(st.lists(st.dictionaries(st.sampled_from(["env", "cpu", "tags"]), json_values, max_size=3), max_size=4))
def test_property_merge_precedence(layers: list[dict[str, Any]]) -> None:
    before = copy.deepcopy(layers)
    merged = merge_job_variables(*layers)
    assert layers == before
    for key in ("cpu", "tags"):
        setters = [layer[key] for layer in layers if key in layer]
        assert (key in merged) == bool(setters)
        if setters:
            assert json.dumps(merged[key]) == json.dumps(setters[-1])
    expected_env: Any = None
    has_env = False
    for layer in layers:
        if "env" not in layer:
            continue
        value = layer["env"]
        if isinstance(value, dict) and isinstance(expected_env, dict):
            expected_env = {**expected_env, **value}
        else:
            expected_env = value
        has_env = True
    assert ("env" in merged) == has_env
    if has_env:
        assert json.dumps(merged["env"]) == json.dumps(expected_env)


def test_large_parameters_travel_by_reference_and_a_job_cannot_redirect_them() -> None:
    big = {"blob": "x" * PARAMETERS_INLINE_BYTES}
    job = inject_run_context(
        {"env": {"PUSHPOOL_PARAMETERS": "forged", "PUSHPOOL_PARAMETERS_URL": "http://evil/"}},
        **{**RUN_CONTEXT, "parameters": big},
    )
    assert "PUSHPOOL_PARAMETERS" not in job["env"]
    assert job["env"]["PUSHPOOL_PARAMETERS_URL"] == "https://cb/runs/r-1/parameters"
    # At the limit they stay inline, and a forged URL from the template is dropped there too.
    small = {"blob": "x" * (PARAMETERS_INLINE_BYTES - len('{"blob": ""}'))}
    job = inject_run_context(
        {"env": {"PUSHPOOL_PARAMETERS_URL": "http://evil/"}}, **{**RUN_CONTEXT, "parameters": small}
    )
    assert json.loads(job["env"]["PUSHPOOL_PARAMETERS"]) == small and "PUSHPOOL_PARAMETERS_URL" not in job["env"]
    # Without a callback URL there is nowhere to read them from: inline, whatever their size.
    job = inject_run_context({}, **{**RUN_CONTEXT, "parameters": big, "callback_url": ""})
    assert json.loads(job["env"]["PUSHPOOL_PARAMETERS"]) == big

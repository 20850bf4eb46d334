"""Base job templates (SPEC §4): validate a template and its job variables, merge the layers, render, inject.

Every function here is pure: nothing is read or written except the arguments (the environment used by
`{{ $NAME }}` placeholders is passed in as a mapping; `validate_template` reads the process's own when
given none), and nothing passed in is mutated.

Two rules of SPEC §8 live here: `{{ $NAME }}` reads only the names the operator lists in
`PUSHPOOL_TEMPLATE_ENV` (`env_placeholder_problem`), and commands are rendered argument by argument
(`dispatcher.arguments`), so a value is never more than one argument and never shell syntax.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from dispatcher import arguments
from dispatcher.errors import TemplateError
from dispatcher.signing import (
    PARAMETERS_ENV,
    PARAMETERS_ENV_MAX_BYTES,
    PARAMETERS_FILE_ENV,
    PARAMETERS_PATH,
    PARAMETERS_URL_ENV,
)

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

# jsonschema is imported where a schema is checked, not with this module: a Lambda function that only
# answers callbacks or task events never renders a template, so it never pays for the import.

__all__ = [
    "CREDENTIAL_VARIABLES",
    "NEVER_READABLE_ENV",
    "PLACEHOLDER",
    "TEMPLATE_ENV",
    "allowed_env_names",
    "check_credentials",
    "fits",
    "inject_run_context",
    "merge_job_variables",
    "placeholders",
    "render",
    "resolve_job_variables",
    "root_name",
    "validate_job_variables",
    "validate_template",
    "variable_defaults",
]

PLACEHOLDER = re.compile(
    r"\{\{\s*(\$[A-Za-z_][A-Za-z0-9_]*|[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+|\[\d+\])*)\s*\}\}"
)
"""`{{ name }}`, `{{ name.key.0 }}` / `{{ name[0] }}` (a path into the value, as Prefect resolves it) or
`{{ $ENV_NAME }}`; group 1 is the name, with its `$` for environment placeholders.

A placeholder starts with an identifier: anything else between braces (a Go template such as `{{.Id}}` in a
command line, say) is plain text, so templates can carry such text unchanged.
"""

TEMPLATE_ENV = "PUSHPOOL_TEMPLATE_ENV"
"""The dispatcher's environment variables templates may read with `{{ $NAME }}`: names, comma-separated."""

NEVER_READABLE_ENV = frozenset(
    {
        "PUSHPOOL_SECRET",
        "PUSHPOOL_API_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PASSWORD",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "MODAL_TOKEN_ID",
        "MODAL_TOKEN_SECRET",
    }
)
"""The dispatcher's secrets and cloud credentials: no template reads them, even when PUSHPOOL_TEMPLATE_ENV
lists them, because a job must never hold them (SPEC §8)."""


def allowed_env_names(environ: Mapping[str, str]) -> frozenset[str]:
    """The names `{{ $NAME }}` may read under this environment's PUSHPOOL_TEMPLATE_ENV."""
    listed = (name.strip() for name in environ.get(TEMPLATE_ENV, "").split(","))
    return frozenset(name for name in listed if name) - NEVER_READABLE_ENV


def env_placeholder_problem(job_configuration: Any, environ: Mapping[str, str]) -> str | None:
    """Why a template may not be used under `environ`: the first `{{ $NAME }}` it may not read; else None."""
    allowed = allowed_env_names(environ)
    refused = sorted(n[1:] for n in placeholders(job_configuration) if n.startswith("$") and n[1:] not in allowed)
    if not refused:
        return None
    name = refused[0]
    if name in NEVER_READABLE_ENV:
        return (
            f"job_configuration: {{{{ ${name} }}}} would copy a secret of the dispatcher into jobs, which no "
            f"template may read; pass what the job needs in a variable or its env."
        )
    return (
        f"job_configuration: {{{{ ${name} }}}} reads the dispatcher's environment variable {name}, which "
        f"{TEMPLATE_ENV} does not list; add {name} to {TEMPLATE_ENV} (comma-separated) wherever pushpool runs, "
        f"or remove the placeholder."
    )


CREDENTIAL_VARIABLES = frozenset({"aws_credentials", "credentials", "aci_credentials"})
"""Prefect's credentials-block variables (ECS, Cloud Run, ACI). pushpool declares and accepts them so Prefect's
templates and job variables carry over, but never passes them to a job: each provider uses the credentials
of the dispatcher's own environment (docs/prefect.md). A value carrying secret material is refused."""

_SECRET_KEY = re.compile(r"secret|password|passwd|token|private|service_account_info|(^|_)key$", re.IGNORECASE)
"""Keys of a credentials value that hold secrets (aws_secret_access_key, client_secret, service_account_info)."""

_PREFECT_ONLY = {
    "prefect.variables.": (
        "reads a Prefect server variable, which pushpool does not have; declare a variable in "
        "variables.properties with that value as its default, or read the dispatcher's environment with "
        "{{ $NAME }}"
    ),
    "prefect.blocks.": (
        "reads a Prefect block, which pushpool does not have; credentials come from the dispatcher's own "
        "environment (see docs/prefect.md), and other values belong in a variable's default or in "
        "{{ $NAME }}"
    ),
}

# Sentinel for "no value": None is a real value (it renders as JSON null), so it cannot mean "absent".
_MISSING: Any = object()

_TEMPLATE_KEYS = ("job_configuration", "variables")


def placeholders(job_configuration: Any) -> set[str]:
    """Every placeholder name used in the strings of `job_configuration` (env ones keep their `$`).

    Dict keys are not searched because they are never rendered.
    """
    found: set[str] = set()
    for text in _strings(job_configuration):
        found.update(match.group(1) for match in PLACEHOLDER.finditer(text))
    return found


def _strings(node: Any) -> Iterable[str]:
    """Yield every string value in a nested structure of dicts and lists, keys excluded."""
    for _, text in _located_strings(node, ""):
        yield text


def _located_strings(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """(dotted place, text) of every string value in a nested structure of dicts and lists, keys excluded."""
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _located_strings(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _located_strings(item, f"{where}[{index}]")


def root_name(name: str) -> str:
    """The variable a placeholder name reads: `network` for `network.subnet` or `network[0]`."""
    return re.split(r"[.\[]", name, maxsplit=1)[0]


def _check_prefect_placeholders(job_configuration: dict[str, Any]) -> None:
    """`{{ prefect.variables.* }}` and `{{ prefect.blocks.* }}` name things only a Prefect server has."""
    for where, text in _located_strings(job_configuration, "job_configuration"):
        for match in PLACEHOLDER.finditer(text):
            for prefix, why in _PREFECT_ONLY.items():
                if match.group(1).startswith(prefix):
                    raise TemplateError(f"{where}: {match.group(0)} {why}.")


def validate_template(template: Any, environ: Mapping[str, str] | None = None) -> None:
    """Check a base job template's shape, its variables schema, its placeholders, its commands and defaults.

    `{{ $NAME }}` placeholders are checked against `environ`'s PUSHPOOL_TEMPLATE_ENV (the process's own
    environment when None). Raises TemplateError naming the first broken rule.
    """
    if not isinstance(template, dict):
        raise TemplateError(
            f"base job template must be a JSON object with the keys job_configuration and variables, "
            f"not {_json_type(template)}."
        )
    missing = [key for key in _TEMPLATE_KEYS if key not in template]
    extra = sorted(str(key) for key in template if key not in _TEMPLATE_KEYS)
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"is missing {', '.join(missing)}")
        if extra:
            problems.append(f"has unknown keys {', '.join(extra)}")
        raise TemplateError(
            f"base job template {' and '.join(problems)}; "
            f"it must have exactly the keys job_configuration and variables."
        )
    job_configuration = template["job_configuration"]
    if not isinstance(job_configuration, dict):
        raise TemplateError(
            f"job_configuration must be a JSON object describing the job, not {_json_type(job_configuration)}."
        )
    variables = template["variables"]
    _check_variables_shape(variables)
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(variables)
    except SchemaError as error:
        where = _dotted("variables", error.path)
        raise TemplateError(f"{where} is not valid JSON Schema (draft 2020-12): {_sentence(error.message)}") from None
    _check_references(variables)
    properties: dict[str, Any] = variables.get("properties", {})

    _check_prefect_placeholders(job_configuration)
    undeclared = sorted(
        {root_name(name) for name in placeholders(job_configuration) if not name.startswith("$")} - set(properties)
    )
    if undeclared:
        raise TemplateError(
            f"job_configuration uses undeclared variables {', '.join(undeclared)}; "
            f"add them to variables.properties or remove the placeholders."
        )
    env_problem = env_placeholder_problem(job_configuration, os.environ if environ is None else environ)
    if env_problem is not None:
        raise TemplateError(env_problem)
    _check_commands(job_configuration, "job_configuration")

    # A default that breaks its own schema would make every run of the pool fail at creation, so it is
    # caught when the template is written rather than when someone first triggers a run.
    for name, schema in properties.items():
        # A null default means "no default", as in Prefect: the variable's key is dropped when it renders.
        if isinstance(schema, dict) and schema.get("default") is not None:
            _check_default_is_data(name, schema["default"])
            problem = _first_error(schema, schema["default"], root=variables)
            if problem is not None:
                where = _dotted(f"variables.properties.{name}.default", problem.absolute_path)
                raise TemplateError(f"{where}: {_sentence(problem.message)}")


def _check_default_is_data(name: str, default: Any) -> None:
    """A default that is a Prefect block reference cannot be read here; one for credentials is ignored anyway."""
    if _is_block_reference(default) and name not in CREDENTIAL_VARIABLES:
        raise TemplateError(
            f"variables.properties.{name}.default is a reference to a Prefect block, which pushpool cannot read; "
            "put the value itself in the default, or read it from the dispatcher's environment with {{ $NAME }}."
        )
    if name in CREDENTIAL_VARIABLES:
        check_credentials(name, default, field=f"variables.properties.{name}.default")


def _is_block_reference(value: Any) -> bool:
    """Prefect's `{"$ref": {"block_document_id": ...}}`: the default of a variable bound to a block document."""
    ref = value.get("$ref") if isinstance(value, dict) else None
    return isinstance(ref, dict) and "block_document_id" in ref


def check_credentials(name: str, value: Any, *, field: str) -> None:
    """A credentials variable may name a block or carry settings, never a secret: pushpool stores none.

    Raises TemplateError naming the first secret key and where the provider finds credentials instead.
    """
    for where, key in _keys(value, field):
        if _SECRET_KEY.search(key):
            raise TemplateError(
                f"{where}: pushpool never stores credentials; remove it and give the dispatcher its own "
                f"credentials instead ({name}: see docs/prefect.md for where each provider finds them)."
            )


def _keys(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{where}.{key}", str(key)
            yield from _keys(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _keys(item, f"{where}[{index}]")


_DATA_KEYWORDS = frozenset({"default", "const", "enum", "examples"})
"""Keywords whose values are data, not schemas: a "$ref" key inside them is not a reference."""


def _references(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """(dotted place, reference) of every `$ref` in a schema, data keywords left out."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield where, node["$ref"]
        for key, value in node.items():
            if key not in _DATA_KEYWORDS:
                yield from _references(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _references(item, f"{where}[{index}]")


def _check_references(variables: dict[str, Any]) -> None:
    """Every `$ref` points inside the variables schema, at something that is there.

    jsonschema fetches nothing, so a reference to another document, or to a place that does not exist,
    would fail every later validation of a deployment or a run; it is refused when the template is written.
    """
    from referencing import Registry
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    resolver = Registry().resolver_with_root(DRAFT202012.create_resource(variables))
    for where, ref in _references(variables, "variables"):
        if not ref.startswith("#"):
            raise TemplateError(
                f"{where}.$ref: {ref!r} points outside the template; only references inside the variables "
                "schema, such as '#/definitions/name', are allowed."
            )
        try:
            resolver.lookup(ref)
        except Unresolvable:
            raise TemplateError(
                f"{where}.$ref: {ref!r} points to nothing in the variables schema; add what it names (e.g. "
                "under variables.definitions) or correct the reference."
            ) from None
    for where, ref in _references(variables, "variables"):
        if _leads_back(resolver.lookup(ref).contents, lambda r: resolver.lookup(r).contents):
            raise TemplateError(
                f"{where}.$ref: {ref!r} refers to itself (a cycle of references that never reaches the value); "
                "point it at a schema that describes the value."
            )


_IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
_IN_PLACE_ONE = ("not", "if", "then", "else")
"""Keywords whose schemas apply to the very value their schema applies to (not to a part of it)."""


def _leads_back(start: Any, resolve: Callable[[str], Any]) -> bool:
    """Whether following `$ref`s and in-place keywords from `start` comes back to a schema on the way.

    Such a cycle never reaches a part of the value, so a validator follows it forever (RecursionError).
    A recursive schema that descends (`items: {"$ref": "#"}`) is fine and is not reported.
    """
    path: list[tuple[int, Iterator[Any]]] = [(id(start), _in_place(start, resolve))]
    on_path = {id(start)}
    done: set[int] = set()
    while path:
        node_id, children = path[-1]
        child = next(children, None)
        if child is None:
            path.pop()
            on_path.discard(node_id)
            done.add(node_id)
            continue
        if id(child) in on_path:
            return True
        if id(child) not in done:
            path.append((id(child), _in_place(child, resolve)))
            on_path.add(id(child))
    return False


def _in_place(node: Any, resolve: Callable[[str], Any]) -> Iterator[Any]:
    if not isinstance(node, dict):
        return
    if isinstance(node.get("$ref"), str):
        yield resolve(node["$ref"])
    for key in _IN_PLACE_LISTS:
        if isinstance(node.get(key), list):
            yield from node[key]
    for key in _IN_PLACE_ONE:
        if key in node:
            yield node[key]


def _check_variables_shape(variables: Any) -> None:
    """The parts of `variables` that check_schema accepts but this project's rules do not."""
    if not isinstance(variables, dict) or variables.get("type") != "object":
        raise TemplateError(
            'variables must be a JSON Schema object with "type": "object" and its variables in "properties".'
        )
    properties = variables.get("properties", {})
    if not isinstance(properties, dict):
        raise TemplateError(
            f"variables.properties must be a JSON object mapping variable names to schemas, "
            f"not {_json_type(properties)}."
        )
    for name in properties:
        # Names that cannot appear in `{{ name }}` could never be used by job_configuration.
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise TemplateError(
                f"variables.properties: {name!r} is not a valid variable name; "
                f"use letters, digits and underscores, not starting with a digit."
            )
    required = variables.get("required", [])
    if not isinstance(required, list) or not all(isinstance(item, str) for item in required):
        raise TemplateError("variables.required must be a list of variable names.")
    # jsonschema allows required names that have no schema, but here such a name could never be set
    # (undeclared keys are rejected), so every run of the pool would fail.
    unknown_required = sorted(set(required) - set(properties))
    if unknown_required:
        raise TemplateError(
            f"variables.required names {', '.join(unknown_required)}, which variables.properties does not "
            f"declare; declare them or remove them from required."
        )


def declared_variables(template: dict[str, Any]) -> dict[str, Any]:
    """The template's `variables` schema; one that declares nothing when the template has none.

    A stored pool may have no template at all (`{}`: the model's default, a pool made by an older release or
    through the store): it then declares no variable, so any job variable set for it is refused by name."""
    variables = template.get("variables")
    return variables if isinstance(variables, dict) else {"type": "object", "properties": {}}


def validate_job_variables(template: dict[str, Any], values: Any, *, field: str, enforce_required: bool) -> None:
    """Check job variables against the template's `variables` schema.

    Keys the schema does not declare are rejected (a pool is an enforced interface); `required` is only
    checked when `enforce_required` is true (deployments may leave values to the run). `field` names the
    input in messages, e.g. "job_variables" or "pool job_variables".
    """
    if not isinstance(values, dict):
        raise TemplateError(
            f"{field} must be a JSON object mapping variable names to values, not {_json_type(values)}."
        )
    variables = declared_variables(template)
    properties: dict[str, Any] = variables.get("properties", {})
    unknown = sorted(str(key) for key in values if key not in properties)
    if unknown:
        allowed = ", ".join(sorted(properties)) or "none (this pool declares no variables)"
        quoted = ", ".join(repr(key) for key in unknown)
        verb = "is not a variable" if len(unknown) == 1 else "are not variables"
        raise TemplateError(f"{field}: {quoted} {verb} of this pool; allowed: {allowed}.")

    for name in CREDENTIAL_VARIABLES & set(values):
        check_credentials(name, values[name], field=f"{field}.{name}")
    schema = dict(variables)
    if not enforce_required:
        schema.pop("required", None)
    error = _first_error(schema, values)
    if error is not None:
        raise TemplateError(f"{_dotted(field, error.absolute_path)}: {_sentence(error.message)}")


def fits(template: dict[str, Any], name: str, value: Any) -> bool:
    """Whether `value` satisfies the schema of the template's variable `name`."""
    variables = declared_variables(template)
    schema = variables.get("properties", {}).get(name)
    return isinstance(schema, dict) and _first_error(schema, value, root=variables) is None


def _first_error(schema: dict[str, Any], value: Any, *, root: dict[str, Any] | None = None) -> ValidationError | None:
    """jsonschema's best match among the errors of `value`, or None when it is valid.

    `schema` may be a part of `root`, whose references it then resolves against. A reference that cannot be
    resolved (a template stored before references were checked) is a TemplateError, never a traceback.
    """
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match
    from referencing.exceptions import Unresolvable

    whole = Draft202012Validator(root if root is not None else schema)
    validator = whole.evolve(schema=schema) if root is not None else whole
    try:
        return best_match(_sorted_errors(validator.iter_errors(value)))
    except Unresolvable as exc:
        raise TemplateError(
            f"the pool's variables schema has a $ref that cannot be resolved ({exc}); correct the pool's base "
            "job template with `pushpool work-pool update --base-job-template`."
        ) from None
    except RecursionError:  # a template stored before reference cycles were refused
        raise TemplateError(
            "the pool's variables schema has a $ref that refers back to itself (a cycle of references); correct "
            "the pool's base job template with `pushpool work-pool update --base-job-template`."
        ) from None


def _sorted_errors(errors: Iterable[ValidationError]) -> list[ValidationError]:
    """Order errors by where they are, so the reported one does not depend on dict order of the input."""
    return sorted(errors, key=lambda error: ([str(part) for part in error.absolute_path], error.message))


def merge_job_variables(*layers: dict[str, Any] | None) -> dict[str, Any]:
    """Merge job variable layers, lowest precedence first (defaults, pool, deployment, run).

    `env` objects merge key by key (a later layer's key wins); every other key is replaced whole.
    A None layer counts as empty. Layers are not mutated and share nothing with the result.
    """
    merged: dict[str, Any] = {}
    for position, layer in enumerate(layers):
        if layer is None:
            continue
        if not isinstance(layer, dict):
            raise TemplateError(
                f"job variables layer {position + 1} must be a JSON object mapping variable names to "
                f"values, not {_json_type(layer)}."
            )
        for key, value in layer.items():
            previous = merged.get(key)
            if key == "env" and isinstance(value, dict) and isinstance(previous, dict):
                merged[key] = {**previous, **copy.deepcopy(value)}
            else:
                # A non-object env (null, say) replaces whole; the schema then decides if it is allowed.
                merged[key] = copy.deepcopy(value)
    return merged


def variable_defaults(template: dict[str, Any]) -> dict[str, Any]:
    """`{name: default}` for each declared variable that has a default (copies, safe to mutate).

    A null default counts as none, as in Prefect: the variable is left unset, so its key is dropped.
    """
    properties: dict[str, Any] = declared_variables(template).get("properties", {})
    return {
        name: copy.deepcopy(schema["default"])
        for name, schema in properties.items()
        if isinstance(schema, dict) and schema.get("default") is not None
    }


def resolve_job_variables(
    template: dict[str, Any],
    pool_vars: dict[str, Any] | None,
    deployment_vars: dict[str, Any] | None,
    run_vars: dict[str, Any] | None,
) -> dict[str, Any]:
    """The values a run is rendered with: defaults < pool < deployment < run, validated with required."""
    merged = merge_job_variables(variable_defaults(template), pool_vars, deployment_vars, run_vars)
    validate_job_variables(template, merged, field="job_variables", enforce_required=True)
    return merged


def render(job_configuration: Any, values: dict[str, Any], env: Mapping[str, str]) -> Any:
    """Return a new job configuration with placeholders replaced, in one pass.

    A string that is exactly one placeholder becomes the value with its type; a placeholder inside a
    longer string becomes the value's text (JSON for non-strings, "" for null or no value). A dict
    entry or list item whose whole value is a placeholder without a value is removed. `{{ $NAME }}`
    reads `env`, only for the names its PUSHPOOL_TEMPLATE_ENV lists (a stored template naming another is
    refused here too). Values are never rendered themselves, and dict keys are never rendered.

    Commands (`arguments.ARGV_KEYS`) are rendered argument by argument: a command string with a placeholder
    inside becomes a list of arguments, each value staying inside the argument it was written in, and a value
    inside a shell's `-c` script is quoted for that shell.
    """
    problem = env_placeholder_problem(job_configuration, env)
    if problem is not None:
        raise TemplateError(problem)
    rendered = _render(job_configuration, values, env)
    # At the top level there is no key or item to remove, so "no value" can only become null.
    return None if rendered is _MISSING else rendered


def _render(node: Any, values: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        whole = PLACEHOLDER.fullmatch(node)
        if whole is not None:
            value = _lookup(whole.group(1), values, env)
            return value if value is _MISSING else copy.deepcopy(value)
        # A single re.sub over the original string: replacement text is never scanned again, so a
        # value that contains "{{ x }}" stays literal.
        return PLACEHOLDER.sub(lambda match: _text(_lookup(match.group(1), values, env)), node)
    if isinstance(node, dict):
        commands = _render_commands(node, values, env)
        out: dict[Any, Any] = {}
        for key, child in node.items():
            rendered = commands[key] if key in commands else _render(child, values, env)
            if rendered is not _MISSING:
                out[key] = rendered
        return out
    if isinstance(node, list):
        items = (_render(item, values, env) for item in node)
        return [item for item in items if item is not _MISSING]
    return copy.deepcopy(node)


def _command_plans(node: dict[Any, Any], where: str) -> Iterator[tuple[str, tuple[list[arguments.Argument], bool]]]:
    """(key, plan) for each command key of `node` that needs argument-aware rendering; raises for unsafe ones."""
    before: list[str] = []
    for key in arguments.ARGV_KEYS:
        if key not in node:
            continue
        child = node[key]
        planned = arguments.plan(child, PLACEHOLDER, f"{where}.{key}", before=before)
        if planned is not None:
            yield key, planned
        # What a platform puts in front of the next key: literal arguments only (a placeholder is a value).
        literal = child if isinstance(child, list) else ([] if PLACEHOLDER.search(str(child)) else [child])
        before = before + [item for item in literal if isinstance(item, str)]


def _check_commands(node: Any, where: str) -> None:
    """Refuse, when a template is written, a command that no value could fill safely (see `arguments`)."""
    if isinstance(node, dict):
        for _ in _command_plans(node, where):
            pass
        for key, child in node.items():
            _check_commands(child, f"{where}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _check_commands(item, f"{where}[{index}]")


def _render_commands(node: dict[Any, Any], values: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The command keys of `node`, rendered argument by argument (the others are left to `_render`)."""
    rendered: dict[str, Any] = {}
    for key, (args, from_string) in _command_plans(node, "job_configuration"):
        out: list[Any] = []
        for arg in args:
            text = arg.text
            if not isinstance(text, str):
                out.append(copy.deepcopy(text))
                continue

            def fill(match: re.Match[str], quote: bool = arg.script) -> str:
                value = _text(_lookup(match.group(1), values, env))
                return shlex.quote(value) if quote else value

            whole = PLACEHOLDER.fullmatch(text)
            if whole is not None and not arg.script:
                value = _lookup(whole.group(1), values, env)
                if value is _MISSING or (from_string and value is None):
                    continue  # no value: no argument, as a list item without a value is removed
                out.append(_text(value) if from_string else copy.deepcopy(value))
            else:
                out.append(PLACEHOLDER.sub(fill, text))
        rendered[key] = out
    return rendered


def _lookup(name: str, values: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    if name.startswith("$"):
        return env.get(name[1:], _MISSING)
    root, *path = re.split(r"\.|\[", name.replace("]", ""))
    value = values.get(root, _MISSING)
    for part in path:
        # As Prefect's get_from_dict: a part that reads as a number indexes a list (or a dict by that text).
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


def _text(value: Any) -> str:
    """A value's text inside a longer string."""
    if value is _MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    # Compact JSON so "true", "5" and lists read as a JSON reader (or a shell user) expects.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


PARAMETERS_INLINE_BYTES = 4096
"""Parameters up to this size travel in PUSHPOOL_PARAMETERS. Larger ones travel by reference: the job gets
PUSHPOOL_PARAMETERS_URL, which `pushpool-run` reads with the run's own token and hands to the command as
PUSHPOOL_PARAMETERS (or, over signing.PARAMETERS_ENV_MAX_BYTES, as a file named by PUSHPOOL_PARAMETERS_FILE).
ECS caps a RunTask's overrides at 8,192 characters, token and env included."""


def inject_run_context(
    job: dict[str, Any],
    *,
    run_id: str,
    deployment: str,
    pool: str,
    queue: str,
    parameters: dict[str, Any] | None,
    callback_url: str,
    callback_token: str,
    run_name: str,
) -> dict[str, Any]:
    """Return a copy of a rendered job with the dispatcher's env vars, labels and a default name.

    The PUSHPOOL_* env vars and pushpool.io/* labels win over user ones of the same name, because the
    runner and the reconciler rely on them. Non-string env values are turned into JSON text; a null env
    value unsets the variable (the only way a deployment or run can drop an env var a pool sets).
    Parameters over PARAMETERS_INLINE_BYTES go by reference (PUSHPOOL_PARAMETERS_URL); `parameters` None
    (kept apart by the store, so over that size) always does. Without a callback URL there is no reference to
    give: parameters go inline up to what one environment variable holds, and larger ones are refused in words.
    """
    if not isinstance(job, dict):
        raise TemplateError(f"the rendered job must be a JSON object, not {_json_type(job)}.")
    result = copy.deepcopy(job)

    user_env = result.get("env")
    if user_env is None:
        user_env = {}
    if not isinstance(user_env, dict):
        raise TemplateError(
            f"job env must be a JSON object mapping variable names to strings, not {_json_type(user_env)}."
        )
    env = {str(key): _env_text(value) for key, value in user_env.items() if value is not None}
    for owned in (PARAMETERS_ENV, PARAMETERS_URL_ENV, PARAMETERS_FILE_ENV):
        env.pop(owned, None)
    env.update(
        {
            "PUSHPOOL_RUN_ID": run_id,
            "PUSHPOOL_DEPLOYMENT": deployment,
            "PUSHPOOL_POOL": pool,
            "PUSHPOOL_QUEUE": queue,
            "PUSHPOOL_CALLBACK_URL": callback_url,
            "PUSHPOOL_CALLBACK_TOKEN": callback_token,
        }
    )
    text = None if parameters is None else json.dumps(parameters, sort_keys=True, default=str)
    size = None if text is None else len(text.encode())
    if callback_url and (size is None or size > PARAMETERS_INLINE_BYTES):
        env[PARAMETERS_URL_ENV] = callback_url + PARAMETERS_PATH
    elif text is None or (size or 0) > PARAMETERS_ENV_MAX_BYTES:
        raise TemplateError(
            f"the run's parameters are {'too large' if size is None else f'{size:,} bytes as JSON'}, more than a job's "
            f"environment variable holds ({PARAMETERS_ENV_MAX_BYTES:,} bytes), and without a callback URL the job "
            "cannot read them by reference; set PUSHPOOL_CALLBACK_BASE_URL for the dispatcher."
        )
    else:
        env[PARAMETERS_ENV] = text
    result["env"] = env

    labels = result.get("labels")
    if labels is None:
        labels = {}
    if not isinstance(labels, dict):
        raise TemplateError(
            f"job labels must be a JSON object mapping label names to strings, not {_json_type(labels)}."
        )
    result["labels"] = {
        **labels,
        "pushpool.io/run-id": run_id,
        "pushpool.io/pool": pool,
        "pushpool.io/deployment": deployment,
    }

    if result.get("name") in (None, ""):
        result["name"] = run_name
    return result


def _env_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)


def _dotted(field: str, path: Iterable[Any]) -> str:
    """`field.a.b[0]`: where in the input a schema error is, for the message."""
    text = field
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _sentence(message: str) -> str:
    return message if message.endswith(".") else message + "."


def _json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages written for people who write JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__

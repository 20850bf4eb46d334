"""`pushpool apply FILE [--dry-run]`: work pools, queues and deployments as code (SPEC §7).

A document (YAML or JSON) lists pools with their queues, and deployments::

    work_pools:
      - name: prod
        type: process
        concurrency_limit: 5
        base_job_template_file: templates/prod.json   # relative to the document
        queues:
          - {name: critical, priority: 1, concurrency_limit: 1}
    deployments:
      - {name: etl, pool: prod, queue: critical, schedules: [{cron: "0 * * * *"}]}

`plan_apply` validates the whole document and compares it with the store, like `terraform plan`;
`execute` performs the plan through `pools` and `deployments`, so every rule (names, limits, template
checks, priority insert-and-shift) is the very one the CLI applies. Decisions the spec leaves open:

- **Additive, never destructive.** Nothing in the store that the document omits is deleted or reset:
  a missing pool, queue or deployment is left alone, because a document often describes one team's part
  of a shared store, and a forgotten entry must not delete a pool with its runs. Delete with the CLI.
- **Only fields present are managed.** An omitted field keeps its stored value. `null` means "not set"
  everywhere except `concurrency_limit`, where `null` is a value: unlimited.
- **Defaults on create only.** `type` (process) and a deployment's `queue` (default) apply to new
  objects; for an existing one an omitted `queue` stays where it is. A pool's type can never change.
- **`set_as_default: false` never clears** the user's default pool; `true` sets it (at most one pool).
- **Queue priorities are written lowest first.** An insert moves the queues below it down (SPEC §1), so
  the document's priorities are placed in ascending order: a queue placed earlier is never pushed by a
  later one, and one apply reaches the document's order. Queues the document does not rank may shift.
- **A pool's template and its stored deployments.** The pool is updated before its deployments (the
  plan's order), so a new template must accept the job variables its stored deployments have *now*;
  otherwise the plan is refused and the deployments are changed first, by an apply or the CLI.
- **Order.** All pools, then the queues pool by pool (ranked ones by ascending priority, then the rest in
  document order), then the deployments: each exists before anything that refers to it.
- **A key given twice** in one YAML mapping or JSON object is refused; parsers would keep the last silently.
- **A deployment cannot move to another pool**, as with `deployment create`; delete it first.
- **No partial writes on bad input**: everything is checked before the first write. The document's
  schema applies the models' own checks (names, limits and priorities within their bounds, description
  and tag lengths, JSON fields within 64 KB without NaN, infinities or recursive aliases), naming the key
  path; the plan then builds each pool, queue and deployment as it will be written, so no rule of the
  models is first met by `execute`, and it simulates each priority insert-and-shift, which may not push a
  queue beyond the last priority. `execute` is not one transaction (the Store has none across pools and
  deployments), so only a concurrent writer or a store failure can stop it part-way; applying the
  document again then finishes the job.
"""

from __future__ import annotations

import copy
import inspect
import json
import typing
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from . import jobs, json_input, prefect_yaml, templating
from .deployments import create_deployment, update_deployment
from .errors import InvalidInput, TemplateError
from .models import (
    DEFAULT_QUEUE,
    Deployment,
    WorkPool,
    WorkQueue,
    build,
    check_description,
    check_json_document,
    check_limit,
    check_name,
    check_priority,
    check_tags,
)
from .pool_types import check_type, default_template
from .pools import (
    DEFAULT_POOL_SETTING,
    create_pool,
    create_queue,
    default_pool_name,
    placed,
    update_pool,
    update_queue,
)
from .schedules import CronSchedule, IntervalSchedule, RRuleSchedule, Schedule, parse_schedule
from .store.base import Store

__all__ = [
    "Action",
    "ApplyPlan",
    "DeploymentSpec",
    "DocumentSpec",
    "PoolSpec",
    "QueueSpec",
    "apply",
    "execute",
    "load_document",
    "plan_apply",
]

Kind = Literal["create", "update", "unchanged"]
Target = Literal["work pool", "work queue", "deployment"]

# By class name, which pydantic reports as a ValidationError's title: to list a schedule's allowed keys.
_SCHEDULE_MODELS: dict[str, type[BaseModel]] = {m.__name__: m for m in (CronSchedule, IntervalSchedule, RRuleSchedule)}


# loading ---------------------------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML would keep the last silently)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` (prefect.yaml's habit): keys given beside it override the merged ones
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} appears twice in one mapping", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


class _DuplicateKey(ValueError):
    """A key given twice in one JSON object."""


def _unique_json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    counts = Counter(key for key, _ in pairs)
    twice = [key for key, n in counts.items() if n > 1]
    if twice:
        raise _DuplicateKey(f"the key {twice[0]!r} appears twice in one object")
    return dict(pairs)


def _unreadable(exc: ValueError) -> str:
    """A value the parser could not convert (Python refuses integers of more than 4,300 digits)."""
    if "integer string conversion" in str(exc):
        return "it holds an integer of thousands of digits, far beyond any allowed value; use a smaller number"
    return f"{str(exc).rstrip('.')}; fix that value"


def load_document(path: Path) -> dict[str, Any]:
    """Read an apply document: JSON for `.json`, YAML (a superset of JSON) for anything else.

    Raises InvalidInput naming the file (and the line, where the parser knows it) and what to fix.
    """
    return _load_mapping(path, "an apply document")


def _load_mapping(path: Path, what: str, *, quote: bool = True) -> dict[str, Any]:
    """A YAML or JSON file that must hold a mapping; InvalidInput names the file, the line and the problem.

    With `quote` False (a file a document points at, which may be any file on this machine), no error
    repeats anything of the file's text: a key, a token or a value. The place (line, column) is kept.
    """
    try:
        text = json_input.read_text(path)
    except FileNotFoundError:
        raise InvalidInput(f"{path} does not exist; check the path to {what}.") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text; save {what} as UTF-8 YAML or JSON.") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path} ({exc.strerror or exc}); check the path to {what}.") from None

    data: Any
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text, object_pairs_hook=_unique_json_object)
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                f"{path} is not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}); fix the syntax there."
            ) from None
        except _DuplicateKey as exc:
            raise InvalidInput(f"{path} is not valid: {exc if quote else 'a key appears twice'}; keep one.") from None
        except ValueError as exc:  # an integer of thousands of digits: Python refuses to convert it
            raise InvalidInput(
                f"{path} is not valid: {_unreadable(exc) if quote else 'a value cannot be read'}."
            ) from None
        except RecursionError:
            raise InvalidInput(f"{path} is nested too deeply to read; {what} needs far fewer levels.") from None
    else:
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
        except yaml.YAMLError as exc:
            raise InvalidInput(_yaml_sentence(path, exc, quote=quote)) from None
        except ValueError as exc:  # raised by a constructor, e.g. an integer of thousands of digits
            raise InvalidInput(
                f"{path} is not valid YAML: {_unreadable(exc) if quote else 'a value cannot be read'}."
            ) from None
        except RecursionError:
            raise InvalidInput(f"{path} is nested too deeply to read; {what} needs far fewer levels.") from None

    if data is None:
        raise InvalidInput(f"{path} is empty; {what} must be a mapping of keys to values.")
    if not isinstance(data, dict):
        raise InvalidInput(
            f"{path} holds {_kind_of(data)} at the top level; {what} must be a mapping of keys to values "
            "(for example `work_pools:` and `deployments:`)."
        )
    return data


def _yaml_sentence(path: Path, exc: yaml.YAMLError, *, quote: bool = True) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    # PyYAML's problem may quote the file ("found undefined alias 'x'"): left out for files we must not echo.
    detail = f" ({problem})" if quote else ""
    return f"{path} is not valid YAML{where}{detail}; fix the syntax there."


def _kind_of(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


# the document's schema ---------------------------------------------------------------------------------------
class _Spec(BaseModel):
    # Unknown keys are refused: a misspelt field silently ignored would leave the store unlike the file.
    model_config = ConfigDict(extra="forbid")


def _limit(value: int | None) -> int | None:
    return check_limit("concurrency_limit", value)


def _json_field(info: ValidationInfo, value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The models' rule for a JSON field (size, depth, no NaN or recursive alias), checked while parsing."""
    return None if value is None else check_json_document(str(info.field_name), value)


class QueueSpec(_Spec):
    """A work queue of a pool in the document."""

    name: str
    priority: StrictInt | None = None
    concurrency_limit: StrictInt | None = None
    description: str | None = None
    paused: StrictBool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name("work queue", value)

    @field_validator("priority")
    @classmethod
    def _priority(cls, value: int | None) -> int | None:
        return None if value is None else check_priority(value)

    @field_validator("concurrency_limit")
    @classmethod
    def _limit(cls, value: int | None) -> int | None:
        return _limit(value)

    @field_validator("description")
    @classmethod
    def _description(cls, value: str | None) -> str | None:
        return check_description(value)


class PoolSpec(_Spec):
    """A work pool in the document, with the queues it should have."""

    name: str
    type: str = "process"
    description: str | None = None
    paused: StrictBool | None = None
    concurrency_limit: StrictInt | None = None
    base_job_template: dict[str, Any] | None = None
    base_job_template_file: str | None = None
    job_variables: dict[str, Any] | None = None
    set_as_default: StrictBool = False
    queues: list[QueueSpec] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name("work pool", value, reserved_prefix=True)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        try:
            return check_type(value)
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None

    @field_validator("concurrency_limit")
    @classmethod
    def _limit(cls, value: int | None) -> int | None:
        return _limit(value)

    @field_validator("description")
    @classmethod
    def _description(cls, value: str | None) -> str | None:
        return check_description(value)

    @field_validator("base_job_template", "job_variables")
    @classmethod
    def _json(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        return _json_field(info, value)

    @field_validator("queues")
    @classmethod
    def _queues(cls, queues: list[QueueSpec]) -> list[QueueSpec]:
        _refuse_duplicates("work queue", (q.name for q in queues), "each queue name appears once per pool")
        holders: dict[int, str] = {}
        for queue in queues:
            if queue.priority is None:
                continue
            if queue.priority in holders:
                raise ValueError(
                    f"queues {holders[queue.priority]!r} and {queue.name!r} both have priority {queue.priority}; "
                    "priorities must be unique within a pool (1 is the highest)"
                )
            holders[queue.priority] = queue.name
        return queues

    @model_validator(mode="after")
    def _one_template(self) -> PoolSpec:
        if self.base_job_template is not None and self.base_job_template_file is not None:
            raise ValueError("give base_job_template or base_job_template_file, not both")
        return self


class DeploymentSpec(_Spec):
    """A deployment in the document; `schedules` are parsed by `plan_apply` (one of cron, interval, rrule)."""

    name: str
    pool: str
    queue: str | None = None
    job_variables: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None
    schedules: list[dict[str, Any]] | None = None
    schedule_paused: StrictBool | None = None
    concurrency_limit: StrictInt | None = None
    tags: list[str] | None = None
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name("deployment", value)

    @field_validator("concurrency_limit")
    @classmethod
    def _limit(cls, value: int | None) -> int | None:
        return _limit(value)

    @field_validator("description")
    @classmethod
    def _description(cls, value: str | None) -> str | None:
        return check_description(value)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_tags(value)

    @field_validator("job_variables", "parameters")
    @classmethod
    def _json(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        return _json_field(info, value)


class DocumentSpec(_Spec):
    """The whole apply document."""

    work_pools: list[PoolSpec] = Field(default_factory=list)
    deployments: list[DeploymentSpec] = Field(default_factory=list)

    @field_validator("work_pools")
    @classmethod
    def _pools(cls, pools: list[PoolSpec]) -> list[PoolSpec]:
        _refuse_duplicates("work pool", (p.name for p in pools), "each pool appears once")
        defaults = [p.name for p in pools if p.set_as_default]
        if len(defaults) > 1:
            raise ValueError(
                f"pools {', '.join(repr(n) for n in defaults)} all have set_as_default: true; "
                "only one pool can be the default"
            )
        return pools

    @field_validator("deployments")
    @classmethod
    def _deployments(cls, deployments: list[DeploymentSpec]) -> list[DeploymentSpec]:
        _refuse_duplicates("deployment", (d.name for d in deployments), "each deployment appears once")
        return deployments


def _refuse_duplicates(kind: str, names: Iterable[str], rule: str) -> None:
    counts = Counter(names)
    twice = [name for name, n in counts.items() if n > 1]
    if twice:
        raise ValueError(f"{kind} {twice[0]!r} is listed {counts[twice[0]]} times; {rule}")


def _path(loc: Sequence[int | str], start: str = "") -> str:
    """`work_pools[0].queues[1].priorty` from pydantic's location tuple."""
    text = start
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The spec model whose keys live at `loc`, to list the allowed keys next to an unknown one."""
    model = root
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        inner = _inner_model(info.annotation) if info is not None else None
        if inner is None:
            return None
        model = inner
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _schema_error(exc: ValidationError, root: type[BaseModel], start: str = "") -> InvalidInput:
    """Pydantic's first complaint as one sentence that names the key path and the fix."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    where = _path(loc, start) or "the document"
    message = str(err["msg"]).removeprefix("Value error, ").rstrip(".")
    if err["type"] == "value_error":
        text = message
    elif err["type"] == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        allowed = f"; the allowed keys are {', '.join(model.model_fields)}" if model is not None else ""
        text = f"extra inputs are not permitted{allowed}"
    elif err["type"] == "missing":
        text = "field required; add it"
    else:
        text = f"{message[:1].lower()}{message[1:]}, got {_short(err.get('input'))}"
    return InvalidInput(f"{where}: {text}.")


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, default=str, separators=(", ", ": "), ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def _parse_document(document: Mapping[str, Any]) -> DocumentSpec:
    if not isinstance(document, Mapping):
        raise InvalidInput(
            f"an apply document must be a mapping with work_pools and deployments, not {_kind_of(document)}."
        )
    try:
        return DocumentSpec.model_validate(dict(document))
    except ValidationError as exc:
        raise _schema_error(exc, DocumentSpec) from None


def _parse_schedules(where: str, raw: list[dict[str, Any]]) -> list[Schedule]:
    """The document's schedules as models, through schedules.parse_schedule (its rules, our key paths)."""
    schedules: list[Schedule] = []
    for index, item in enumerate(raw):
        at = f"{where}[{index}]"
        try:
            schedules.append(parse_schedule(item))
        except ValidationError as exc:
            # Before ValueError, which it subclasses: pydantic's report names the key inside the schedule.
            raise _schema_error(exc, _SCHEDULE_MODELS.get(exc.title, CronSchedule), at) from None
        except ValueError as exc:
            raise InvalidInput(f"{at}: {str(exc).rstrip('.')}.") from None
    return schedules


# the plan ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Action:
    """One step of a plan: what happens to which object, the fields that change, and how to do it.

    `changes` maps a field to (old, new): only fields the document sets and that differ; for a create,
    old is None. `operation` and `arguments` are the pools/deployments call `execute` makes ("" = no call).
    """

    kind: Kind
    target: Target
    name: str
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict, hash=False)
    operation: str = ""
    arguments: dict[str, Any] = field(default_factory=dict, hash=False, repr=False)

    def __str__(self) -> str:
        return f"{self.kind} {self.target} {self.name!r}"

    def lines(self) -> list[str]:
        """The action for people: a `+`/`~`/` ` line, then one indented line per changed field."""
        sign = {"create": "+", "update": "~", "unchanged": " "}[self.kind]
        out = [f"{sign} {self}"]
        for key, (old, new) in self.changes.items():
            value = _short(new) if self.kind == "create" else f"{_short(old)} -> {_short(new)}"
            out.append(f"    {key}: {value}")
        return out


@dataclass(frozen=True)
class ApplyPlan:
    """The actions that bring the store to the document, in the order `execute` performs them."""

    actions: list[Action]
    notes: list[str] = field(default_factory=list)
    """What the document holds that is not applied, each with why (a prefect.yaml's build steps, ...)."""

    def count(self, kind: Kind) -> int:
        return sum(1 for action in self.actions if action.kind == kind)

    @property
    def has_changes(self) -> bool:
        return any(action.kind != "unchanged" for action in self.actions)

    def summary(self) -> str:
        """E.g. "2 to create, 1 to update, 3 unchanged"."""
        created, updated, unchanged = self.count("create"), self.count("update"), self.count("unchanged")
        return f"{created} to create, {updated} to update, {unchanged} unchanged"

    def lines(self) -> list[str]:
        """The whole plan for the terminal, ending with the summary."""
        return [line for action in self.actions for line in action.lines()] + [self.summary()]

    def as_dicts(self) -> list[dict[str, Any]]:
        """The actions as JSON-ready dicts (for `-o json`)."""
        return [
            {
                "kind": a.kind,
                "target": a.target,
                "name": a.name,
                "changes": {k: {"old": old, "new": new} for k, (old, new) in a.changes.items()},
            }
            for a in self.actions
        ]


@dataclass
class _Pool:
    """What planning needs to know about a pool the document or the store has, as it will be."""

    template: dict[str, Any]
    queues: set[str]
    stored: WorkPool | None


def plan_apply(store: Store, document: Mapping[str, Any], base_dir: Path) -> ApplyPlan:
    """Validate the whole document, then compare it with the store; nothing is written.

    `base_dir` is where `base_job_template_file` paths are relative to (the document's folder).
    Raises InvalidInput (or TemplateError) naming the key path of the first problem.
    """
    spec = _parse_document(document)
    pools: dict[str, _Pool] = {}
    pool_actions: list[Action] = []
    queue_actions: list[Action] = []
    current_default = default_pool_name(store)
    for index, pool_spec in enumerate(spec.work_pools):
        where = f"work_pools[{index}]"
        action, pool = _plan_pool(store, pool_spec, where, base_dir, current_default)
        pools[pool_spec.name] = pool
        pool_actions.append(action)
        queue_actions.extend(_plan_queues(store, pool_spec, where, pool))
    deployment_actions = [
        _plan_deployment(store, dep_spec, f"deployments[{index}]", pools)
        for index, dep_spec in enumerate(spec.deployments)
    ]
    return ApplyPlan(actions=[*pool_actions, *queue_actions, *deployment_actions])


def _plan_pool(
    store: Store, spec: PoolSpec, where: str, base_dir: Path, current_default: str | None
) -> tuple[Action, _Pool]:
    stored = store.get_pool(spec.name)
    if stored is not None and "type" in spec.model_fields_set and spec.type != stored.type:
        raise InvalidInput(
            f"{where}.type: pool {spec.name!r} is of type {stored.type!r} and a pool's type cannot change to "
            f"{spec.type!r}; remove type, or delete the pool and apply again."
        )

    given, template_key = _given_template(spec, where, base_dir)
    if given is not None:
        try:
            check_json_document("base_job_template", given)
        except ValueError as exc:
            raise InvalidInput(f"{where}.{template_key}: {exc}.") from None
        template = given
    elif stored is not None:
        template = stored.base_job_template
    else:
        template = default_template(spec.type)
    job_variables = spec.job_variables if spec.job_variables is not None else (stored.job_variables if stored else {})
    if given is not None or spec.job_variables is not None:
        # The same pair of checks create_pool/update_pool make, done now so no write precedes a failure.
        try:
            templating.validate_template(template)
        except TemplateError as exc:
            raise TemplateError(f"{where}.{template_key}: {exc}") from None
        templating.validate_job_variables(
            template, job_variables, field=f"{where}.job_variables", enforce_required=False
        )
        try:
            # Its job rendered through the pool type's provider, as create_pool/update_pool will do.
            jobs.check_template(stored.type if stored is not None else spec.type, template, job_variables)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}.{template_key}: {exc}") from None

    wanted: dict[str, Any] = {}
    if spec.description is not None:
        wanted["description"] = spec.description
    if spec.paused is not None:
        wanted["paused"] = spec.paused
    if "concurrency_limit" in spec.model_fields_set:
        wanted["concurrency_limit"] = spec.concurrency_limit
    if given is not None:
        wanted["base_job_template"] = given
    if spec.job_variables is not None:
        wanted["job_variables"] = spec.job_variables

    if stored is None:
        _as_written(where, WorkPool, **{"name": spec.name, "type": spec.type, "base_job_template": template, **wanted})
        changes: dict[str, tuple[Any, Any]] = {"type": (None, spec.type), **{k: (None, v) for k, v in wanted.items()}}
        arguments = {"name": spec.name, "type": spec.type, **wanted}
        if spec.set_as_default:
            changes["set_as_default"] = (None, True)
            arguments["set_as_default"] = True
        action = Action("create", "work pool", spec.name, changes, "create_pool", copy.deepcopy(arguments))
        return action, _Pool(template, {DEFAULT_QUEUE}, None)

    if given is not None and given != stored.base_job_template:
        _check_stored_deployments_fit(store, spec.name, template, where, template_key)
    _as_written(where, WorkPool, **{**stored.model_dump(exclude={"status"}), **wanted})
    changes = {k: (getattr(stored, k), v) for k, v in wanted.items() if getattr(stored, k) != v}
    arguments = {k: new for k, (_, new) in changes.items()}
    if spec.set_as_default and current_default != spec.name:
        changes["set_as_default"] = (False, True)
        arguments["set_as_default"] = True
    queues = {q.name for q in store.list_queues(spec.name)}
    pool = _Pool(template, queues, stored)
    if not changes:
        return Action("unchanged", "work pool", spec.name), pool
    arguments["name"] = spec.name
    return Action("update", "work pool", spec.name, changes, "update_pool", copy.deepcopy(arguments)), pool


def _given_template(spec: PoolSpec, where: str, base_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """The template the document gives (inline or from its file) and the key that gave it."""
    if spec.base_job_template_file is not None:
        path = base_dir / spec.base_job_template_file
        try:
            # Any path on this machine may be named here (/etc/shadow): no error may show what the file holds.
            template = _load_mapping(path, "a base job template", quote=False)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}.base_job_template_file: {exc}") from None
        if set(template) != {"job_configuration", "variables"}:
            raise InvalidInput(
                f"{where}.base_job_template_file: {path} is not a base job template: it must be a mapping with "
                "exactly the keys job_configuration and variables (its contents are not shown)."
            )
        return template, "base_job_template_file"
    return spec.base_job_template, "base_job_template"


def _check_stored_deployments_fit(
    store: Store, pool: str, template: dict[str, Any], where: str, template_key: str
) -> None:
    """update_pool refuses a template that strands a stored deployment; refuse it here, before any write."""
    for deployment in store.list_deployments(pool):
        try:
            templating.validate_job_variables(
                template, deployment.job_variables, field="job_variables", enforce_required=False
            )
        except InvalidInput as exc:
            raise TemplateError(
                f"{where}.{template_key}: the new template rejects the stored deployment {deployment.name!r} "
                f"({str(exc).rstrip('.')}); change that deployment's job_variables first, then apply the template."
            ) from None


def _plan_queues(store: Store, spec: PoolSpec, where: str, pool: _Pool) -> list[Action]:
    stored = {q.name: q for q in store.list_queues(spec.name)} if pool.stored is not None else {}
    # Priorities as they will be after each write, simulated with the same rule update/create_queue use.
    current = {name: q.priority for name, q in stored.items()} if pool.stored is not None else {DEFAULT_QUEUE: 1}
    ranked = sorted((q for q in spec.queues if q.priority is not None), key=lambda q: q.priority or 0)
    unranked = [q for q in spec.queues if q.priority is None]
    at = {q.name: f"{where}.queues[{index}]" for index, q in enumerate(spec.queues)}
    written: set[str] = set()
    for queue in ranked:
        if current.get(queue.name) != queue.priority:
            current.update(_placed(at[queue.name], current, queue.name, queue.priority))
            written.add(queue.name)
    for queue in unranked:
        if queue.name not in current:
            # create_queue without a priority puts the queue last, which moves no other queue.
            current.update(_placed(at[queue.name], current, queue.name, None))
    actions = [
        _queue_action(
            at[queue.name], spec.name, queue, stored.get(queue.name), pool.stored is None, queue.name in written
        )
        for queue in [*ranked, *unranked]
    ]
    pool.queues.update(q.name for q in spec.queues)
    return actions


def _placed(where: str, current: dict[str, int], name: str, priority: int | None) -> dict[str, int]:
    """pools.placed (the insert-and-shift create_queue/update_queue make), its refusal named by key path."""
    try:
        return placed(current, name, priority)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}.priority: {exc}") from None


def _as_written(where: str, model: type[BaseModel], **fields: Any) -> None:
    """Build the object as the plan will write it, so every rule of the model is met before the first write.

    The spec models already apply the same checks with precise key paths; this is the guarantee that no
    rule of the models (a later one included) is first met half-way through `execute`.
    """
    try:
        build(model, **fields)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc}") from None


def _queue_action(
    where: str, pool: str, spec: QueueSpec, stored: WorkQueue | None, new_pool: bool, write_priority: bool
) -> Action:
    name = f"{pool}/{spec.name}"
    wanted: dict[str, Any] = {}
    if spec.priority is not None:
        wanted["priority"] = spec.priority
    if "concurrency_limit" in spec.model_fields_set:
        wanted["concurrency_limit"] = spec.concurrency_limit
    if spec.description is not None:
        wanted["description"] = spec.description
    if spec.paused is not None:
        wanted["paused"] = spec.paused
    target: Target = "work queue"
    if stored is None:
        _as_written(where, WorkQueue, pool=pool, name=spec.name, **{"priority": 1, **wanted})
    else:
        _as_written(where, WorkQueue, **{**stored.model_dump(exclude={"status"}), **wanted})

    if stored is None and not (new_pool and spec.name == DEFAULT_QUEUE):
        arguments = {"pool": pool, "name": spec.name, **wanted}
        return Action("create", target, name, {k: (None, v) for k, v in wanted.items()}, "create_queue", arguments)

    if stored is None:
        # The default queue of a pool this plan creates: create_pool makes it (priority 1, no limit, running),
        # so only what differs from that is written afterwards.
        created = WorkQueue(pool=pool, name=DEFAULT_QUEUE, priority=1)
        differs = {k: v for k, v in wanted.items() if getattr(created, k) != v or (k == "priority" and write_priority)}
        shown = {k: (None, v) for k, v in wanted.items()}
        if not differs:
            return Action("create", target, name, shown)
        return Action("create", target, name, shown, "update_queue", {"pool": pool, "name": spec.name, **differs})

    changes: dict[str, tuple[Any, Any]] = {
        k: (getattr(stored, k), v) for k, v in wanted.items() if getattr(stored, k) != v
    }
    if write_priority and spec.priority is not None:
        # An insert ranked above this queue pushes it down first, so it is written back even when its
        # stored priority already equals the document's; the plan shows that write as old -> new.
        changes.setdefault("priority", (stored.priority, spec.priority))
    if not changes:
        return Action("unchanged", target, name)
    arguments = {"pool": pool, "name": spec.name, **{k: new for k, (_, new) in changes.items()}}
    return Action("update", target, name, changes, "update_queue", arguments)


def _plan_deployment(store: Store, spec: DeploymentSpec, where: str, pools: dict[str, _Pool]) -> Action:
    stored = store.get_deployment(spec.name)
    if stored is not None and stored.pool != spec.pool:
        raise InvalidInput(
            f"{where}.pool: deployment {spec.name!r} is on pool {stored.pool!r} and cannot move to {spec.pool!r}; "
            "set pool back, or delete the deployment and apply again."
        )
    pool = pools.get(spec.pool)
    if pool is None:
        stored_pool = store.get_pool(spec.pool)
        if stored_pool is None:
            raise InvalidInput(
                f"{where}.pool: work pool {spec.pool!r} is neither in the document nor in the store; "
                "add it under work_pools or fix the name."
            )
        pool = _Pool(stored_pool.base_job_template, {q.name for q in store.list_queues(spec.pool)}, stored_pool)
        pools[spec.pool] = pool
    if spec.queue is not None and spec.queue not in pool.queues:
        raise InvalidInput(
            f"{where}.queue: work queue {spec.queue!r} is neither in the document's pool {spec.pool!r} nor in the "
            f"store; its queues are: {', '.join(sorted(pool.queues))}."
        )
    if spec.job_variables is not None:
        templating.validate_job_variables(
            pool.template, spec.job_variables, field=f"{where}.job_variables", enforce_required=False
        )
    schedules = _parse_schedules(f"{where}.schedules", spec.schedules) if spec.schedules is not None else None

    # Values as the store holds them, for comparing; schedules compare (and show) as their JSON form.
    wanted: dict[str, Any] = {}
    for key in ("queue", "job_variables", "parameters", "schedule_paused", "tags", "description"):
        value = getattr(spec, key)
        if value is not None:
            wanted[key] = value
    if schedules is not None:
        wanted["schedules"] = [s.model_dump(mode="json") for s in schedules]
    if "concurrency_limit" in spec.model_fields_set:
        wanted["concurrency_limit"] = spec.concurrency_limit

    def call_value(key: str, value: Any) -> Any:
        return schedules if key == "schedules" else value

    as_called = {k: call_value(k, v) for k, v in wanted.items()}
    if stored is None:
        _as_written(where, Deployment, name=spec.name, pool=spec.pool, **as_called)
    else:
        _as_written(where, Deployment, **{**stored.model_dump(), **as_called})

    if stored is None:
        wanted.setdefault("queue", DEFAULT_QUEUE)
        changes = {"pool": (None, spec.pool), **{k: (None, v) for k, v in wanted.items()}}
        arguments = {"name": spec.name, "pool": spec.pool, **{k: call_value(k, v) for k, v in wanted.items()}}
        return Action("create", "deployment", spec.name, changes, "create_deployment", copy.deepcopy(arguments))

    changes = {k: (_stored_value(stored, k), v) for k, v in wanted.items() if _stored_value(stored, k) != v}
    if not changes:
        return Action("unchanged", "deployment", spec.name)
    arguments = {"name": spec.name, **{k: call_value(k, new) for k, (_, new) in changes.items()}}
    return Action("update", "deployment", spec.name, changes, "update_deployment", copy.deepcopy(arguments))


def _stored_value(deployment: Deployment, key: str) -> Any:
    if key == "schedules":
        return [s.model_dump(mode="json") for s in deployment.schedules]
    return getattr(deployment, key)


# executing ---------------------------------------------------------------------------------------------------
def execute(store: Store, plan: ApplyPlan) -> None:
    """Perform the plan's create and update actions in order, through the pools/deployments functions."""
    for action in plan.actions:
        if action.kind == "unchanged" or not action.operation:
            continue
        # A copy, so a plan can be executed (or inspected) again unchanged.
        arguments = copy.deepcopy(action.arguments)
        if action.operation == "create_pool":
            create_pool(store, **arguments)
        elif action.operation == "update_pool":
            set_default = arguments.pop("set_as_default", False)
            if len(arguments) > 1:
                update_pool(store, **arguments)
            if set_default:
                # update_pool has no set_as_default; this is the setting create_pool(set_as_default=True) writes.
                store.put_setting(DEFAULT_POOL_SETTING, arguments["name"])
        elif action.operation == "create_queue":
            create_queue(store, **arguments)
        elif action.operation == "update_queue":
            update_queue(store, **arguments)
        elif action.operation == "create_deployment":
            # create_deployment takes no schedule_paused, so a paused schedule is set right after.
            paused = arguments.pop("schedule_paused", False)
            create_deployment(store, **arguments)
            if paused:
                update_deployment(store, arguments["name"], schedule_paused=True)
        elif action.operation == "update_deployment":
            update_deployment(store, **arguments)
        else:  # pragma: no cover - plans are built by plan_apply only
            raise ValueError(f"unknown apply operation {action.operation!r}")


def apply(store: Store, path: Path, *, dry_run: bool) -> ApplyPlan:
    """Load the document at `path`, plan it against the store and, unless `dry_run`, execute the plan.

    A prefect.yaml (recognised by its shape) is converted first by `prefect_yaml`; the plan's notes then
    say what of it is not applied.
    """
    document = load_document(path)
    if prefect_yaml.is_prefect_yaml(document):
        try:
            converted, notes = prefect_yaml.to_apply_document(document)
            plan = replace(plan_apply(store, converted, path.parent), notes=notes)
        except InvalidInput as exc:
            raise type(exc)(f"{path}: {prefect_yaml.prefect_words(str(exc))}") from None
    else:
        try:
            plan = plan_apply(store, document, path.parent)
        except InvalidInput as exc:
            # Same class (TemplateError stays TemplateError), with the file in front: "prod.yaml: work_pools[0]…".
            raise type(exc)(f"{path}: {exc}") from None
    if not dry_run:
        execute(store, plan)
    return plan

"""Tests for dispatcher.apply (SPEC §7 `apply FILE [--dry-run]`): plan, execute, dry-run, and bad input."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import pools
from dispatcher.apply import Action, ApplyPlan, apply, execute, load_document, plan_apply
from dispatcher.deployments import create_deployment
from dispatcher.errors import InvalidInput, TemplateError
from dispatcher.schedules import CronSchedule, IntervalSchedule, RRuleSchedule
from dispatcher.store.sqlite import SQLiteStore

FULL = """
work_pools:
  - name: prod
    description: production jobs
    concurrency_limit: 5
    job_variables: {env: {STAGE: prod}}
    set_as_default: true
    queues:
      - {name: low, priority: 3, description: batch}
      - {name: critical, priority: 1, concurrency_limit: 1}
      - {name: default, priority: 2}
  - name: dev
    type: process
    paused: true
deployments:
  - name: etl
    pool: prod
    queue: critical
    job_variables: {command: "python etl.py", env: {LOG: debug}}
    parameters: {day: yesterday}
    schedules:
      - {cron: "0 * * * *", timezone: Europe/Berlin}
      - {interval: 300}
      - {rrule: "FREQ=DAILY"}
    concurrency_limit: 2
    tags: [nightly, etl]
    description: the ETL
  - name: report
    pool: dev
    schedule_paused: true
    schedules: [{interval: 60}]
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "s.db"))
    yield s
    s.close()


def write(tmp_path: Path, text: str, name: str = "pushpool.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def snapshot(store: SQLiteStore) -> dict[str, Any]:
    """Everything apply can write, so a test can show that nothing changed."""
    pool_list = store.list_pools()
    return {
        "pools": [p.model_dump(exclude={"status"}) for p in pool_list],
        "queues": {p.name: [q.model_dump(exclude={"status"}) for q in store.list_queues(p.name)] for p in pool_list},
        "deployments": [d.model_dump() for d in store.list_deployments()],
        "default_pool": store.get_setting(pools.DEFAULT_POOL_SETTING),
    }


def kinds(plan: ApplyPlan) -> list[tuple[str, str, str]]:
    return [(a.kind, a.target, a.name) for a in plan.actions]


def priorities(store: SQLiteStore, pool: str) -> dict[str, int]:
    return {q.name: q.priority for q in store.list_queues(pool)}


# creating ----------------------------------------------------------------------------------------------------
def test_apply_creates_pools_queues_and_deployments_from_empty(store: SQLiteStore, tmp_path: Path) -> None:
    plan = apply(store, write(tmp_path, FULL), dry_run=False)

    assert kinds(plan) == [
        ("create", "work pool", "prod"),
        ("create", "work pool", "dev"),
        ("create", "work queue", "prod/critical"),
        ("create", "work queue", "prod/default"),
        ("create", "work queue", "prod/low"),
        ("create", "deployment", "etl"),
        ("create", "deployment", "report"),
    ]
    assert plan.summary() == "7 to create, 0 to update, 0 unchanged"

    prod = store.get_pool("prod")
    assert prod is not None
    assert (prod.type, prod.description) == ("process", "production jobs")
    assert (prod.concurrency_limit, prod.paused) == (5, False)
    assert prod.job_variables == {"env": {"STAGE": "prod"}}
    dev = store.get_pool("dev")
    assert dev is not None and dev.paused is True and dev.concurrency_limit is None
    assert store.get_setting(pools.DEFAULT_POOL_SETTING) == "prod"

    assert priorities(store, "prod") == {"critical": 1, "default": 2, "low": 3}
    assert priorities(store, "dev") == {"default": 1}
    critical = store.get_queue("prod", "critical")
    low = store.get_queue("prod", "low")
    assert critical is not None and critical.concurrency_limit == 1
    assert low is not None and low.description == "batch"

    etl = store.get_deployment("etl")
    assert etl is not None
    assert (etl.pool, etl.queue, etl.concurrency_limit, etl.description) == ("prod", "critical", 2, "the ETL")
    assert etl.job_variables == {"command": "python etl.py", "env": {"LOG": "debug"}}
    assert etl.parameters == {"day": "yesterday"}
    assert etl.tags == ["nightly", "etl"]
    assert etl.schedules == [
        CronSchedule(cron="0 * * * *", timezone="Europe/Berlin"),
        IntervalSchedule(interval=300),
        RRuleSchedule(rrule="FREQ=DAILY"),
    ]
    assert etl.schedule_paused is False
    report = store.get_deployment("report")
    assert report is not None
    assert (report.queue, report.schedule_paused) == ("default", True)
    assert report.schedules == [IntervalSchedule(interval=60)]


def test_create_plan_shows_new_values(store: SQLiteStore, tmp_path: Path) -> None:
    plan = apply(store, write(tmp_path, FULL), dry_run=True)
    by_name = {a.name: a for a in plan.actions}
    assert by_name["prod"].changes["concurrency_limit"] == (None, 5)
    assert by_name["prod"].changes["type"] == (None, "process")
    assert by_name["prod/critical"].changes == {"priority": (None, 1), "concurrency_limit": (None, 1)}
    assert by_name["etl"].changes["queue"] == (None, "critical")
    assert by_name["report"].changes["queue"] == (None, "default")
    assert plan.as_dicts()[0]["changes"]["concurrency_limit"] == {"old": None, "new": 5}
    rendered = "\n".join(plan.lines())
    assert "+ create work queue 'prod/critical'" in rendered
    assert rendered.endswith("7 to create, 0 to update, 0 unchanged")


def test_dry_run_writes_nothing_and_returns_the_same_plan(store: SQLiteStore, tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    before = snapshot(store)
    dry = apply(store, path, dry_run=True)
    assert snapshot(store) == before
    assert store.list_pools() == []
    assert dry.count("create") == 7

    real = apply(store, path, dry_run=False)
    assert real == dry
    assert store.get_deployment("etl") is not None


def test_second_apply_is_all_unchanged_and_writes_nothing(store: SQLiteStore, tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    apply(store, path, dry_run=False)
    before = snapshot(store)

    again = apply(store, path, dry_run=False)

    assert {a.kind for a in again.actions} == {"unchanged"}
    assert all(a.changes == {} for a in again.actions)
    assert again.summary() == "0 to create, 0 to update, 7 unchanged"
    assert not again.has_changes
    # Timestamps included: no write happened at all.
    assert snapshot(store) == before


def test_execute_of_an_unchanged_plan_writes_nothing(store: SQLiteStore, tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    apply(store, path, dry_run=False)
    before = snapshot(store)
    execute(store, plan_apply(store, load_document(path), tmp_path))
    assert snapshot(store) == before


# updating ----------------------------------------------------------------------------------------------------
def test_update_changes_only_the_given_fields_and_shows_old_and_new(store: SQLiteStore, tmp_path: Path) -> None:
    apply(store, write(tmp_path, FULL), dry_run=False)
    # Changed outside the document: a field the document never sets must survive the next apply.
    pools.update_queue(store, "prod", "low", paused=True)
    etl_before = store.get_deployment("etl")
    assert etl_before is not None

    changed = FULL.replace("concurrency_limit: 5", "concurrency_limit: null").replace(
        "tags: [nightly, etl]", "tags: [nightly]"
    )
    changed = changed.replace("{name: low, priority: 3, description: batch}", "{name: low, priority: 3}")
    plan = apply(store, write(tmp_path, changed), dry_run=False)

    by_name = {a.name: a for a in plan.actions}
    assert by_name["prod"].kind == "update"
    assert by_name["prod"].changes == {"concurrency_limit": (5, None)}
    assert by_name["etl"].kind == "update"
    assert by_name["etl"].changes == {"tags": (["nightly", "etl"], ["nightly"])}
    assert by_name["prod/low"].kind == "unchanged"  # description omitted now: left as it is
    assert plan.summary() == "0 to create, 2 to update, 5 unchanged"
    assert "    concurrency_limit: 5 -> null" in plan.lines()

    prod = store.get_pool("prod")
    assert prod is not None and prod.concurrency_limit is None
    assert prod.description == "production jobs"
    low = store.get_queue("prod", "low")
    assert low is not None and low.description == "batch" and low.paused is True
    etl = store.get_deployment("etl")
    assert etl is not None
    assert etl.tags == ["nightly"]
    assert etl.id == etl_before.id
    assert (etl.job_variables, etl.schedules, etl.parameters) == (
        etl_before.job_variables,
        etl_before.schedules,
        etl_before.parameters,
    )


def test_update_of_existing_objects_made_with_the_cli(store: SQLiteStore, tmp_path: Path) -> None:
    pools.create_pool(store, "prod", description="old")
    pools.create_queue(store, "prod", "bulk", priority=2)
    create_deployment(store, "etl", pool="prod", job_variables={"command": "a"})
    doc = """
    work_pools:
      - name: prod
        description: new
        queues:
          - {name: bulk, priority: 1}
    deployments:
      - name: etl
        pool: prod
        queue: bulk
        schedules: [{cron: "*/5 * * * *"}]
    """
    plan = apply(store, write(tmp_path, doc), dry_run=False)

    by_name = {a.name: a for a in plan.actions}
    assert by_name["prod"].changes == {"description": ("old", "new")}
    assert by_name["prod/bulk"].changes == {"priority": (2, 1)}
    assert by_name["etl"].changes == {
        "queue": ("default", "bulk"),
        "schedules": ([], [{"cron": "*/5 * * * *", "timezone": "UTC"}]),
    }
    # bulk took priority 1, so default moved down by one (the insert-and-shift rule of pools.update_queue).
    assert priorities(store, "prod") == {"bulk": 1, "default": 2}
    etl = store.get_deployment("etl")
    assert etl is not None
    assert etl.queue == "bulk" and etl.job_variables == {"command": "a"}
    assert etl.schedules == [CronSchedule(cron="*/5 * * * *")]
    assert {a.kind for a in apply(store, write(tmp_path, doc), dry_run=False).actions} == {"unchanged"}


def test_priorities_reach_the_document_order_in_one_apply(store: SQLiteStore, tmp_path: Path) -> None:
    pools.create_pool(store, "p")
    for name, priority in [("z", 2), ("x", 3), ("y", 5)]:
        pools.create_queue(store, "p", name, priority=priority)
    doc = """
    work_pools:
      - name: p
        queues:
          - {name: x, priority: 3}
          - {name: y, priority: 2}
    """
    plan = apply(store, write(tmp_path, doc), dry_run=False)

    # y inserted at 2 pushes z to 3 and x to 4; x is then put back at 3, which pushes z to 4.
    assert priorities(store, "p") == {"default": 1, "y": 2, "x": 3, "z": 4}
    assert {a.name: a.kind for a in plan.actions} == {"p": "unchanged", "p/y": "update", "p/x": "update"}
    assert {a.kind for a in apply(store, write(tmp_path, doc), dry_run=False).actions} == {"unchanged"}


def test_default_queue_can_be_reconfigured_in_an_existing_pool(store: SQLiteStore, tmp_path: Path) -> None:
    pools.create_pool(store, "p")
    doc = """
    work_pools:
      - name: p
        queues: [{name: default, concurrency_limit: 3, paused: true}]
    """
    plan = apply(store, write(tmp_path, doc), dry_run=False)
    assert kinds(plan) == [("unchanged", "work pool", "p"), ("update", "work queue", "p/default")]
    assert plan.actions[1].changes == {"concurrency_limit": (None, 3), "paused": (False, True)}
    default = store.get_queue("p", "default")
    assert default is not None and (default.concurrency_limit, default.paused, default.priority) == (3, True, 1)


def test_set_as_default_on_an_existing_pool(store: SQLiteStore, tmp_path: Path) -> None:
    pools.create_pool(store, "a", set_as_default=True)
    pools.create_pool(store, "b")
    doc = "work_pools:\n  - {name: b, set_as_default: true}\n"
    plan = apply(store, write(tmp_path, doc), dry_run=False)
    assert plan.actions[0].changes == {"set_as_default": (False, True)}
    assert store.get_setting(pools.DEFAULT_POOL_SETTING) == "b"
    assert apply(store, write(tmp_path, doc), dry_run=False).actions[0].kind == "unchanged"


def test_deployment_on_a_pool_and_queue_that_only_the_store_has(store: SQLiteStore, tmp_path: Path) -> None:
    pools.create_pool(store, "shared")
    pools.create_queue(store, "shared", "fast")
    doc = "deployments:\n  - {name: d, pool: shared, queue: fast, job_variables: {stream_output: false}}\n"
    plan = apply(store, write(tmp_path, doc), dry_run=False)
    assert kinds(plan) == [("create", "deployment", "d")]
    d = store.get_deployment("d")
    assert d is not None and (d.pool, d.queue, d.job_variables) == ("shared", "fast", {"stream_output": False})


def test_template_file_is_relative_to_the_document(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = {
        "job_configuration": {"command": "{{ command }}", "labels": {"image": "{{ image }}"}},
        "variables": {"type": "object", "properties": {"command": {"type": "string"}, "image": {"type": "string"}}},
    }
    (tmp_path / "conf" / "templates").mkdir(parents=True)
    (tmp_path / "conf" / "templates" / "tpl.json").write_text(json.dumps(template))
    doc = """
    work_pools:
      - {name: p, base_job_template_file: templates/tpl.json}
    deployments:
      - {name: d, pool: p, job_variables: {image: "python:3.11"}}
    """
    path = write(tmp_path, doc, "conf/pushpool.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    plan = apply(store, path, dry_run=False)

    pool = store.get_pool("p")
    assert pool is not None and pool.base_job_template == template
    d = store.get_deployment("d")
    assert d is not None and d.job_variables == {"image": "python:3.11"}
    assert plan.actions[0].changes["base_job_template"] == (None, template)
    assert {a.kind for a in apply(store, path, dry_run=False).actions} == {"unchanged"}


def test_new_template_is_checked_against_deployments_of_the_document(store: SQLiteStore, tmp_path: Path) -> None:
    """A deployment's job variables are checked against the template the document gives its pool."""
    template = {
        "job_configuration": {"command": "python -m flow", "labels": {"image": "{{ image }}"}},
        "variables": {"type": "object", "properties": {"image": {"type": "string"}}},
    }
    doc = {
        "work_pools": [{"name": "p", "base_job_template": template}],
        "deployments": [{"name": "d", "pool": "p", "job_variables": {"command": "x"}}],
    }
    with pytest.raises(TemplateError, match=r"deployments\[0\]\.job_variables: 'command' is not a variable"):
        plan_apply(store, doc, tmp_path)


def test_json_document(store: SQLiteStore, tmp_path: Path) -> None:
    doc = {"work_pools": [{"name": "j", "concurrency_limit": 0}]}
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    assert load_document(path) == doc
    apply(store, path, dry_run=False)
    pool = store.get_pool("j")
    assert pool is not None and pool.concurrency_limit == 0


def test_empty_mapping_is_an_empty_plan(store: SQLiteStore, tmp_path: Path) -> None:
    plan = apply(store, write(tmp_path, "{}\n"), dry_run=False)
    assert plan.actions == [] and plan.summary() == "0 to create, 0 to update, 0 unchanged"


def test_action_is_frozen() -> None:
    action = Action("unchanged", "work pool", "p")
    with pytest.raises(AttributeError):
        action.kind = "create"  # type: ignore[misc]
    assert str(action) == "unchanged work pool 'p'"


# bad input: an error naming the field, and the store exactly as before ----------------------------------------
@pytest.fixture
def seeded(store: SQLiteStore) -> SQLiteStore:
    """A store with one pool, queue and deployment, so "unchanged" is checked against real data."""
    pools.create_pool(store, "existing", concurrency_limit=3)
    pools.create_queue(store, "existing", "q", priority=2)
    create_deployment(store, "old", pool="existing", job_variables={"command": "run"})
    return store


VALID_POOL = "  - {name: fresh, concurrency_limit: 1, queues: [{name: a, priority: 2}]}\n"
VALID_DEPLOYMENT = "  - {name: good, pool: existing}\n"

BAD_DOCUMENTS = {
    "unknown key": (
        "work_pools:\n  - name: fresh\n    queues:\n      - {name: a}\n      - {name: b, priorty: 2}\n",
        r"work_pools\[0\]\.queues\[1\]\.priorty: extra inputs are not permitted",
    ),
    "unknown top-level key": ("work_pool:\n  - {name: x}\n", r"work_pool: extra inputs are not permitted"),
    "invalid pool name": ("work_pools:\n" + VALID_POOL + "  - {name: 'a/b'}\n", r"work_pools\[1\]\.name: .*/ % & < >"),
    "reserved pool name": ("work_pools:\n  - {name: pushpool-x}\n", r"work_pools\[0\]\.name: .*reserved"),
    "negative limit": (
        "work_pools:\n" + VALID_POOL + "  - {name: other, concurrency_limit: -1}\n",
        r"work_pools\[1\]\.concurrency_limit: .*0 or more",
    ),
    "negative queue limit": (
        "work_pools:\n  - {name: fresh, queues: [{name: a, concurrency_limit: -2}]}\n",
        r"work_pools\[0\]\.queues\[0\]\.concurrency_limit",
    ),
    "zero priority": (
        "work_pools:\n  - {name: fresh, queues: [{name: a, priority: 0}]}\n",
        r"work_pools\[0\]\.queues\[0\]\.priority: priority must be a whole number of 1 or more",
    ),
    "limit as text": ("work_pools:\n  - {name: fresh, concurrency_limit: '3'}\n", r"concurrency_limit: .*integer"),
    "missing name": ("work_pools:\n  - {type: process}\n", r"work_pools\[0\]\.name: field required"),
    "unknown type": ("work_pools:\n  - {name: fresh, type: k8s}\n", r"work_pools\[0\]\.type: .*not a pool type"),
    "type change": ("work_pools:\n  - {name: existing, type: modal:push}\n", r"work_pools\[0\]\.type: .*cannot change"),
    "undeclared job variable": (
        "work_pools:\n" + VALID_POOL + "deployments:\n" + VALID_DEPLOYMENT + "  - {name: bad, pool: existing, "
        "job_variables: {image: x}}\n",
        r"deployments\[1\]\.job_variables: 'image' is not a variable of this pool; allowed: command",
    ),
    "schema violation": (
        "deployments:\n" + VALID_DEPLOYMENT + "  - {name: bad, pool: existing, "
        "job_variables: {stream_output: 'yes'}}\n",
        r"deployments\[1\]\.job_variables\.stream_output: 'yes' is not of type 'boolean'",
    ),
    "pool job variables schema violation": (
        "work_pools:\n  - {name: fresh, job_variables: {command: []}}\n",
        r"work_pools\[0\]\.job_variables\.command",
    ),
    "bad template": (
        "work_pools:\n  - name: fresh\n    base_job_template: {job_configuration: {a: '{{ nope }}'}, "
        "variables: {type: object}}\n",
        r"work_pools\[0\]\.base_job_template: job_configuration uses undeclared variables nope",
    ),
    "template and template file": (
        "work_pools:\n  - {name: fresh, base_job_template: {}, base_job_template_file: t.json}\n",
        r"work_pools\[0\]: give base_job_template or base_job_template_file, not both",
    ),
    "missing template file": (
        "work_pools:\n  - {name: fresh, base_job_template_file: nowhere.json}\n",
        r"work_pools\[0\]\.base_job_template_file: .*nowhere\.json does not exist",
    ),
    "template strands a stored deployment": (
        "work_pools:\n  - name: existing\n    base_job_template: "
        "{job_configuration: {command: run, labels: {image: '{{ image }}'}}, "
        "variables: {type: object, properties: {image: {type: string}}}}\n",
        r"work_pools\[0\]\.base_job_template: the new template rejects the stored deployment 'old'",
    ),
    "deployment on unknown pool": (
        "deployments:\n" + VALID_DEPLOYMENT + "  - {name: bad, pool: nowhere}\n",
        r"deployments\[1\]\.pool: work pool 'nowhere' is neither in the document nor in the store",
    ),
    "deployment on unknown queue": (
        "work_pools:\n" + VALID_POOL + "deployments:\n  - {name: good, pool: fresh, queue: a}\n"
        "  - {name: bad, pool: fresh, queue: q}\n",
        r"deployments\[1\]\.queue: work queue 'q' is neither .* its queues are: a, default",
    ),
    "deployment moving pools": (
        "work_pools:\n" + VALID_POOL + "deployments:\n  - {name: old, pool: fresh}\n",
        r"deployments\[0\]\.pool: deployment 'old' is on pool 'existing' and cannot move",
    ),
    "bad schedule": (
        "deployments:\n" + VALID_DEPLOYMENT + "  - {name: bad, pool: existing, schedules: [{every: 5}]}\n",
        r"deployments\[1\]\.schedules\[0\]: a schedule needs exactly one of 'cron', 'interval', 'rrule'",
    ),
    "bad cron": (
        "deployments:\n" + VALID_DEPLOYMENT + "  - {name: bad, pool: existing, schedules: [{cron: 'every day'}]}\n",
        r"deployments\[1\]\.schedules\[0\]\.cron: cron 'every day' is not a valid cron expression",
    ),
    "bad timezone": (
        "deployments:\n" + VALID_DEPLOYMENT + "  - {name: bad, pool: existing, "
        "schedules: [{interval: 60, timezone: Mars/Base}]}\n",
        r"deployments\[1\]\.schedules\[0\]\.timezone: timezone 'Mars/Base' is not a known IANA time zone",
    ),
    "unknown schedule key": (
        "deployments:\n"
        + VALID_DEPLOYMENT
        + "  - {name: bad, pool: existing, schedules: [{rrule: FREQ=DAILY, tz: UTC}]}\n",
        r"deployments\[1\]\.schedules\[0\]\.tz: extra inputs are not permitted; "
        r"the allowed keys are active, rrule, timezone",
    ),
    "bad interval": (
        "deployments:\n" + VALID_DEPLOYMENT + "  - {name: bad, pool: existing, schedules: [{interval: -5}]}\n",
        r"deployments\[1\]\.schedules\[0\]\.interval: input should be greater than 0",
    ),
    "duplicate pool names": (
        "work_pools:\n" + VALID_POOL + VALID_POOL,
        r"work_pools: work pool 'fresh' is listed 2 times",
    ),
    "duplicate deployment names": (
        "deployments:\n" + VALID_DEPLOYMENT + VALID_DEPLOYMENT,
        r"deployments: deployment 'good' is listed 2 times",
    ),
    "duplicate queue names": (
        "work_pools:\n  - {name: fresh, queues: [{name: a}, {name: a, priority: 3}]}\n",
        r"work_pools\[0\]\.queues: work queue 'a' is listed 2 times",
    ),
    "duplicate priorities": (
        "work_pools:\n  - {name: fresh, queues: [{name: a, priority: 2}, {name: b, priority: 2}]}\n",
        r"work_pools\[0\]\.queues: queues 'a' and 'b' both have priority 2; priorities must be unique",
    ),
    "two default pools": (
        "work_pools:\n  - {name: a, set_as_default: true}\n  - {name: b, set_as_default: true}\n",
        r"work_pools: pools 'a', 'b' all have set_as_default: true",
    ),
    # bounds (integers beyond SQLite's 64 bits used to crash half-way through execute)
    "queue priority beyond the bound": (
        "work_pools:\n  - {name: alpha}\n  - {name: beta, queues: [{name: q, priority: 100000000000000000000}]}\n",
        r"work_pools\[1\]\.queues\[0\]\.priority: priority must be a whole number of 1 or more and at most "
        r"1,000,000 \(1 is the highest\), got 100000000000000000000\.$",
    ),
    "pool limit beyond the bound": (
        "work_pools:\n" + VALID_POOL + "  - {name: other, concurrency_limit: 9223372036854775808}\n",
        r"work_pools\[1\]\.concurrency_limit: concurrency_limit must be a whole number of 0 or more and at most "
        r"1,000,000",
    ),
    "queue limit beyond the bound": (
        "work_pools:\n  - {name: fresh, queues: [{name: a, concurrency_limit: 1000001}]}\n",
        r"work_pools\[0\]\.queues\[0\]\.concurrency_limit: .*at most 1,000,000",
    ),
    "deployment limit beyond the bound": (
        "deployments:\n"
        + VALID_DEPLOYMENT
        + "  - {name: bad, pool: existing, concurrency_limit: 100000000000000000000}\n",
        r"deployments\[1\]\.concurrency_limit: concurrency_limit must be .* at most 1,000,000",
    ),
    "queue going last beyond the bound": (
        "work_pools:\n  - {name: fresh, queues: [{name: a, priority: 1000000}, {name: b}]}\n",
        r"work_pools\[0\]\.queues\[1\]\.priority: work queue 'b' would go last, at priority 1,000,001, beyond the "
        r"allowed priorities 1 to 1,000,000; give it a free priority\.$",
    ),
    "an integer too long to convert": (
        "work_pools:\n  - {name: fresh, concurrency_limit: " + "9" * 5_000 + "}\n",
        r"is not valid YAML: it holds an integer of thousands of digits, far beyond any allowed value",
    ),
    "an impossible date": (
        "work_pools:\n  - {name: fresh, description: 2024-13-45}\n",
        r"is not valid YAML: month must be in 1\.\.12; fix that value\.$",
    ),
    "nesting too deep to read": ("work_pools: " + "[" * 3_000 + "]" * 3_000 + "\n", r"is nested too deeply to read"),
    # names
    "control character in a pool name": (
        'work_pools:\n  - {name: "e\\e[31mred"}\n',
        r"work_pools\[0\]\.name: work pool name 'e\\x1b\[31mred' may not contain control or invisible characters "
        r"\(it has U\+001B\); use visible letters",
    ),
    "zero-width space in a queue name": (
        'work_pools:\n  - {name: fresh, queues: [{name: "a\\u200bb"}]}\n',
        r"work_pools\[0\]\.queues\[0\]\.name: work queue name 'a\\u200bb' .*\(it has U\+200B\)",
    ),
    "control character in a deployment name": (
        'deployments:\n  - {name: "a\\x01b", pool: existing}\n',
        r"deployments\[0\]\.name: deployment name 'a\\x01b' may not contain control",
    ),
    # sizes
    "pool description too long": (
        "work_pools:\n  - {name: fresh, description: " + "d" * 2_001 + "}\n",
        r"work_pools\[0\]\.description: description must be at most 2,000 characters, got 2,001\.$",
    ),
    "queue description too long": (
        "work_pools:\n  - {name: existing, queues: [{name: q, description: " + "d" * 500_000 + "}]}\n",
        r"work_pools\[0\]\.queues\[0\]\.description: description must be at most 2,000 characters",
    ),
    "deployment description too long": (
        "deployments:\n  - {name: old, pool: existing, description: " + "d" * 2_001 + "}\n",
        r"deployments\[0\]\.description: description must be at most 2,000 characters",
    ),
    "empty tag": (
        "deployments:\n" + VALID_DEPLOYMENT + "  - {name: bad, pool: existing, tags: [a, '']}\n",
        r"deployments\[1\]\.tags: tags\[1\] must be 1 to 100 characters long, got 0\.$",
    ),
    "tag too long": (
        "deployments:\n  - {name: bad, pool: existing, tags: [" + "t" * 100_000 + "]}\n",
        r"deployments\[0\]\.tags: tags\[0\] must be 1 to 100 characters long, got 100,000\.$",
    ),
    "too many tags": (
        "deployments:\n  - {name: bad, pool: existing, tags: [" + ", ".join(f"t{i}" for i in range(51)) + "]}\n",
        r"deployments\[0\]\.tags: tags may hold at most 50 tags, got 51\.$",
    ),
    "parameters too big": (
        "deployments:\n"
        + VALID_DEPLOYMENT
        + "  - {name: bad, pool: existing, parameters: {k: "
        + "x" * 500_000
        + "}}\n",
        r"deployments\[1\]\.parameters: parameters may be at most 64 KB \(65,536 bytes\) as JSON, got 500,008 bytes\.$",
    ),
    "pool job variables too big": (
        "work_pools:\n  - {name: fresh, job_variables: {command: " + "x" * 70_000 + "}}\n",
        r"work_pools\[0\]\.job_variables: job_variables may be at most 64 KB",
    ),
    "inline template too big": (
        "work_pools:\n  - {name: fresh, base_job_template: {job_configuration: {}, variables: {type: object, "
        "description: " + "x" * 70_000 + "}}}\n",
        r"work_pools\[0\]\.base_job_template: base_job_template may be at most 64 KB",
    ),
    "a value that expands beyond the size limit": (
        # A "billion laughs": each level refers ten times to the one before, 10**9 strings when written out.
        "deployments:\n  - name: bomb\n    pool: existing\n    parameters:\n"
        "      l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n"
        + "".join(f"      l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9)),
        r"deployments\[0\]\.parameters: parameters may be at most 64 KB \(65,536 bytes\) as JSON\.$",
    ),
    # JSON values that JSON cannot hold
    "recursive alias in parameters": (
        "deployments: [{name: r, pool: existing, parameters: &p {k: [*p]}}]\n",
        r"deployments\[0\]\.parameters: parameters\.k\[0\]\.k refers back to a value that contains it "
        r"\(a recursive YAML alias\?\), which JSON cannot hold",
    ),
    "recursive alias in job variables": (
        "work_pools:\n  - {name: fresh, job_variables: &v {env: [*v]}}\n",
        r"work_pools\[0\]\.job_variables: job_variables\.env\[0\]\.env refers back",
    ),
    "NaN in parameters": (
        "deployments:\n" + VALID_DEPLOYMENT + "  - {name: bad, pool: existing, parameters: {a: [1, .nan]}}\n",
        r"deployments\[1\]\.parameters: parameters\.a\[1\] is nan, which is not a JSON number; use a finite number, "
        r"a string or null\.$",
    ),
    "infinity in deployment job variables": (
        "deployments:\n  - {name: bad, pool: existing, job_variables: {command: -.inf}}\n",
        r"deployments\[0\]\.job_variables: job_variables\.command is -inf, which is not a JSON number",
    ),
    "infinity in pool job variables": (
        "work_pools:\n  - {name: fresh, job_variables: {env: {A: .inf}}}\n",
        r"work_pools\[0\]\.job_variables: job_variables\.env\.A is inf, which is not a JSON number",
    ),
    "malformed YAML": ("work_pools:\n  - {name: fresh\n", r"is not valid YAML at line \d+, column \d+"),
    "duplicate YAML key": ("work_pools:\n  - name: a\n    name: b\n", r"line 3.*the key 'name' appears twice"),
    "top-level list": ("- {name: fresh}\n", r"holds a list at the top level; .* must be a mapping"),
    "empty file": ("", r"is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCUMENTS))
def test_bad_documents_are_refused_and_nothing_is_written(seeded: SQLiteStore, tmp_path: Path, case: str) -> None:
    text, pattern = BAD_DOCUMENTS[case]
    path = write(tmp_path, text)
    before = snapshot(seeded)
    with pytest.raises(InvalidInput, match=pattern) as info:
        apply(seeded, path, dry_run=False)
    message = str(info.value)
    assert message.startswith(str(path)), message  # the file is named
    assert "\n" not in message
    assert snapshot(seeded) == before


def test_missing_file(seeded: SQLiteStore, tmp_path: Path) -> None:
    before = snapshot(seeded)
    with pytest.raises(InvalidInput, match=r"nothere\.yaml does not exist"):
        apply(seeded, tmp_path / "nothere.yaml", dry_run=False)
    assert snapshot(seeded) == before


def test_malformed_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    path.write_text('{\n  "work_pools": [,]\n}\n')
    with pytest.raises(InvalidInput, match=r"doc\.json is not valid JSON at line 2"):
        load_document(path)


def test_second_deployment_invalid_leaves_first_unwritten(seeded: SQLiteStore, tmp_path: Path) -> None:
    doc = """
    work_pools:
      - {name: fresh, queues: [{name: a, priority: 1}]}
    deployments:
      - {name: first, pool: fresh, queue: a, job_variables: {command: ok}}
      - {name: second, pool: fresh, job_variables: {nope: 1}}
    """
    before = snapshot(seeded)
    with pytest.raises(TemplateError, match=r"deployments\[1\]\.job_variables: 'nope' is not a variable"):
        apply(seeded, write(tmp_path, doc), dry_run=False)
    assert snapshot(seeded) == before
    assert seeded.get_pool("fresh") is None
    assert seeded.get_deployment("first") is None


def test_plan_apply_rejects_a_non_mapping(store: SQLiteStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="must be a mapping"):
        plan_apply(store, ["work_pools"], tmp_path)  # type: ignore[arg-type]


# bounds, checked in the plan phase: nothing is written ------------------------------------------------------
def test_a_later_pool_with_an_out_of_range_priority_leaves_the_earlier_pool_unwritten(
    store: SQLiteStore, tmp_path: Path
) -> None:
    doc = """
    work_pools:
      - {name: alpha}
      - name: beta
        queues: [{name: q, priority: 100000000000000000000}]
    """
    with pytest.raises(InvalidInput, match=r"work_pools\[1\]\.queues\[0\]\.priority: priority must be .*1,000,000"):
        apply(store, write(tmp_path, doc), dry_run=False)
    assert store.list_pools() == []


def test_a_fourth_deployment_with_an_out_of_range_limit_leaves_the_first_three_unwritten(
    store: SQLiteStore, tmp_path: Path
) -> None:
    doc = """
    work_pools: [{name: alpha}]
    deployments:
      - {name: d1, pool: alpha}
      - {name: d2, pool: alpha, concurrency_limit: 1000000}
      - {name: d3, pool: alpha}
      - {name: d4, pool: alpha, concurrency_limit: 100000000000000000000}
    """
    with pytest.raises(InvalidInput) as info:
        apply(store, write(tmp_path, doc), dry_run=False)
    assert str(info.value).endswith(
        "deployments[3].concurrency_limit: concurrency_limit must be a whole number of 0 or more and at most "
        "1,000,000 (0 delivers nothing; unset means no limit), got 100000000000000000000."
    )
    assert store.list_pools() == [] and store.list_deployments() == []


def test_a_recursive_alias_in_parameters_is_refused_naming_the_field(store: SQLiteStore, tmp_path: Path) -> None:
    doc = "work_pools: [{name: alpha}]\ndeployments: [{name: r, pool: alpha, parameters: &p {k: [*p]}}]\n"
    path = write(tmp_path, doc)
    with pytest.raises(InvalidInput) as info:
        apply(store, path, dry_run=True)
    assert str(info.value).startswith(f"{path}: deployments[0].parameters: parameters.k[0].k refers back")
    with pytest.raises(InvalidInput):
        apply(store, path, dry_run=False)
    assert store.list_pools() == [] and store.list_deployments() == []


@pytest.mark.parametrize("number", [".nan", ".inf", "-.inf", ".NaN"])
def test_yaml_nan_and_infinity_are_refused_not_stored_as_null(store: SQLiteStore, tmp_path: Path, number: str) -> None:
    deployment = (
        f"work_pools: [{{name: alpha}}]\ndeployments: [{{name: d, pool: alpha, parameters: {{x: {number}}}}}]\n"
    )
    with pytest.raises(InvalidInput, match=r"deployments\[0\]\.parameters: parameters\.x is .*not a JSON number"):
        apply(store, write(tmp_path, deployment), dry_run=False)
    pool = f"work_pools: [{{name: alpha, job_variables: {{env: {{A: {number}}}}}}}]\n"
    with pytest.raises(InvalidInput, match=r"work_pools\[0\]\.job_variables: job_variables\.env\.A is .*not a JSON"):
        apply(store, write(tmp_path, pool), dry_run=False)
    assert store.list_pools() == [] and store.list_deployments() == []


def test_a_queue_pushed_beyond_the_last_priority_is_refused_before_any_write(
    seeded: SQLiteStore, tmp_path: Path
) -> None:
    pools.create_queue(seeded, "existing", "bottom", priority=1_000_000)
    before = snapshot(seeded)
    doc = """
    work_pools:
      - {name: newpool}
      - name: existing
        queues: [{name: ok, priority: 5}, {name: top, priority: 1000000}]
    """
    with pytest.raises(InvalidInput) as info:
        apply(seeded, write(tmp_path, doc), dry_run=False)
    assert str(info.value).endswith(
        "work_pools[1].queues[1].priority: priority 1,000,000 for work queue 'top' would push work queue 'bottom' "
        "down to 1,000,001, beyond the allowed priorities 1 to 1,000,000; pick a free priority, or move 'bottom' up "
        "first."
    )
    assert snapshot(seeded) == before


def test_values_at_the_bounds_are_applied(store: SQLiteStore, tmp_path: Path) -> None:
    tags = ", ".join(f"t{i:02d}" + "x" * 97 for i in range(50))
    doc = f"""
    work_pools:
      - name: alpha
        concurrency_limit: 1000000
        description: {"d" * 2000}
        queues: [{{name: last, priority: 1000000, concurrency_limit: 0}}, {{name: first, priority: 1}}]
    deployments:
      - name: d
        pool: alpha
        queue: last
        concurrency_limit: 1000000
        tags: [{tags}]
        parameters: {{k: {"p" * 65_000}}}
    """
    apply(store, write(tmp_path, doc), dry_run=False)
    assert priorities(store, "alpha") == {"first": 1, "default": 2, "last": 1_000_000}
    deployment = store.get_deployment("d")
    assert deployment is not None and len(deployment.tags) == 50 and deployment.concurrency_limit == 1_000_000
    assert apply(store, write(tmp_path, doc), dry_run=False).summary() == "0 to create, 0 to update, 4 unchanged"


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ('{"job_configuration": {}, "variables": {"type": "object", "default": NaN}}', r"\.variables\.default is nan"),
        (
            json.dumps({"job_configuration": {}, "variables": {"type": "object", "description": "x" * 70_000}}),
            r" may be at most 64 KB \(65,536 bytes\) as JSON",
        ),
    ],
)
def test_a_template_file_is_held_to_the_same_rules(
    seeded: SQLiteStore, tmp_path: Path, content: str, pattern: str
) -> None:
    (tmp_path / "t.json").write_text(content)
    before = snapshot(seeded)
    doc = "work_pools:\n  - {name: fresh}\n  - {name: other, base_job_template_file: t.json}\n"
    with pytest.raises(InvalidInput, match=r"work_pools\[1\]\.base_job_template_file: base_job_template" + pattern):
        apply(seeded, write(tmp_path, doc), dry_run=False)
    assert snapshot(seeded) == before


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ('{"work_pools": [{"name": "a", "concurrency_limit": ' + "9" * 5_000 + "}]}", "an integer of thousands"),
        ('{"work_pools": ' + "[" * 5_000 + "]" * 5_000 + "}", "nested too deeply to read"),
        ('{"work_pools": [], "work_pools": []}', "the key 'work_pools' appears twice in one object; keep one"),
    ],
)
def test_json_documents_that_python_cannot_read_are_one_sentence(tmp_path: Path, content: str, pattern: str) -> None:
    path = tmp_path / "doc.json"
    path.write_text(content)
    with pytest.raises(InvalidInput, match=pattern) as info:
        load_document(path)
    assert str(info.value).startswith(f"{path} is ") and "\n" not in str(info.value)


def test_every_model_rule_is_met_in_the_plan_even_one_the_document_schema_misses(
    seeded: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the document schema forgot a rule the models have: the plan still builds each object as it will
    # be written, so the rule stops the plan, not execute half-way.
    monkeypatch.setattr("dispatcher.apply.check_description", lambda value: value)
    before = snapshot(seeded)
    doc = "work_pools:\n  - {name: fresh}\n  - {name: existing, description: " + "d" * 2_001 + "}\n"
    with pytest.raises(InvalidInput) as info:
        apply(seeded, write(tmp_path, doc), dry_run=False)
    assert str(info.value).endswith("work_pools[1]: description must be at most 2,000 characters, got 2,001.")
    assert snapshot(seeded) == before
    doc = (
        "deployments:\n  - {name: good, pool: existing}\n  - {name: old, pool: existing, description: "
        + "d" * 2_001
        + "}\n"
    )
    with pytest.raises(InvalidInput, match=r"deployments\[1\]: description must be at most 2,000 characters"):
        apply(seeded, write(tmp_path, doc), dry_run=False)
    doc = "work_pools:\n  - {name: existing, queues: [{name: new, description: " + "d" * 2_001 + "}]}\n"
    with pytest.raises(InvalidInput, match=r"work_pools\[0\]\.queues\[0\]: description must be at most 2,000"):
        apply(seeded, write(tmp_path, doc), dry_run=False)
    assert snapshot(seeded) == before

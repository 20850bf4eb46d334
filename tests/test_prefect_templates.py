"""Prefect's own base job templates work verbatim (issue #11).

`tests/data/prefect_templates/<type>.json` are the `default_base_job_configuration`s of Prefect's workers for
the infrastructures pushpool serves, as Prefect's server ships them (its aggregate worker metadata). Cases are
generated from the templates whose pool type's provider loads here, so a provider that lands later is covered
by the same tests without any of them being skipped now.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dispatcher import jobs, pools, templating
from dispatcher.cli import app
from dispatcher.deployments import create_deployment
from dispatcher.jobs import RunContext
from dispatcher.pool_types import default_template
from dispatcher.providers.base import Providers
from dispatcher.store.sqlite import SQLiteStore

DATA = Path(__file__).parent / "data" / "prefect_templates"

POOL_TYPES = {
    "process": "process",
    "ecs": "ecs:push",
    "cloud-run-v2": "cloud-run-v2:push",
    "azure-container-instance": "azure-container-instance:push",
}
"""Prefect's worker type -> pushpool's pool type for the same infrastructure."""

TYPICAL: dict[str, dict[str, Any]] = {
    "process": {
        "command": "python -c 'print(1)'",
        "env": {"MODE": "full"},
        "labels": {"team": "data"},
        "name": "nightly",
        "stream_output": False,
        "working_dir": "/tmp",
    },
    "ecs": {
        "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/flows:1",
        "command": "python -m flows 'a b'",
        "env": {"MODE": "full"},
        "labels": {"team": "data"},
        "cpu": 512,
        "memory": 1024,
        "cluster": "flows",
        "launch_type": "FARGATE",
        "stream_output": True,
        "task_start_timeout_seconds": 120,
    },
    "cloud-run-v2": {
        "image": "europe-docker.pkg.dev/acme/flows/flows:1",
        "command": "python -m flows",
        "args": ["--day", "2026-03-01"],
        "env": {"MODE": "full"},
        "labels": {"team": "data"},
        "region": "europe-west1",
        "cpu": "1",
        "memory": "1Gi",
        "timeout": 900,
        "max_retries": 1,
    },
    "azure-container-instance": {
        "image": "acme.azurecr.io/flows:1",
        "command": "python -m flows",
        "env": {"MODE": "full"},
        "labels": {"team": "data"},
        "resource_group_name": "flows-rg",
        "subscription_id": "00000000-0000-0000-0000-000000000001",
        "cpu": 1.0,
        "memory": 2.0,
    },
}
"""Job variables a Prefect user typically sets on a deployment of each type."""


def _prefect_template(kind: str) -> dict[str, Any]:
    template: dict[str, Any] = json.loads((DATA / f"{kind}.json").read_text())
    return template


def _loadable() -> list[str]:
    """Prefect template kinds whose pushpool provider loads here (a missing one is not a case, not a skip)."""
    kinds = sorted(path.stem for path in DATA.glob("*.json"))
    return [kind for kind in kinds if jobs.provider_problem(POOL_TYPES[kind]) is None]


LOADABLE = _loadable()


def test_prefect_s_templates_are_kept_for_every_pool_type_pushpool_serves() -> None:
    assert sorted(path.stem for path in DATA.glob("*.json")) == sorted(POOL_TYPES)
    assert {"process", "ecs"} <= set(LOADABLE)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "s.db"))
    yield s
    s.close()


def _context(run_id: str) -> RunContext:
    return RunContext(
        run_id=run_id,
        deployment="nightly",
        pool="prefect-pool",
        queue="default",
        parameters={"day": "2026-03-01"},
        callback_url=f"http://127.0.0.1:4300/callbacks/runs/{run_id}",
        callback_token="token-of-the-run",
        run_name="silent-heron",
    )


@pytest.mark.parametrize("kind", LOADABLE)
def test_work_pool_create_accepts_prefect_s_template_and_a_deployment_renders_a_valid_job(
    kind: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps(_prefect_template(kind)))
    runner = CliRunner()
    pool_type = POOL_TYPES[kind]
    created = runner.invoke(
        app,
        ["--store", url, "work-pool", "create", "prefect-pool", "--type", pool_type, "--base-job-template", str(path)],
    )
    assert created.exit_code == 0, created.stderr
    variables = json.dumps(TYPICAL[kind])
    made = runner.invoke(
        app, ["--store", url, "deployment", "create", "nightly", "--pool", "prefect-pool", "--job-variables", variables]
    )
    assert made.exit_code == 0, made.stderr

    store = SQLiteStore(str(tmp_path / "s.db"))
    try:
        pool = store.get_pool("prefect-pool")
        deployment = store.get_deployment("nightly")
        assert pool is not None and deployment is not None
        assert pool.base_job_template == _prefect_template(kind)
        job = jobs.build_job(
            pool.base_job_template,
            pool.job_variables,
            deployment.job_variables,
            None,
            environ={},
            context=_context(str(uuid.uuid4())),
        )
    finally:
        store.close()
    valid = Providers().get(pool_type).validate(job)
    assert valid["env"]["MODE"] == "full" and valid["env"]["PUSHPOOL_CALLBACK_TOKEN"] == "token-of-the-run"


@pytest.mark.parametrize("kind", sorted(k for k in POOL_TYPES if k in LOADABLE))
def test_every_prefect_variable_is_a_variable_of_pushpool_s_default_template_with_prefect_s_type_and_default(
    kind: str,
) -> None:
    prefect = _prefect_template(kind)["variables"]["properties"]
    ours = default_template(POOL_TYPES[kind])["variables"]["properties"]
    assert set(prefect) <= set(ours), sorted(set(prefect) - set(ours))
    for name, schema in prefect.items():
        assert ours[name].get("default") == schema.get("default"), name
        prefect_type = schema.get("type")
        our_types = ours[name].get("type")
        our_types = set(our_types) if isinstance(our_types, list) else {our_types}
        if prefect_type is not None:
            # Where pushpool widens a type (a command as a list, too), Prefect's type is still accepted.
            assert prefect_type in our_types, (name, prefect_type, our_types)


@pytest.mark.parametrize("kind", LOADABLE)
def test_pushpool_s_default_template_takes_the_typical_prefect_job_variables(kind: str, store: SQLiteStore) -> None:
    pool_type = POOL_TYPES[kind]
    pools.create_pool(store, "ours", type=pool_type)
    create_deployment(store, "nightly", pool="ours", job_variables=TYPICAL[kind])
    pool = store.get_pool("ours")
    assert pool is not None
    job = jobs.build_job(
        pool.base_job_template, None, TYPICAL[kind], None, environ={}, context=_context(str(uuid.uuid4()))
    )
    assert Providers().get(pool_type).validate(job)["env"]["MODE"] == "full"


# -- rendering as Prefect renders --------------------------------------------------------------------------------


def _template(job_configuration: dict[str, Any], **properties: Any) -> dict[str, Any]:
    return {"job_configuration": job_configuration, "variables": {"type": "object", "properties": properties}}


def test_dotted_placeholders_resolve_as_prefect_resolves_them() -> None:
    template = _template(
        {
            "subnet": "{{ network.subnet }}",
            "first": "{{ zones.0 }}",
            "second": "{{ zones[1] }}",
            "gone": "{{ network.x }}",
        },
        network={"type": "object"},
        zones={"type": "array"},
    )
    templating.validate_template(template)
    values = {"network": {"subnet": "subnet-1"}, "zones": ["a", "b"]}
    rendered = templating.render(template["job_configuration"], values, {})
    assert rendered == {"subnet": "subnet-1", "first": "a", "second": "b"}
    assert templating.render({"text": "in {{ network.subnet }}/{{ zones.5 }}"}, values, {}) == {"text": "in subnet-1/"}


def test_a_dotted_placeholder_needs_its_variable_declared() -> None:
    with pytest.raises(templating.TemplateError, match="undeclared variables network"):
        templating.validate_template(_template({"subnet": "{{ network.subnet }}"}))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{{ prefect.variables.cluster }}", "reads a Prefect server variable"),
        ("arn:{{ prefect.blocks.aws-credentials.prod.value }}", "reads a Prefect block"),
    ],
)
def test_prefect_server_placeholders_are_refused_when_written_saying_what_to_use(text: str, says: str) -> None:
    template = _template({"task_run_request": {"cluster": text}})
    with pytest.raises(templating.TemplateError) as caught:
        templating.validate_template(template)
    message = str(caught.value)
    assert message.startswith("job_configuration.task_run_request.cluster: ") and says in message
    assert "{{ $NAME }}" in message


def test_a_block_reference_default_is_refused_unless_it_is_a_credentials_variable() -> None:
    block = {"$ref": {"block_document_id": "5b7c3d5e-0000-4000-8000-000000000000"}}
    with pytest.raises(templating.TemplateError, match=r"variables\.properties\.image\.default is a reference"):
        templating.validate_template(_template({"image": "{{ image }}"}, image={"type": "string", "default": block}))
    credentials = _template({"c": "{{ aws_credentials }}"}, aws_credentials={"type": "object", "default": block})
    templating.validate_template(credentials)


def test_a_null_default_drops_its_key_as_in_prefect() -> None:
    template = _template(
        {"cluster": "{{ cluster }}", "text": "on {{ cluster }}", "cpu": "{{ cpu }}"},
        cluster={"type": "string", "default": None},
        cpu={"type": "integer", "default": 1},
    )
    templating.validate_template(template)
    values = templating.resolve_job_variables(template, None, None, None)
    assert values == {"cpu": 1}
    assert templating.render(template["job_configuration"], values, {}) == {"text": "on ", "cpu": 1}
    # A value set explicitly to null is still null: only the default means "unset".
    assert templating.render({"cluster": "{{ cluster }}"}, {"cluster": None}, {}) == {"cluster": None}


@pytest.mark.parametrize("name", sorted(templating.CREDENTIAL_VARIABLES))
def test_credentials_variables_never_take_a_secret(name: str) -> None:
    template = _template({}, **{name: {"type": "object"}})
    templating.validate_job_variables(
        template, {name: {"region_name": "eu-west-1"}}, field="job_variables", enforce_required=False
    )
    with pytest.raises(templating.TemplateError) as caught:
        templating.validate_job_variables(
            template,
            {name: {"region_name": "eu-west-1", "aws_secret_access_key": "hunter2"}},
            field="job_variables",
            enforce_required=False,
        )
    message = str(caught.value)
    assert f"job_variables.{name}.aws_secret_access_key: pushpool never stores credentials" in message
    assert "hunter2" not in message


# -- ECS: Prefect's template submitted to moto ------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[Any]:
    from ecs_fakes import AWS_TEST_ENV, AWS_UNSET, MotoServer

    with pytest.MonkeyPatch.context() as mp:
        for key, value in AWS_TEST_ENV.items():
            mp.setenv(key, value)
        for key in AWS_UNSET:
            mp.delenv(key, raising=False)
        server = MotoServer().start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def aws(moto: Any) -> dict[str, Any]:
    """A fresh cluster and a VPC whose subnet reaches the internet, as ecs_fakes makes them."""
    import boto3
    from ecs_fakes import REGION, make_vpc

    ecs = boto3.client("ecs", region_name=REGION, endpoint_url=moto.url)
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto.url)
    cluster = f"prefect-{uuid.uuid4().hex[:8]}"
    ecs.create_cluster(clusterName=cluster)
    vpc_id, _ = make_vpc(ec2, "10.50.0.0/16", ["10.50.1.0/24"])
    return {"ecs": ecs, "cluster": cluster, "vpc_id": vpc_id, "url": moto.url, "region": REGION}


def _ecs_job(aws: dict[str, Any], **variables: Any) -> tuple[str, dict[str, Any]]:
    from dispatcher.providers.ecs import ECSProvider

    run_id = str(uuid.uuid4())
    template = _prefect_template("ecs")
    values = {**TYPICAL["ecs"], "cluster": aws["cluster"], "vpc_id": aws["vpc_id"], **variables}
    templating.validate_job_variables(template, values, field="job_variables", enforce_required=False)
    job = jobs.build_job(template, None, values, None, environ={}, context=_context(run_id))
    return run_id, ECSProvider(region=aws["region"], endpoint_url=aws["url"]).validate(job)


def test_prefect_s_ecs_template_submits_one_container_override_in_ecs_s_types(aws: dict[str, Any]) -> None:
    from dispatcher.providers.ecs import ECSProvider

    run_id, job = _ecs_job(aws)
    provider = ECSProvider(region=aws["region"], endpoint_url=aws["url"])
    infra_id = provider.submit(job, idempotency_key=f"{run_id}-1")

    task = aws["ecs"].describe_tasks(cluster=aws["cluster"], tasks=[infra_id])["tasks"][0]
    overrides = task["overrides"]
    assert len(overrides["containerOverrides"]) == 1, overrides
    container = overrides["containerOverrides"][0]
    assert container["name"] == "pushpool"
    assert container["command"] == ["python", "-m", "flows", "a b"]
    env = {item["name"]: item["value"] for item in container["environment"]}
    assert env["MODE"] == "full" and env["PUSHPOOL_RUN_ID"] == run_id
    assert (container["cpu"], container["memory"]) == (512, 1024)
    assert (overrides["cpu"], overrides["memory"]) == ("512", "1024")
    assert task["clusterArn"].endswith(f"/{aws['cluster']}")


def test_auto_deregister_task_definition_leaves_no_active_revision(aws: dict[str, Any]) -> None:
    from dispatcher.providers.ecs import ECSProvider

    family = f"flows-{uuid.uuid4().hex[:8]}"
    provider = ECSProvider(region=aws["region"], endpoint_url=aws["url"])
    arns = []
    for _ in range(2):
        run_id, job = _ecs_job(aws, family=family, auto_deregister_task_definition=True)
        infra_id = provider.submit(job, idempotency_key=f"{run_id}-1")
        arns.append(
            aws["ecs"].describe_tasks(cluster=aws["cluster"], tasks=[infra_id])["tasks"][0]["taskDefinitionArn"]
        )
    assert arns[0] != arns[1], "a deregistered revision is never reused: the next run registers its own"
    assert aws["ecs"].list_task_definitions(familyPrefix=family, status="ACTIVE")["taskDefinitionArns"] == []


def test_match_latest_revision_in_family_reuses_a_revision_pushpool_did_not_register(aws: dict[str, Any]) -> None:
    from dispatcher.providers.ecs import ECSJobConfiguration, ECSProvider, build_task_definition

    family = f"flows-{uuid.uuid4().hex[:8]}"
    _, job = _ecs_job(aws, family=family, match_latest_revision_in_family=True)
    wanted = build_task_definition(ECSJobConfiguration.model_validate(job), region=aws["region"])
    registered = aws["ecs"].register_task_definition(**wanted)["taskDefinition"]["taskDefinitionArn"]  # no hash tag

    for match, revisions in ((True, 1), (False, 2)):
        run_id, job = _ecs_job(aws, family=family, match_latest_revision_in_family=match)
        provider = ECSProvider(region=aws["region"], endpoint_url=aws["url"])
        infra_id = provider.submit(job, idempotency_key=f"{run_id}-1")
        used = aws["ecs"].describe_tasks(cluster=aws["cluster"], tasks=[infra_id])["tasks"][0]["taskDefinitionArn"]
        assert (used == registered) is match
        assert len(aws["ecs"].list_task_definitions(familyPrefix=family)["taskDefinitionArns"]) == revisions


# -- checked when written ----------------------------------------------------------------------------------------


def test_a_template_that_can_never_give_a_valid_job_is_refused_naming_the_field(store: SQLiteStore) -> None:
    broken = _prefect_template("ecs")
    broken["job_configuration"]["task_run_request"]["launchType"] = "LAMBDA"
    with pytest.raises(pools.InvalidInput) as caught:
        pools.create_pool(store, "p", type="ecs:push", base_job_template=broken)
    message = str(caught.value)
    assert message.startswith("the base job template cannot produce a valid ecs:push job: task_run_request.launchType")
    assert store.get_pool("p") is None

    process = _template({"command": "{{ command }}", "image": "{{ image }}"}, command={"type": "string"})
    process["variables"]["properties"]["image"] = {"type": "string", "default": "flows:1"}
    with pytest.raises(pools.InvalidInput, match="image: is not a setting of a process job"):
        pools.create_pool(store, "p", base_job_template=process)
    pools.create_pool(store, "p", type="ecs:push", base_job_template=_prefect_template("ecs"))
    with pytest.raises(pools.InvalidInput, match="task_run_request.launchType"):
        pools.update_pool(store, "p", base_job_template=broken)
    stored = store.get_pool("p")
    assert stored is not None and stored.base_job_template == _prefect_template("ecs")


def _without_boto3(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the `aws` extra were not installed: importing boto3 fails, so the ECS provider cannot load."""
    import sys

    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.delitem(sys.modules, "dispatcher.providers.ecs", raising=False)


def test_a_template_is_stored_with_a_warning_where_the_provider_s_extra_is_missing(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _without_boto3(monkeypatch)
    assert jobs.provider_problem("ecs:push") == "pool type 'ecs:push' needs pushpool[aws]: pip install 'pushpool[aws]'"
    with caplog.at_level("WARNING", logger="pushpool.jobs"):
        pool = pools.create_pool(store, "p", type="ecs:push", base_job_template=_prefect_template("ecs"))
    assert pool.base_job_template == _prefect_template("ecs")
    assert [r.getMessage() for r in caplog.records] == [
        "pool type 'ecs:push' needs pushpool[aws]: pip install 'pushpool[aws]'; the template was stored without "
        "checking its job against the ecs:push model."
    ]


# -- a pool type whose provider cannot load takes no slot -----------------------------------------------------

MISSING_AWS = "pool type 'ecs:push' needs pushpool[aws]: pip install 'pushpool[aws]'"


def _admit_by_hand(store: SQLiteStore, run_id: str) -> None:
    """PENDING with its slots, as an older release's dispatcher left runs of such a pool."""
    from dispatcher.states import StateType
    from dispatcher.store.base import Admission

    run = store.get_run(run_id)
    assert run is not None
    pending, _ = run.moved(StateType.PENDING, source="test", message="admitted")
    assert store.admit([Admission(run, pending)])


def test_a_pool_whose_provider_cannot_load_admits_nothing_and_says_why(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dispatcher.cancelling import cancel_run
    from dispatcher.config import Settings
    from dispatcher.deployments import run_deployment
    from dispatcher.dispatch import Dispatcher
    from dispatcher.preview import preview_pool
    from dispatcher.states import StateType
    from dispatcher.store.base import pool_slot

    _without_boto3(monkeypatch)
    pools.create_pool(store, "ecs", type="ecs:push", concurrency_limit=1)
    create_deployment(store, "nightly", pool="ecs", job_variables={"image": "flows:1"})
    waiting = run_deployment(store, "nightly")
    dispatcher = Dispatcher(store, settings=Settings(), environ={})
    try:
        summary = dispatcher.run_pass()
        assert summary.admitted == [] and summary.waiting == {waiting.id: MISSING_AWS}
        assert summary.problems["pool ecs"] == MISSING_AWS
        stored = store.get_run(waiting.id)
        assert stored is not None and stored.state is StateType.SCHEDULED
        assert store.slots([pool_slot("ecs")])[pool_slot("ecs")].active == 0

        pool = store.get_pool("ecs")
        assert pool is not None and pool.status == "NOT_READY" and pools.status_reason(pool) == MISSING_AWS
        preview = preview_pool(store, "ecs")
        assert [(r.id, r.reason) for q in preview.queues for r in q.runs] == [(waiting.id, MISSING_AWS)]
        inspected = CliRunner().invoke(
            app, ["--store", f"sqlite:///{tmp_path}/s.db", "work-pool", "inspect", "ecs", "-o", "json"]
        )
        assert json.loads(inspected.stdout)["status_reason"] == MISSING_AWS

        # A run an older release admitted (holding the only slot) goes back to waiting and frees it.
        _admit_by_hand(store, waiting.id)
        dispatcher.run_pass()
        again = store.get_run(waiting.id)
        assert again is not None and again.state is StateType.SCHEDULED
        assert again.state_history[-1].message == MISSING_AWS
        assert store.slots([pool_slot("ecs")])[pool_slot("ecs")].active == 0

        # Cancelling ends such runs at once: a waiting one on the spot, a stranded CANCELLING one at the next pass.
        assert cancel_run(store, waiting.id).state is StateType.CANCELLED
        stranded = run_deployment(store, "nightly")
        _admit_by_hand(store, stranded.id)
        assert cancel_run(store, stranded.id).state is StateType.CANCELLING
        assert dispatcher.run_pass().cancelled == [stranded.id]
        ended = store.get_run(stranded.id)
        assert ended is not None and ended.state is StateType.CANCELLED
        assert store.slots([pool_slot("ecs")])[pool_slot("ecs")].active == 0
    finally:
        dispatcher.close()


# -- deployment render ---------------------------------------------------------------------------------------


def test_deployment_render_prints_the_job_masked_and_submits_nothing(tmp_path: Path) -> None:
    from dispatcher.api import Api, Request

    url = f"sqlite:///{tmp_path}/s.db"
    path = tmp_path / "ecs.json"
    path.write_text(json.dumps(_prefect_template("ecs")))
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(app, ["--store", url, *args])

    assert cli("work-pool", "create", "p", "--type", "ecs:push", "--base-job-template", str(path)).exit_code == 0
    variables = {"image": "flows:1", "env": {"API_TOKEN": "s3cret", "MODE": "full"}, "cluster": "flows"}
    assert (
        cli("deployment", "create", "nightly", "--pool", "p", "--job-variables", json.dumps(variables)).exit_code == 0
    )

    shown = cli(
        "deployment", "render", "nightly", "--job-variables", '{"cpu": 512}', "--param", "day=2026-03-01", "-o", "json"
    )
    assert shown.exit_code == 0, shown.stderr
    job = json.loads(shown.stdout)
    assert job["task_definition"]["cpu"] == "512" and job["task_run_request"]["cluster"] == "flows"
    env = job["env"]
    assert env["MODE"] == "full" and env["API_TOKEN"] == "****" and env["PUSHPOOL_CALLBACK_TOKEN"] == "****"
    assert json.loads(env["PUSHPOOL_PARAMETERS"]) == {"day": "2026-03-01"}
    assert "s3cret" not in shown.stdout

    store = SQLiteStore(str(tmp_path / "s.db"))
    try:
        assert store.list_runs("p") == [], "rendering writes no run"
        api = Api(store, api_token="t")
        answer = api.handle(
            Request(
                "GET", "/deployments/nightly/render", {"Authorization": "Bearer t"}, {"job_variables": '{"cpu": 512}'}
            )
        )
        assert answer.status == 200 and answer.body["task_definition"]["cpu"] == "512"
        assert answer.body["env"]["API_TOKEN"] == "****"
        bad = api.handle(
            Request("GET", "/deployments/nightly/render", {"Authorization": "Bearer t"}, {"job_variables": "[1]"})
        )
        assert bad.status == 422 and "job_variables must be a JSON object" in bad.body["error"]
    finally:
        store.close()

    invalid = cli("deployment", "render", "nightly", "--job-variables", '{"cloudwatch_logs_options": {"a": "b"}}')
    assert invalid.exit_code == 2
    assert "cloudwatch_logs_options: needs configure_cloudwatch_logs" in invalid.stderr

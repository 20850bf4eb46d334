"""The deploy files, infra/template.yaml (SAM) and serverless.yml, against the code and each other (SPEC §7).

Plain data checks, no AWS and no deploy tool (`make deploy-check` runs cfn-lint, sam validate, serverless
package and checkov): the table is dispatcher/store/dynamodb_schema.TABLE; the dispatcher runs on
`rate(1 minute)` with no reserved concurrency by default, a timeout below the rate and a DLQ; ECS events reach their
function through SQS with a DLQ and partial batch failure; the alarms exist; every handler named imports and
is callable; and each function's role is least privilege.
"""

from __future__ import annotations

import importlib
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from dispatcher import ecs_quickstart
from dispatcher.pool_types import default_template
from dispatcher.providers.ecs import started_by
from dispatcher.store import dynamodb_schema
from dispatcher.templating import validate_job_variables

ROOT = Path(__file__).resolve().parents[1]
SAM_PATH = ROOT / "infra" / "template.yaml"
SLS_PATH = ROOT / "serverless.yml"
GUIDE_PATH = ROOT / "docs" / "deploy.md"

FUNCTIONS = ("dispatch", "ecs_events", "http")
SAM_FUNCTIONS = {"dispatch": "DispatchFunction", "ecs_events": "EcsEventsFunction", "http": "HttpFunction"}
SLS_FUNCTIONS = {"dispatch": "dispatch", "ecs_events": "ecsEvents", "http": "http"}
SLS_LOGICAL = {
    "dispatch": "DispatchLambdaFunction",
    "ecs_events": "EcsEventsLambdaFunction",
    "http": "HttpLambdaFunction",
}
ROLES = {"dispatch": "DispatchRole", "ecs_events": "EcsEventsRole", "http": "HttpRole"}
QUICKSTART_ROLES = ("EcsQuickstartTaskRole", "EcsQuickstartExecutionRole")
QUICKSTART_CONDITIONS = ("EcsQuickstart", "EcsQuickstartCreatesNetwork")
# AmazonECSTaskExecutionRolePolicy's actions; the quickstart's execution role may add logs:CreateLogGroup only.
TASK_EXECUTION_ACTIONS = {
    "ecr:GetAuthorizationToken",
    "ecr:BatchCheckLayerAvailability",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchGetImage",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
}

DYNAMODB_ITEM_ACTIONS = {
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
}
ECS_CLUSTER_ACTIONS = {"ecs:RunTask", "ecs:StopTask", "ecs:DescribeTasks", "ecs:ListTasks"}
SQS_CONSUME = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"}
MANAGEMENT_PREFIXES = ("/work_pools", "/deployments", "/flow_runs")
CALLBACK_PATH = "/callbacks/runs/{run_id}"


# loading ----------------------------------------------------------------------------------------------------
class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags, each read as its long form (`!Ref X` -> {"Ref": "X"})."""


def _cfn_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    if suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def load(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=CfnLoader)  # noqa: S506 - a SafeLoader subclass


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return load(SAM_PATH)


@pytest.fixture(scope="module")
def sls() -> dict[str, Any]:
    return load(SLS_PATH)


def sam_resources(sam: dict[str, Any]) -> dict[str, Any]:
    return sam["Resources"]


def sls_resources(sls: dict[str, Any]) -> dict[str, Any]:
    return sls["resources"]["Resources"]


def both(sam: dict[str, Any], sls: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The CloudFormation resources each file writes itself, by file."""
    return [("infra/template.yaml", sam_resources(sam)), ("serverless.yml", sls_resources(sls))]


def sam_function(sam: dict[str, Any], function: str) -> dict[str, Any]:
    """A SAM function's properties with the Globals it inherits."""
    globals_ = dict(sam.get("Globals", {}).get("Function", {}))
    props = dict(sam_resources(sam)[SAM_FUNCTIONS[function]]["Properties"])
    env = {**globals_.get("Environment", {}).get("Variables", {}), **props.get("Environment", {}).get("Variables", {})}
    return {**globals_, **props, "Environment": {"Variables": env}}


def sls_function(sls: dict[str, Any], function: str) -> dict[str, Any]:
    """A Serverless function's settings with the provider's defaults it inherits."""
    provider = sls["provider"]
    fn = dict(sls["functions"][SLS_FUNCTIONS[function]])
    fn["environment"] = {**provider.get("environment", {}), **fn.get("environment", {})}
    fn.setdefault("runtime", provider.get("runtime"))
    return fn


def sls_param(sls: dict[str, Any], value: Any) -> Any:
    """`${param:x}` -> the default of x (the value `serverless deploy` uses unless told otherwise)."""
    if isinstance(value, str):
        match = re.fullmatch(r"\$\{param:(\w+)\}", value)
        if match:
            return sls["params"]["default"][match.group(1)]
    return value


def refs(value: Any) -> set[str]:
    """Logical ids and parameters a value refers to (Ref, GetAtt, ${X} and ${X.Attr} in Sub, ${param:x})."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref":
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add(inner[0] if isinstance(inner, list) else str(inner).partition(".")[0])
            else:
                found |= refs(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= refs(inner)
    elif isinstance(value, str):
        found |= {m.split(".")[0] for m in re.findall(r"\$\{([A-Za-z0-9_.:]+)\}", value)}
        found |= {f"param:{m}" for m in re.findall(r"\$\{param:(\w+)\}", value)}
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def unless(value: Any) -> tuple[str | None, Any]:
    """(condition, value) of `Fn::If [condition, value, AWS::NoValue]`, else (None, value)."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        condition, then, otherwise = value["Fn::If"]
        assert otherwise == {"Ref": "AWS::NoValue"}, f"an Fn::If that is not 'this or nothing': {value}"
        return condition, then
    return None, value


def role_statements(resources: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """A role's statements, those present only under a condition included (`Fn::If [C, statement, NoValue]`)."""
    return [
        unless(statement)[1]
        for policy in resources[role]["Properties"].get("Policies", [])
        for statement in as_list(policy["PolicyDocument"]["Statement"])
    ]


def statement_conditions(resources: dict[str, Any], role: str) -> dict[str, str | None]:
    """Sid -> the condition a statement of the role exists under (None: always)."""
    found = {}
    for policy in resources[role]["Properties"].get("Policies", []):
        for statement in as_list(policy["PolicyDocument"]["Statement"]):
            condition, body = unless(statement)
            found[body["Sid"]] = condition
    return found


def actions(statement: dict[str, Any]) -> set[str]:
    return set(as_list(statement["Action"]))


# the table --------------------------------------------------------------------------------------------------
def _attributes(definitions: list[dict[str, str]]) -> list[tuple[str, str]]:
    return sorted((d["AttributeName"], d["AttributeType"]) for d in definitions)


def _indexes(gsis: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for gsi in gsis:
        projection = dict(gsi["Projection"])
        if "NonKeyAttributes" in projection:
            projection["NonKeyAttributes"] = sorted(projection["NonKeyAttributes"])
        out[gsi["IndexName"]] = {"KeySchema": gsi["KeySchema"], "Projection": projection}
    return out


def tables(sam: dict[str, Any], sls: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, resources in both(sam, sls):
        dynamo = [r for r in resources.values() if r["Type"] == "AWS::DynamoDB::Table"]
        assert len(dynamo) == 1, f"{name}: expected one DynamoDB table, found {len(dynamo)}"
        found.append((name, dynamo[0]["Properties"]))
    return found


def test_table_is_the_stores_table(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    want = dynamodb_schema.TABLE
    for name, table in tables(sam, sls):
        assert _attributes(table["AttributeDefinitions"]) == _attributes(want["AttributeDefinitions"]), name
        assert table["KeySchema"] == want["KeySchema"], name
        assert _indexes(table["GlobalSecondaryIndexes"]) == _indexes(want["GlobalSecondaryIndexes"]), name
        assert table["BillingMode"] == want["BillingMode"] == "PAY_PER_REQUEST", name
        assert "ProvisionedThroughput" not in table, name
        assert not table.get("LocalSecondaryIndexes"), name
        assert not set(table) - {
            "AttributeDefinitions",
            "KeySchema",
            "GlobalSecondaryIndexes",
            "BillingMode",
            "TimeToLiveSpecification",
            "PointInTimeRecoverySpecification",
            "SSESpecification",
            "DeletionProtectionEnabled",
            "Tags",
        }, f"{name}: the table has properties the store does not know of"


def test_table_ttl_pitr_and_encryption(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    for name, table in tables(sam, sls):
        assert table["TimeToLiveSpecification"] == {"AttributeName": dynamodb_schema.TTL_ATTRIBUTE, "Enabled": True}
        if hasattr(dynamodb_schema, "TIME_TO_LIVE"):
            assert table["TimeToLiveSpecification"] == dynamodb_schema.TIME_TO_LIVE, name
        assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, name
        assert table["SSESpecification"]["SSEEnabled"] is True, name
        assert table["DeletionProtectionEnabled"] is True, f"{name}: a stray delete-table must not take the runs"


def test_table_survives_stack_deletion(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    for name, resources in both(sam, sls):
        table = next(r for r in resources.values() if r["Type"] == "AWS::DynamoDB::Table")
        assert table.get("DeletionPolicy") == table.get("UpdateReplacePolicy") == "Retain", name


# functions --------------------------------------------------------------------------------------------------
def handler_paths(sam: dict[str, Any], sls: dict[str, Any]) -> list[str]:
    found = [
        r["Properties"]["Handler"]
        for r in sam_resources(sam).values()
        if r["Type"] in ("AWS::Serverless::Function", "AWS::Lambda::Function")
    ]
    found += [fn["handler"] for fn in sls["functions"].values()]
    return found


def test_every_handler_imports_and_is_callable(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    paths = handler_paths(sam, sls)
    assert len(paths) == 6
    for path in paths:
        module_name, _, attribute = path.replace("/", ".").rpartition(".")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, attribute, None)), f"{path} is not a callable in {module_name}"


def test_each_function_runs_its_handler(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    for function in FUNCTIONS:
        want = f"handlers.aws_lambda.{function}"
        assert sam_function(sam, function)["Handler"] == want
        assert sls_function(sls, function)["handler"].replace("/", ".") == want


def test_runtime_is_a_current_lambda_python(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    for function in FUNCTIONS:
        assert sam_function(sam, function)["Runtime"] in ("python3.12", "python3.13")
        assert sls_function(sls, function)["runtime"] == sam_function(sam, function)["Runtime"]


def _rate_seconds(rate: str) -> int:
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", rate)
    assert match, f"not a rate expression: {rate}"
    unit = {"minute": 60, "hour": 3600, "day": 86400}[match.group(2).rstrip("s")]
    return int(match.group(1)) * unit


def test_dispatcher_schedule_concurrency_and_timeout(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    # SAM: the rate is a parameter, one minute by default, and no allowed value is shorter than the timeout.
    parameter = sam["Parameters"]["ScheduleRate"]
    assert parameter["Default"] == "rate(1 minute)"
    pattern = re.compile(parameter["AllowedPattern"])
    # EventBridge: the singular unit for 1 only, the plural for any other value.
    for good in ("rate(1 minute)", "rate(5 minutes)", "rate(10 minutes)", "rate(1 hour)", "rate(2 days)"):
        assert pattern.fullmatch(good), good
    for bad in ("rate(1 minutes)", "rate(5 minute)", "rate(0 minutes)", "rate(01 minute)", "cron(* * * * ? *)"):
        assert not pattern.fullmatch(bad), bad
    dispatch = sam_function(sam, "dispatch")
    [event] = dispatch["Events"].values()
    assert event["Type"] == "Schedule" and event["Properties"]["Schedule"] == {"Ref": "ScheduleRate"}
    # No reserved concurrency unless asked for: an account with the new-account quota of 10 cannot reserve any
    # ("decreases account's UnreservedConcurrentExecution below its minimum value of [10]"), and overlapping
    # passes are safe because admission is atomic.
    reserved = dispatch["ReservedConcurrentExecutions"]
    assert reserved == {
        "Fn::If": ["ReserveDispatchConcurrency", {"Ref": "DispatchReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }
    assert sam["Parameters"]["DispatchReservedConcurrency"]["Default"] == 0
    assert sam["Conditions"]["ReserveDispatchConcurrency"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "DispatchReservedConcurrency"}, 0]}]
    }
    assert dispatch["Timeout"] < _rate_seconds(parameter["Default"])
    assert dispatch["Timeout"] < 60, "the shortest rate is one minute"

    # Serverless: the same, through params.
    fn = sls_function(sls, "dispatch")
    [event] = fn["events"]
    rates = [sls_param(sls, r) for r in as_list(event["schedule"]["rate"])]
    assert rates == ["rate(1 minute)"] and event["schedule"]["rate"] != ["rate(1 minute)"], "a parameter"
    assert "reservedConcurrency" not in fn
    extension = sls["resources"]["extensions"][SLS_LOGICAL["dispatch"]]["Properties"]
    assert extension["ReservedConcurrentExecutions"]["Fn::If"][0] == "ReserveDispatchConcurrency"
    assert sls_param(sls, extension["ReservedConcurrentExecutions"]["Fn::If"][1]) == "0"
    assert sls["resources"]["Conditions"]["ReserveDispatchConcurrency"] == {
        "Fn::Not": [{"Fn::Equals": ["${param:dispatchReservedConcurrency}", "0"]}]
    }
    assert fn["timeout"] == dispatch["Timeout"]


def test_dispatcher_dead_letter_queue(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    sam_dlq = sam_function(sam, "dispatch")["DeadLetterQueue"]
    assert sam_dlq["Type"] == "SQS"
    sls_dlq = sls["resources"]["extensions"][SLS_LOGICAL["dispatch"]]["Properties"]["DeadLetterConfig"]
    for name, resources, target in (
        ("infra/template.yaml", sam_resources(sam), sam_dlq["TargetArn"]),
        ("serverless.yml", sls_resources(sls), sls_dlq["TargetArn"]),
    ):
        [queue] = refs(target)
        assert resources[queue]["Type"] == "AWS::SQS::Queue", name
        sends = [s for s in role_statements(resources, ROLES["dispatch"]) if "sqs:SendMessage" in actions(s)]
        assert sends and all(refs(s["Resource"]) == {queue} for s in sends), f"{name}: the role may send to its DLQ"


def test_ecs_events_pipeline(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    sam_event = next(e for e in sam_function(sam, "ecs_events")["Events"].values() if e["Type"] == "SQS")
    sls_event = next(e["sqs"] for e in sls_function(sls, "ecs_events")["events"] if "sqs" in e)
    assert sam_event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert sls_event["functionResponseType"] == "ReportBatchItemFailures"
    for name, resources, source in (
        ("infra/template.yaml", sam_resources(sam), sam_event["Properties"]["Queue"]),
        ("serverless.yml", sls_resources(sls), sls_event["arn"]),
    ):
        [queue] = refs(source)
        props = resources[queue]["Properties"]
        [dlq] = refs(props["RedrivePolicy"]["deadLetterTargetArn"])
        assert resources[dlq]["Type"] == "AWS::SQS::Queue" and dlq != queue, name
        assert 1 <= props["RedrivePolicy"]["maxReceiveCount"] <= 10, name
        # The rule: ECS task state changes of the configured clusters, into that queue, which lets it in.
        [rule] = [r for r in resources.values() if r["Type"] == "AWS::Events::Rule"]
        pattern = rule["Properties"]["EventPattern"]
        assert pattern["source"] == ["aws.ecs"] and pattern["detail-type"] == ["ECS Task State Change"], name
        assert refs(pattern["detail"]["clusterArn"]) >= {"EcsQuickstartCluster"}, name
        assert refs(pattern["detail"]["clusterArn"]) & {"ClusterArns", "param:clusterArns"}, name
        # A shared cluster's service tasks stay out (EventBridge matches a field only where it is present).
        assert pattern["detail"]["startedBy"] == [{"anything-but": {"prefix": "ecs-svc/"}}], name
        assert not started_by(str(uuid.uuid4())).startswith("ecs-svc/") and not started_by("x" * 80).startswith("ecs")
        assert [refs(t["Arn"]) for t in rule["Properties"]["Targets"]] == [{queue}], name
        # What EventBridge cannot deliver goes to the DLQ after bounded retries, and the DLQ lets it in.
        [target] = rule["Properties"]["Targets"]
        assert refs(target["DeadLetterConfig"]["Arn"]) == {dlq}, name
        assert 0 < target["RetryPolicy"]["MaximumEventAgeInSeconds"] <= 86400, name
        policies = {
            frozenset(refs(r["Properties"]["Queues"])): r["Properties"]["PolicyDocument"]
            for r in resources.values()
            if r["Type"] == "AWS::SQS::QueuePolicy"
        }
        assert set(policies) == {frozenset({queue}), frozenset({dlq})}, name
        for document in policies.values():
            [statement] = document["Statement"]
            assert statement["Principal"] == {"Service": "events.amazonaws.com"}, name
            assert refs(statement["Condition"]["ArnEquals"]["aws:SourceArn"]) == {"EcsEventsRule"}, name
        # Visibility timeout at least the function's timeout (Lambda refuses less).
        timeout = (sam_function(sam, "ecs_events")["Timeout"], sls_function(sls, "ecs_events")["timeout"])
        assert props["VisibilityTimeout"] >= max(timeout), name


def test_http_api_routes_and_auth(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    api = sam_resources(sam)["HttpApi"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "AWS_IAM" and api["Auth"]["EnableIamAuthorizer"] is True
    sam_routes = {
        (e["Properties"]["Method"].upper(), e["Properties"]["Path"]): e["Properties"].get("Auth", {}).get("Authorizer")
        for e in sam_function(sam, "http")["Events"].values()
        if e["Type"] == "HttpApi"
    }
    sls_routes = {
        (e["httpApi"]["method"].upper().replace("*", "ANY"), e["httpApi"]["path"]): (
            "AWS_IAM" if e["httpApi"].get("authorizer", {}).get("type") == "aws_iam" else "NONE"
        )
        for e in sls_function(sls, "http")["events"]
        if "httpApi" in e
    }
    assert sam_routes == sls_routes
    assert sam_routes.pop(("POST", CALLBACK_PATH)) == "NONE", "callbacks are HMAC-signed, not IAM"
    assert sam_routes.pop(("GET", CALLBACK_PATH + "/parameters")) == "NONE", "signed with the run's token too"
    assert sam_routes.pop(("GET", "/openapi.json")) == "NONE", "the document holds no data (docs/decisions.md)"
    assert sam_routes.pop(("GET", "/docs")) == "NONE", "the document's page, likewise"
    assert set(sam_routes.values()) == {"AWS_IAM"}
    for prefix in MANAGEMENT_PREFIXES:
        assert ("ANY", prefix) in sam_routes and ("ANY", prefix + "/{proxy+}") in sam_routes


def test_the_dashboard_is_not_routed_through_the_iam_gateway(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    # docs/decisions.md, "Dashboard": behind IAM auth every request must be SigV4-signed, which a browser cannot do,
    # so no /ui route reaches the function (the gateway answers 404) and `pushpool serve` serves the dashboard.
    sam_paths = [
        e["Properties"]["Path"] for e in sam_function(sam, "http")["Events"].values() if e["Type"] == "HttpApi"
    ]
    sls_paths = [e["httpApi"]["path"] for e in sls_function(sls, "http")["events"] if "httpApi" in e]
    for path in (*sam_paths, *sls_paths):
        assert path != "/ui" and not path.startswith("/ui/") and path not in ("$default", "/{proxy+}"), path
    assert sam_function(sam, "http")["Environment"]["Variables"]["PUSHPOOL_API_AUTH"] == "iam"


def _gateway_route(routes: dict[tuple[str, str], str], method: str, path: str) -> str | None:
    """The authorizer of the gateway route API Gateway picks for a request (exact path first, then {proxy+})."""
    for key in ((method, path), ("ANY", path)):
        if key in routes:
            return routes[key]
    greedy = [p for m, p in routes if p.endswith("/{proxy+}") and path.startswith(p.removesuffix("{proxy+}"))]
    return routes[("ANY", max(greedy, key=len))] if greedy else None


def test_every_api_route_reaches_the_function_with_its_auth(sam: dict[str, Any]) -> None:
    from dispatcher.api import ROUTES

    gateway = {
        (e["Properties"]["Method"].upper(), e["Properties"]["Path"]): e["Properties"].get("Auth", {}).get("Authorizer")
        for e in sam_function(sam, "http")["Events"].values()
        if e["Type"] == "HttpApi"
    }
    for route in ROUTES:
        expected = "AWS_IAM" if route.management else "NONE"
        assert _gateway_route(gateway, route.method, route.path) == expected, (route.method, route.path)
    # An open gateway route is an open route of the API, nothing wider.
    open_routes = {(r.method, r.path) for r in ROUTES if not r.management}
    assert {key for key, auth in gateway.items() if auth == "NONE"} == open_routes


def test_http_api_is_throttled_so_the_open_callback_route_cannot_be_flooded(
    sam: dict[str, Any], sls: dict[str, Any]
) -> None:
    sam_settings = sam_resources(sam)["HttpApi"]["Properties"]["DefaultRouteSettings"]
    sls_settings = sls["resources"]["extensions"]["HttpApiStage"]["Properties"]["DefaultRouteSettings"]
    assert refs(sam_settings["ThrottlingRateLimit"]) == {"CallbackRateLimit"}
    assert refs(sam_settings["ThrottlingBurstLimit"]) == {"CallbackBurstLimit"}
    assert sls_param(sls, sls_settings["ThrottlingRateLimit"]) == str(sam["Parameters"]["CallbackRateLimit"]["Default"])
    assert sls_param(sls, sls_settings["ThrottlingBurstLimit"]) == str(
        sam["Parameters"]["CallbackBurstLimit"]["Default"]
    )


def test_alarms(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    for name, resources in both(sam, sls):
        alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
        watched = {(str(a["Namespace"]), a["MetricName"]) for a in alarms}
        assert ("AWS/Lambda", "Errors") in watched, f"{name}: dispatcher errors"
        [lag] = [a for a in alarms if a["MetricName"] == "DispatchLag"]
        assert refs(lag["Namespace"]) == {"AWS::StackName"}, f"{name}: the stack's own metric namespace"
        # No data means no run was admitted late: it must not alarm at a schedule slower than the period.
        assert lag["TreatMissingData"] == "notBreaching", name
        [silent] = [a for a in alarms if a["MetricName"] == "Invocations"]
        assert silent["Namespace"] == "AWS/Lambda" and silent["ComparisonOperator"] == "LessThanThreshold", name
        assert silent["TreatMissingData"] == "breaching", f"{name}: a dispatcher that never runs alarms"
        assert refs(silent["Dimensions"]) in ({"DispatchFunction"}, {"DispatchLambdaFunction"}), name
        dlq_alarms = {
            frozenset(refs(a["Dimensions"]))
            for a in alarms
            if (a["Namespace"], a["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
        }
        assert dlq_alarms == {frozenset({"DispatchDLQ"}), frozenset({"EcsEventsDLQ"})}, f"{name}: DLQ depth"
        errors = next(a for a in alarms if a["MetricName"] == "Errors")
        assert refs(errors["Dimensions"]) in ({"DispatchFunction"}, {"DispatchLambdaFunction"}), name


def test_lag_alarm_watches_what_the_handler_emits(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    sam_lag = next(r for r in sam_resources(sam).values() if r["Properties"].get("MetricName") == "DispatchLag")
    sls_lag = next(r for r in sls_resources(sls).values() if r["Properties"].get("MetricName") == "DispatchLag")
    for function in FUNCTIONS:
        sam_namespace = sam_function(sam, function)["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
        assert sam_namespace == sam_lag["Properties"]["Namespace"] == {"Fn::Sub": "pushpool/${AWS::StackName}"}
        sls_namespace = sls_function(sls, function)["environment"]["POWERTOOLS_METRICS_NAMESPACE"]
        assert sls_namespace == sls_lag["Properties"]["Namespace"]
        assert sls_namespace == {"Fn::Join": ["", ["pushpool/", {"Ref": "AWS::StackName"}]]}
    aws_lambda = importlib.import_module("handlers.aws_lambda")
    assert aws_lambda.SERVICE == "pushpool"  # Powertools' default dimension: service=pushpool


# environment and the secret ---------------------------------------------------------------------------------
def test_environment(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    for function in FUNCTIONS:
        sam_env = sam_function(sam, function)["Environment"]["Variables"]
        sls_env = sls_function(sls, function)["environment"]
        assert set(sam_env) == set(sls_env), function
        assert sam_env["PUSHPOOL_STORE"] == {"Fn::Sub": "dynamodb://${Table}?region=${AWS::Region}"}
        assert refs(sls_env["PUSHPOOL_STORE"]) == {"Table", "AWS::Region"}
        assert refs(sam_env["PUSHPOOL_RUN_RETENTION_DAYS"]) == {"RunRetentionDays"}
        assert refs(sam_env["LOG_LEVEL"]) == {"LogLevel"}
        assert sls_param(sls, sls_env["PUSHPOOL_RUN_RETENTION_DAYS"]) == str(
            sam["Parameters"]["RunRetentionDays"]["Default"]
        )
        # The secret: only where it is used, as a Secrets Manager ARN read at cold start.
        has_secret = function in ("dispatch", "http")
        assert ("PUSHPOOL_SECRET_ARN" in sam_env) is has_secret, function
        if has_secret:
            assert refs(sam_env["PUSHPOOL_SECRET_ARN"]) == refs(sls_env["PUSHPOOL_SECRET_ARN"]) == {"CallbackSecret"}
    for name, resources in both(sam, sls):
        assert resources["CallbackSecret"]["Type"] == "AWS::SecretsManager::Secret", name
    assert "PUSHPOOL_CALLBACK_BASE_URL" in sam_function(sam, "dispatch")["Environment"]["Variables"]
    # Task output goes to the stack's log group, which has a retention; the execution role need not create it.
    assert refs(sam_function(sam, "dispatch")["Environment"]["Variables"]["PUSHPOOL_ECS_LOG_GROUP"]) == {"TaskLogGroup"}
    assert refs(sls_function(sls, "dispatch")["environment"]["PUSHPOOL_ECS_LOG_GROUP"]) == {"TaskLogGroup"}
    for name, resources in both(sam, sls):
        group = resources["TaskLogGroup"]
        assert group["Type"] == "AWS::Logs::LogGroup", name
        assert refs(group["Properties"]["RetentionInDays"]) & {"TaskLogRetentionDays", "param:taskLogRetentionDays"}
    assert "HttpApi" in refs(sam_function(sam, "dispatch")["Environment"]["Variables"]["PUSHPOOL_CALLBACK_BASE_URL"])


def test_parameters(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    sam_params = set(sam["Parameters"])
    assert {
        "ScheduleRate",
        "RunRetentionDays",
        "LogLevel",
        "ClusterArns",
        "TaskRoleArns",
        "ExecutionRoleArns",
    } <= sam_params
    used = {m for m in re.findall(r"\$\{param:(\w+)", SLS_PATH.read_text())}
    assert {"scheduleRate", "runRetentionDays", "logLevel", "clusterArns", "taskRoleArns", "executionRoleArns"} <= used
    assert {p[0].lower() + p[1:] for p in sam_params} == used, "the same parameters, camelCased in serverless.yml"
    # The lists may be empty (the quickstart's cluster and roles, or no ECS at all): each IAM statement over one
    # exists only when it is not (IAM refuses an empty Resource).
    for name in ("ClusterArns", "TaskRoleArns", "ExecutionRoleArns"):
        assert sam["Parameters"][name]["Default"] == ""
        assert sls["params"]["default"][name[0].lower() + name[1:]] == ""
        assert re.compile(sam["Parameters"][name]["AllowedPattern"]).fullmatch("")
    # Each ARN is checked by CloudFormation before anything is created (per item of a CommaDelimitedList).
    arns = {
        "ClusterArns": ("arn:aws:ecs:us-east-1:123456789012:cluster/pushpool", "pushpool"),
        "TaskRoleArns": ("arn:aws:iam::123456789012:role/pushpool-task", "arn:aws:iam::123456789012:user/x"),
        "ExecutionRoleArns": ("arn:aws-cn:iam::123456789012:role/path/exec", "role/exec"),
    }
    for name, (good, bad) in arns.items():
        pattern = re.compile(sam["Parameters"][name]["AllowedPattern"])
        assert pattern.fullmatch(good) and not pattern.fullmatch(bad), name
        assert sam["Parameters"][name]["ConstraintDescription"], name


def test_the_template_env_allow_list_is_a_parameter_given_to_dispatch_and_http(
    sam: dict[str, Any], sls: dict[str, Any]
) -> None:
    param = sam["Parameters"]["TemplateEnv"]
    assert param["Default"] == "" and sls["params"]["default"]["templateEnv"] == ""  # templates read nothing
    pattern = re.compile(param["AllowedPattern"])
    for good in ("", "AWS_REGION", "AWS_REGION,PUSHPOOL_ECS_LOG_GROUP", "_X1"):
        assert pattern.fullmatch(good), good
    for bad in ("AWS_REGION, X", "1X", "$X", "A,,B", "A,", "A-B"):
        assert not pattern.fullmatch(bad), bad
    for function in FUNCTIONS:
        sam_env = sam_function(sam, function)["Environment"]["Variables"]
        sls_env = sls_function(sls, function)["environment"]
        renders_or_checks = function in ("dispatch", "http")  # jobs rendered; templates written through the API
        assert ("PUSHPOOL_TEMPLATE_ENV" in sam_env) is renders_or_checks, function
        if renders_or_checks:
            assert refs(sam_env["PUSHPOOL_TEMPLATE_ENV"]) == {"TemplateEnv"}, function
            assert sls_env["PUSHPOOL_TEMPLATE_ENV"] == "${param:templateEnv}", function
    assert "TemplateEnv=" in GUIDE_PATH.read_text() and "templateEnv=" in GUIDE_PATH.read_text()


def test_only_the_dispatch_function_holds_the_modal_token_and_an_api_cancel_needs_none(
    sam: dict[str, Any], sls: dict[str, Any]
) -> None:
    # A cancel through the http function only writes CANCELLING and wakes the dispatch function, whose pass stops
    # the job (tests/test_handlers_aws.py, a Modal run cancelled through the http function with no token).
    for function in FUNCTIONS:
        has_token = function == "dispatch"
        assert ("PUSHPOOL_MODAL_TOKEN_SECRET" in sam_function(sam, function)["Environment"]["Variables"]) is has_token
        assert ("PUSHPOOL_MODAL_TOKEN_SECRET" in sls_function(sls, function)["environment"]) is has_token
    for name, resources in both(sam, sls):
        for function, role in ROLES.items():
            readable = [s for s in role_statements(resources, role) if "secretsmanager:GetSecretValue" in actions(s)]
            modal = [s for s in readable if "modal" in json.dumps(s.get("Resource")).lower()]
            assert bool(modal) is (function == "dispatch"), f"{name} {function}"


# least privilege --------------------------------------------------------------------------------------------
def all_statements(resources: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for logical_id, resource in resources.items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            found += [(logical_id, s) for s in role_statements(resources, logical_id)]
        for policy in as_list(props.get("Policies", [])) if resource["Type"] == "AWS::Serverless::Function" else []:
            if isinstance(policy, dict) and "Statement" in policy:
                found += [(logical_id, s) for s in as_list(policy["Statement"])]
    return found


def test_no_wildcard_actions_and_dynamodb_is_item_level_on_the_table(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    for name, resources in both(sam, sls):
        statements = all_statements(resources)
        assert statements, name
        for owner, statement in statements:
            where = f"{name} {owner} {statement.get('Sid')}"
            assert statement["Effect"] == "Allow", where
            for action in actions(statement):
                assert "*" not in action, f"{where}: wildcard action {action}"
            dynamo = {a for a in actions(statement) if a.startswith("dynamodb:")}
            if dynamo:
                assert dynamo <= DYNAMODB_ITEM_ACTIONS, f"{where}: {dynamo - DYNAMODB_ITEM_ACTIONS}"
                resource_list = as_list(statement["Resource"])
                assert "*" not in resource_list, where
                assert all(refs(r) == {"Table"} for r in resource_list), f"{where}: the table and its indexes only"
                assert len(resource_list) == 2, f"{where}: the table and table/index/*"
                assert any("/index/*" in str(r) for r in resource_list), where


def test_each_role_has_what_its_function_needs_and_no_more(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    for name, resources in both(sam, sls):
        granted = {
            function: set().union(*(actions(s) for s in role_statements(resources, role)))
            for function, role in ROLES.items()
        }
        for function in FUNCTIONS:
            assert granted[function] >= DYNAMODB_ITEM_ACTIONS, f"{name} {function}"
        assert ECS_CLUSTER_ACTIONS | {"iam:PassRole", "secretsmanager:GetSecretValue"} <= granted["dispatch"], name
        assert granted["ecs_events"] >= SQS_CONSUME, name
        assert "secretsmanager:GetSecretValue" in granted["http"], name
        for function in ("ecs_events", "http"):
            assert not {a for a in granted[function] if a.startswith(("ecs:", "iam:", "ec2:"))}, f"{name} {function}"
        assert not granted["ecs_events"] & {"secretsmanager:GetSecretValue"}, name
        assert not {a for a in granted["http"] if a.startswith("sqs:")}, name
        assert not {a for a in granted["dispatch"] if a.startswith("sqs:")} - {"sqs:SendMessage"}, name


def test_pass_role_and_ecs_are_scoped(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    for name, resources in both(sam, sls):
        statements = role_statements(resources, ROLES["dispatch"])
        passes = [s for s in statements if "iam:PassRole" in actions(s)]
        quickstart_roles = frozenset({"EcsQuickstartTaskRole", "EcsQuickstartExecutionRole"})
        assert {frozenset(refs(s["Resource"])) for s in passes} in (
            {frozenset({"TaskRoleArns"}), frozenset({"ExecutionRoleArns"}), quickstart_roles},
            {frozenset({"param:taskRoleArns"}), frozenset({"param:executionRoleArns"}), quickstart_roles},
        ), name
        # Each exists only when it has something to allow.
        conditions = statement_conditions(resources, ROLES["dispatch"])
        assert conditions["PassTaskRoles"] == "HasTaskRoleArns", name
        assert conditions["PassExecutionRoles"] == "HasExecutionRoleArns", name
        assert conditions["PassQuickstartRoles"] == "EcsQuickstart", name
        assert conditions["EcsTasksInClusters"] == "HasClusterArns", name
        assert conditions["EcsTasksInQuickstartCluster"] == "EcsQuickstart", name
        for statement in passes:
            assert actions(statement) == {"iam:PassRole"}, name
            assert statement["Condition"]["StringEquals"]["iam:PassedToService"] == "ecs-tasks.amazonaws.com", name
        for statement in statements:
            if actions(statement) & ECS_CLUSTER_ACTIONS:
                condition = statement["Condition"]["ArnEquals"]["ecs:cluster"]
                assert refs(condition) & {"ClusterArns", "param:clusterArns", "EcsQuickstartCluster"}, name
            if "ecs:TagResource" in actions(statement):
                assert set(statement["Condition"]["StringEquals"]["ecs:CreateAction"]) == {
                    "RegisterTaskDefinition",
                    "RunTask",
                }
            if statement["Resource"] == "*":
                assert actions(statement) <= {
                    *ECS_CLUSTER_ACTIONS,
                    "ecs:RegisterTaskDefinition",
                    "ecs:DescribeTaskDefinition",
                    "ecs:TagResource",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeVpcs",
                    "ec2:DescribeRouteTables",
                    "xray:PutTraceSegments",
                    "xray:PutTelemetryRecords",
                }, f"{name}: {statement.get('Sid')} needs a resource"


def test_the_dispatch_role_allows_every_ec2_call_the_ecs_provider_makes(
    sam: dict[str, Any], sls: dict[str, Any]
) -> None:
    # The provider names each AWS operation it calls (`_call("DescribeVpcs", ec2.describe_vpcs, ...)`); a call the
    # role does not allow is an AccessDenied that CRASHES every run of a pool without vpc_id on a real account.
    source = (ROOT / "dispatcher" / "providers" / "ecs.py").read_text()
    called = {f"ec2:{op}" for op in re.findall(r'"(Describe(?:Vpcs|Subnets|RouteTables|SecurityGroups))"', source)}
    assert {"ec2:DescribeVpcs", "ec2:DescribeSubnets"} <= called
    for name, resources in both(sam, sls):
        granted = set().union(*(actions(s) for s in role_statements(resources, ROLES["dispatch"])))
        assert called <= granted, f"{name}: the dispatch role lacks {called - granted}"


def test_serverless_deployment_bucket_can_be_removed(sls: dict[str, Any]) -> None:
    # `serverless remove` cannot empty a versioned deployment bucket, so the stack could never be removed.
    assert not sls["provider"]["deploymentBucket"].get("versioning")


def test_roles_match_between_files(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    for role in (*ROLES.values(), *QUICKSTART_ROLES):
        sam_view = {s["Sid"]: actions(s) for s in role_statements(sam_resources(sam), role)}
        sls_view = {s["Sid"]: actions(s) for s in role_statements(sls_resources(sls), role)}
        assert sam_view == sls_view, role


def test_both_files_define_the_same_resources(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    # Serverless makes the functions, their log groups, the HTTP API and the schedule from `functions:`.
    made_by_sam_or_serverless = {
        *SAM_FUNCTIONS.values(),
        "DispatchLogGroup",
        "EcsEventsLogGroup",
        "HttpLogGroup",
        "HttpApi",
        "ApiAccessLogGroup",
    }
    assert set(sam_resources(sam)) - made_by_sam_or_serverless == set(sls_resources(sls))


# the ECS quickstart (CreateEcsQuickstart=true) ------------------------------------------------------------------
def canonical(value: Any, *, params: dict[str, str] | None = None) -> Any:
    """A value with each file's spelling of the same thing made one: Ref, GetAtt, Sub and Join become `${...}`
    texts, and `${param:x}` becomes `${X}` (the SAM parameter), so SAM's and Serverless' resources compare equal."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return f"${{{value['Ref']}}}"
        if set(value) == {"Fn::GetAtt"}:
            target = value["Fn::GetAtt"]
            return f"${{{'.'.join(target) if isinstance(target, list) else target}}}"
        if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
            return value["Fn::Sub"]
        if set(value) == {"Fn::Join"}:
            separator, parts = value["Fn::Join"]
            parts = [canonical(p) for p in parts] if isinstance(parts, list) else [canonical(parts)]
            if all(isinstance(p, str) for p in parts):
                return separator.join(parts)
        return {key: canonical(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [canonical(inner) for inner in value]
    if isinstance(value, str):
        return re.sub(r"\$\{param:(\w)(\w*)\}", lambda m: f"${{{m.group(1).upper()}{m.group(2)}}}", value)
    return value


# What CloudFormation would print for each quickstart resource (Ref or GetAtt), in AWS's shapes.
PHYSICAL = {
    "EcsQuickstartCluster": "arn:aws:ecs:us-east-1:123456789012:cluster/s-EcsQuickstartCluster-AbC",
    "EcsQuickstartTaskRole": "arn:aws:iam::123456789012:role/s-EcsQuickstartTaskRole-AbC",
    "EcsQuickstartExecutionRole": "arn:aws:iam::123456789012:role/s-EcsQuickstartExecutionRole-AbC",
    "EcsQuickstartVpc": "vpc-0a1b",
    "EcsQuickstartSubnetA": "subnet-0a",
    "EcsQuickstartSubnetB": "subnet-0b",
    "EcsQuickstartSecurityGroup": "sg-01",
    "TaskLogGroup": "/pushpool/s/tasks",
}


def quickstart_resources(resources: dict[str, Any]) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r.get("Condition") in QUICKSTART_CONDITIONS}


def quickstart_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    return {name: o for name, o in outputs.items() if o.get("Condition") in QUICKSTART_CONDITIONS}


def test_the_quickstart_is_off_by_default_and_its_condition_gates_every_part_of_it(
    sam: dict[str, Any], sls: dict[str, Any]
) -> None:
    parameter = sam["Parameters"]["CreateEcsQuickstart"]
    assert parameter["Default"] == "false" and set(parameter["AllowedValues"]) == {"true", "false"}
    assert sls["params"]["default"]["createEcsQuickstart"] == "false"
    network = sam["Parameters"]["EcsQuickstartNetwork"]
    assert set(network["AllowedValues"]) == {"create", "default-vpc"}
    assert sls["params"]["default"]["ecsQuickstartNetwork"] == network["Default"] == "create"
    for name, conditions in (
        ("infra/template.yaml", sam["Conditions"]),
        ("serverless.yml", sls["resources"]["Conditions"]),
    ):
        assert canonical(conditions["EcsQuickstart"]) == {"Fn::Equals": ["${CreateEcsQuickstart}", "true"]}, name
        # The network is part of the quickstart: never created without it.
        created = canonical(conditions["EcsQuickstartCreatesNetwork"])
        assert created == {
            "Fn::And": [{"Condition": "EcsQuickstart"}, {"Fn::Equals": ["${EcsQuickstartNetwork}", "create"]}]
        }
    for name, resources in both(sam, sls):
        gated = quickstart_resources(resources)
        assert set(gated) == {n for n in resources if n.startswith("EcsQuickstart")}, f"{name}: every one gated"
        network = {n for n, r in gated.items() if r["Type"].startswith("AWS::EC2::")}
        assert {n for n, r in gated.items() if r["Condition"] == "EcsQuickstartCreatesNetwork"} == network, name
        assert {r["Type"] for r in gated.values()} == {
            "AWS::ECS::Cluster",
            "AWS::IAM::Role",
            "AWS::EC2::VPC",
            "AWS::EC2::Subnet",
            "AWS::EC2::InternetGateway",
            "AWS::EC2::VPCGatewayAttachment",
            "AWS::EC2::RouteTable",
            "AWS::EC2::Route",
            "AWS::EC2::SubnetRouteTableAssociation",
            "AWS::EC2::SecurityGroup",
        }, name
        # What is not gated names a quickstart resource only inside `Fn::If [EcsQuickstart, ..., NoValue]`: a
        # reference to a resource the stack did not create fails the deploy.
        for owner, resource in resources.items():
            if owner not in gated:
                text = json_without_ifs(resource)
                assert "EcsQuickstart" not in text, f"{name}: {owner} names the quickstart outside its condition"
        for output, value in (sam["Outputs"] if name.startswith("infra") else sls["resources"]["Outputs"]).items():
            if value.get("Condition") not in QUICKSTART_CONDITIONS:
                assert not {r for r in refs(value) if r.startswith("EcsQuickstart")}, f"{name}: output {output}"


def json_without_ifs(value: Any) -> str:
    """The text of a value as the stack is without the quickstart: each `Fn::If` on its condition takes its else."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"} and value["Fn::If"][0] in QUICKSTART_CONDITIONS:
            return json_without_ifs(value["Fn::If"][2])
        return "{" + ",".join(f"{k}:{json_without_ifs(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_without_ifs(v) for v in value) + "]"
    return str(value)


def test_the_quickstart_outputs_are_the_job_variables_of_an_ecs_push_pool(
    sam: dict[str, Any], sls: dict[str, Any]
) -> None:
    variables = default_template("ecs:push")["variables"]["properties"]
    assert ecs_quickstart.quickstart_variables() == set(variables)
    for name, outputs in (("infra/template.yaml", sam["Outputs"]), ("serverless.yml", sls["resources"]["Outputs"])):
        named = {key: ecs_quickstart.variable_name(key) for key in outputs}
        quickstart = quickstart_outputs(outputs)
        # Exactly the quickstart's outputs are named after job variables (what --from-stack reads).
        assert {key for key, variable in named.items() if variable in variables} == set(quickstart), name
        assert {named[key] for key in quickstart} >= {*ecs_quickstart.REQUIRED, "vpc_id", "network_configuration"}
        network = {named[k] for k, o in quickstart.items() if o["Condition"] == "EcsQuickstartCreatesNetwork"}
        assert network == {"vpc_id", "network_configuration"}, name
        # The values, as the stack would print them, are valid values of their variables.
        printed = {}
        for key, output in quickstart.items():
            text = canonical(output["Value"])
            assert isinstance(text, str), f"{name}: output {key} is one text"
            printed[key] = re.sub(r"\$\{([A-Za-z0-9:]+)(\.\w+)?\}", lambda m: PHYSICAL.get(m.group(1), "x"), text)
        values = ecs_quickstart.job_variables(printed, default_template("ecs:push"), stack="s")
        validate_job_variables(default_template("ecs:push"), values, field=name, enforce_required=False)
        assert values["configure_cloudwatch_logs"] is True
        assert values["cloudwatch_logs_options"] == {"awslogs-group": "/pushpool/s/tasks"}, name
        assert values["vpc_id"] == "vpc-0a1b" and values["task_role_arn"] == PHYSICAL["EcsQuickstartTaskRole"]
        assert values["network_configuration"] == {
            "subnets": ["subnet-0a", "subnet-0b"],
            "securityGroups": ["sg-01"],
            "assignPublicIp": "ENABLED",
        }, name


def test_the_quickstart_security_group_lets_nothing_in(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    for name, resources in both(sam, sls):
        [group] = [n for n, r in quickstart_resources(resources).items() if r["Type"] == "AWS::EC2::SecurityGroup"]
        props = resources[group]["Properties"]
        assert "SecurityGroupIngress" not in props, name
        assert not [r for r in resources.values() if r["Type"] == "AWS::EC2::SecurityGroupIngress"], (
            f"{name}: no ingress rule anywhere"
        )
        [egress] = props["SecurityGroupEgress"]
        assert egress["IpProtocol"] == "-1" and egress["CidrIp"] == "0.0.0.0/0", name
        # The public subnets route to the internet gateway; tasks get their public IP from RunTask only.
        subnets = [r for r in quickstart_resources(resources).values() if r["Type"] == "AWS::EC2::Subnet"]
        assert len(subnets) == 2 and all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets), name
        assert len({json.dumps(canonical(s["Properties"]["AvailabilityZone"])) for s in subnets}) == 2, name
        [route] = [r for r in quickstart_resources(resources).values() if r["Type"] == "AWS::EC2::Route"]
        assert route["Properties"]["DestinationCidrBlock"] == "0.0.0.0/0", name
        assert refs(route["Properties"]["GatewayId"]) == {"EcsQuickstartInternetGateway"}, name


def test_the_quickstart_roles_trust_ecs_tasks_and_hold_only_what_a_task_needs(
    sam: dict[str, Any], sls: dict[str, Any]
) -> None:
    for name, resources in both(sam, sls):
        for role in QUICKSTART_ROLES:
            [trust] = resources[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
            assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}, f"{name} {role}"
            assert trust["Action"] == "sts:AssumeRole" and trust["Effect"] == "Allow", f"{name} {role}"
            assert "ManagedPolicyArns" not in resources[role]["Properties"], f"{name} {role}"
        assert not role_statements(resources, "EcsQuickstartTaskRole"), f"{name}: the task role allows nothing"
        statements = role_statements(resources, "EcsQuickstartExecutionRole")
        granted = set().union(*(actions(s) for s in statements))
        assert granted == TASK_EXECUTION_ACTIONS | {"logs:CreateLogGroup"}, name
        for statement in statements:
            if any(a.startswith("logs:") for a in actions(statement)):
                # The stack's task log group (with its retention), and log groups under its name only.
                assert "TaskLogGroup" in refs(statement["Resource"]), name
                for resource in as_list(statement["Resource"]):
                    text = canonical(resource)
                    assert text == "${TaskLogGroup.Arn}" or text.endswith(":log-group:/pushpool/${AWS::StackName}/*"), (
                        f"{name}: {text}"
                    )
            elif statement["Resource"] == "*":
                assert actions(statement) == {"ecr:GetAuthorizationToken"}, f"{name}: only the token takes no resource"
        # The dispatch role may pass both (to ECS only), and may start tasks in the quickstart's cluster.
        dispatch = role_statements(resources, ROLES["dispatch"])
        passed = set().union(*(refs(s["Resource"]) for s in dispatch if "iam:PassRole" in actions(s)))
        assert set(QUICKSTART_ROLES) <= passed, name
        clusters = [s for s in dispatch if actions(s) & ECS_CLUSTER_ACTIONS]
        assert any(refs(s["Condition"]) == {"EcsQuickstartCluster"} for s in clusters), name


def test_both_files_define_the_same_quickstart(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    sam_parts, sls_parts = quickstart_resources(sam_resources(sam)), quickstart_resources(sls_resources(sls))
    assert sam_parts and set(sam_parts) == set(sls_parts)
    for name in sam_parts:
        assert canonical(sam_parts[name]) == canonical(sls_parts[name]), name
    sam_out, sls_out = quickstart_outputs(sam["Outputs"]), quickstart_outputs(sls["resources"]["Outputs"])
    assert canonical(sam_out) == canonical(sls_out)
    for condition in (*QUICKSTART_CONDITIONS, "HasClusterArns", "HasTaskRoleArns", "HasExecutionRoleArns"):
        # (SAM joins a list parameter into one text; Serverless' param already is one: the same once canonical.)
        assert canonical(sam["Conditions"][condition]) == canonical(sls["resources"]["Conditions"][condition]), (
            condition
        )


# the guide --------------------------------------------------------------------------------------------------
def test_guide_names_only_real_parameters_and_outputs(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    guide = GUIDE_PATH.read_text()
    joined = guide.replace("\\\n", " ")  # shell line continuations
    overrides = " ".join(re.findall(r"--parameter-overrides[^\n]*", joined))
    sam_overrides = re.findall(r"\b([A-Z][A-Za-z]+)=", overrides)
    assert sam_overrides, "the guide shows sam deploy's parameter overrides"
    assert set(sam_overrides) <= set(sam["Parameters"]), set(sam_overrides) - set(sam["Parameters"])
    sls_params = set(re.findall(r"--param=\"?(\w+)=", guide))
    assert sls_params, "the guide shows serverless deploy's --param"
    used = set(re.findall(r"\$\{param:(\w+)", SLS_PATH.read_text()))
    assert sls_params <= used, sls_params - used
    outputs = set(re.findall(r"OutputKey=='?(\w+)'?|Outputs\[\?OutputKey==`(\w+)`\]", guide))
    named = {o for pair in outputs for o in pair if o}
    assert named, "the guide reads the stack's outputs"
    assert named <= set(sam["Outputs"]) and named <= set(sls["resources"]["Outputs"]), named
    assert "infra/template.yaml" in guide and "serverless" in guide


# the Lambda build ---------------------------------------------------------------------------------------------
def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_lambda_package_is_built_from_pinned_versions() -> None:
    # A deploy must package what the commit was tested with: every dependency of the package and of each cloud
    # extra is pinned exactly, and the build passes the pins to pip.
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra, requirements in project["optional-dependencies"].items():
        if extra != "dev":
            wanted += requirements
    names = {_normalise(re.match(r"[A-Za-z0-9_.-]+", r).group(0)) for r in wanted}  # type: ignore[union-attr]
    names.discard("pushpool")
    lines = (ROOT / "infra" / "lambda" / "constraints.txt").read_text().splitlines()
    pins = dict(line.split("==", 1) for line in lines if line and not line.startswith("#"))
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version) for version in pins.values()), "exact versions"
    pinned = {_normalise(name) for name in pins}
    assert names <= pinned, f"not pinned: {sorted(names - pinned)}; run `make lambda-lock`"
    assert '--constraint "$constraints"' in (ROOT / "infra" / "build_lambda.sh").read_text()


# wake-ups (issue 16) ----------------------------------------------------------------------------------------
def _dispatch_name(name: str, sam: dict[str, Any], sls: dict[str, Any]) -> str:
    """The dispatch function's name as the file writes it (a Sub string in SAM, ${...} variables in Serverless)."""
    if name == "infra/template.yaml":
        return str(sam_function(sam, "dispatch")["FunctionName"]["Fn::Sub"])
    return str(sls["functions"][SLS_FUNCTIONS["dispatch"]]["name"])


def _arn_text(resource: Any) -> str:
    """A Sub or Join ARN as one string (Refs as ${Name}), to compare its tail."""
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        return str(resource["Fn::Sub"])
    if isinstance(resource, dict) and "Fn::Join" in resource:
        return "".join(f"${{{p['Ref']}}}" if isinstance(p, dict) else str(p) for p in resource["Fn::Join"][1])
    return str(resource)


def test_http_and_ecs_events_are_told_the_dispatch_function_by_name(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    for name, env_of in (
        ("infra/template.yaml", lambda f: sam_function(sam, f)["Environment"]["Variables"]),
        ("serverless.yml", lambda f: sls_function(sls, f)["environment"]),
    ):
        dispatch_name = _dispatch_name(name, sam, sls)
        for function in ("http", "ecs_events"):
            value = env_of(function)["PUSHPOOL_DISPATCH_FUNCTION"]
            assert (value["Fn::Sub"] if isinstance(value, dict) else value) == dispatch_name, f"{name} {function}"
        # The dispatch function invokes itself by the name Lambda gives its context.
        assert "PUSHPOOL_DISPATCH_FUNCTION" not in env_of("dispatch"), name
    assert _dispatch_name("infra/template.yaml", sam, sls) == "${AWS::StackName}-dispatch"
    # Serverless' stack is named service-stage, so both files name the function <stack>-dispatch.
    assert _dispatch_name("serverless.yml", sam, sls) == "${self:service}-${sls:stage}-dispatch"


def test_each_function_may_invoke_the_dispatch_function_and_no_other(sam: dict[str, Any], sls: dict[str, Any]) -> None:
    for name, resources in both(sam, sls):
        dispatch_name = _dispatch_name(name, sam, sls)
        for function, role in ROLES.items():
            statements = [
                s for s in role_statements(resources, role) if any(a.startswith("lambda:") for a in actions(s))
            ]
            assert len(statements) == 1, f"{name} {function}: one statement grants Lambda"
            [statement] = statements
            assert actions(statement) == {"lambda:InvokeFunction"}, f"{name} {function}"
            [resource] = as_list(statement["Resource"])
            text = _arn_text(resource)
            assert text.startswith("arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:"), text
            assert text.endswith(f":function:{dispatch_name}"), f"{name} {function}: {text}"
            assert "*" not in text and "Condition" not in statement, f"{name} {function}: that one function only"


def test_no_function_refers_to_the_dispatch_function_so_the_stack_has_no_cycle(
    sam: dict[str, Any], sls: dict[str, Any]
) -> None:
    # DispatchFunction refers to HttpApi (its callback base URL), whose routes refer to HttpFunction: a Ref from
    # HttpFunction (or its role) to DispatchFunction would close a cycle CloudFormation refuses.
    for name, resources, dispatch_id in (
        ("infra/template.yaml", sam_resources(sam), "DispatchFunction"),
        ("serverless.yml", {**sls_resources(sls), **sls["functions"]}, "DispatchLambdaFunction"),
    ):
        for logical_id in (*ROLES.values(), "HttpFunction", "EcsEventsFunction", "http", "ecsEvents"):
            if logical_id in resources:
                assert dispatch_id not in refs(resources[logical_id]), f"{name} {logical_id}"
    assert "HttpApi" in refs(sam_function(sam, "dispatch")["Environment"]), "the reason the names are used"


# the deploying user's permissions ------------------------------------------------------------------------------
# The action CloudFormation calls, as the deploying user, to create a resource of each type (and what SAM makes
# of a function's events); any other type is made by `<service>:Create<Type>`.
CREATING_ACTIONS = {
    "AWS::Serverless::Function": "lambda:CreateFunction",
    "AWS::Serverless::HttpApi": "apigateway:POST",
    "AWS::EC2::VPCGatewayAttachment": "ec2:AttachInternetGateway",
    "AWS::EC2::SubnetRouteTableAssociation": "ec2:AssociateRouteTable",
    "AWS::SQS::QueuePolicy": "sqs:SetQueueAttributes",
    "AWS::Events::Rule": "events:PutRule",
    "AWS::CloudWatch::Alarm": "cloudwatch:PutMetricAlarm",
}
EVENT_ACTIONS = {
    "Schedule": "events:PutRule",
    "SQS": "lambda:CreateEventSourceMapping",
    "HttpApi": "lambda:AddPermission",
}
# IAM actions that are permissions only, or spelled otherwise than their API operation (so not in botocore).
PERMISSION_ONLY = {
    "iam:PassRole",
    "dynamodb:ConditionCheckItem",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "s3:PutBucketPublicAccessBlock",
    "s3:PutEncryptionConfiguration",
    "s3:ListBucket",
}


def documented_actions() -> set[str]:
    guide = GUIDE_PATH.read_text()
    start = guide.index("## IAM permissions of the deploying user")
    section = guide[start : guide.index("\n## ", start + 1)]
    return set(re.findall(r"`([a-z0-9-]+:[A-Za-z0-9]+)`", section))


def creating_action(resource_type: str) -> str:
    if resource_type in CREATING_ACTIONS:
        return CREATING_ACTIONS[resource_type]
    _, service, kind = resource_type.split("::")
    return f"{service.lower()}:Create{kind}"


def test_the_guide_lists_a_permission_for_every_resource_the_deploy_files_create(
    sam: dict[str, Any], sls: dict[str, Any]
) -> None:
    documented = {action.lower() for action in documented_actions()}  # IAM action names are case-insensitive
    needed = {creating_action(r["Type"]) for _, resources in both(sam, sls) for r in resources.values()}
    for resource in sam_resources(sam).values():
        if resource["Type"] == "AWS::Serverless::Function":
            needed |= {EVENT_ACTIONS[e["Type"]] for e in resource["Properties"].get("Events", {}).values()}
    # Serverless' deployment bucket and function versions, SAM's artifact bucket, and giving the roles to Lambda.
    needed |= {"s3:CreateBucket", "s3:PutObject", "lambda:PublishVersion", "iam:PassRole"}
    needed |= {"cloudformation:CreateChangeSet", "cloudformation:ExecuteChangeSet", "cloudformation:DescribeStacks"}
    missing = sorted(a for a in needed if a.lower() not in documented)
    assert not missing, f"docs/deploy.md does not list {missing}"
    services = {a.split(":")[0] for a in documented}
    wanted = {"cloudformation", "iam", "lambda", "dynamodb", "sqs", "events", "apigateway", "logs", "ecs", "ec2"}
    assert wanted | {"secretsmanager", "s3"} <= services, sorted(wanted - services)


def test_every_listed_permission_is_a_real_action() -> None:
    # An action botocore knows as an API operation of its service, or one of the few permission-only names.
    import botocore.session

    session = botocore.session.get_session()
    unknown = []
    for action in sorted(documented_actions() - PERMISSION_ONLY):
        service, operation = action.split(":")
        if service == "apigateway":  # API Gateway's IAM actions are the HTTP verbs
            assert operation in {"GET", "POST", "PUT", "PATCH", "DELETE"}, action
            continue
        if operation not in session.get_service_model(service).operation_names:
            unknown.append(action)
    assert not unknown, f"not actions of their service: {unknown}"

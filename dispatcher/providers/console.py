"""Where a run's infrastructure can be seen in its provider's web console, for the dashboard's run page.

One rule per pool type, each reading the infrastructure id with its provider's own `split_infrastructure_id`.
A provider module is imported only when a run of its type is shown; an id that provider did not make, or
a type without a console (process), gives None and the page shows the id unlinked.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from ..errors import PushpoolError


def _ecs(infrastructure_id: str) -> str:
    from .ecs import _TASK_ARN, split_infrastructure_id

    cluster, task_arn = split_infrastructure_id(infrastructure_id)
    match = _TASK_ARN.fullmatch(task_arn)
    assert match is not None  # split_infrastructure_id checked it
    region = task_arn.split(":")[3]
    cluster_name = (cluster or "default").rsplit("/", 1)[-1]  # a cluster ARN ends with cluster/<name>
    return (
        f"https://{region}.console.aws.amazon.com/ecs/v2/clusters/{quote(cluster_name, safe='')}"
        f"/tasks/{quote(match.group('id'), safe='')}/configuration?region={region}"
    )


def _cloud_run(infrastructure_id: str) -> str:
    from .cloud_run.provider import split_infrastructure_id

    _, execution = split_infrastructure_id(infrastructure_id)
    _, project, _, region, _, _, _, name = execution.split("/")
    return (
        f"https://console.cloud.google.com/run/jobs/executions/details/{quote(region, safe='')}"
        f"/{quote(name, safe='')}/tasks?project={quote(project, safe='')}"
    )


def _aci(infrastructure_id: str) -> str:
    from .aci.provider import _split

    _split(infrastructure_id)  # a ProviderError for an id that names no container group
    return f"https://portal.azure.com/#resource{quote(infrastructure_id, safe='/')}/overview"


def _modal(infrastructure_id: str) -> str:
    from .modal import split_infrastructure_id

    sandbox_id, _ = split_infrastructure_id(infrastructure_id)
    # Modal's dashboard resolves any object id (sb-..., fc-...) at /id/<object id>.
    return f"https://modal.com/id/{quote(sandbox_id, safe='')}"


_RULES: dict[str, Callable[[str], str]] = {
    "ecs:push": _ecs,
    "cloud-run-v2:push": _cloud_run,
    "azure-container-instance:push": _aci,
    "modal:push": _modal,
}


def console_url(pool_type: str, infrastructure_id: str) -> str | None:
    """The provider console's page of this job, or None when no URL can be formed."""
    rule = _RULES.get(pool_type)
    if rule is None:
        return None
    try:
        return rule(infrastructure_id)
    except (ValueError, ImportError, PushpoolError):
        # An id another version made, or the provider's extra is not installed here: show the id alone.
        return None

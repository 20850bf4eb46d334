"""`ACIProvider`: each run is one Azure container group, created with a PUT and watched through its GET.

The Azure SDK (azure-mgmt-containerinstance, azure-identity) is imported only when a client is first built,
so loading this provider, or checking a template with it, needs neither the SDK nor credentials.

Submission (SPEC §5): the group is named from the run id (`model.group_name`), so every attempt of a run
shares it. Before every PUT a GET looks for it, because a PUT on a live group would restart it: a re-submission after
a crash, or a retry after a PUT whose answer was lost, returns the group found. The PUT carries
`If-None-Match: *`; a 412 or a 409 (another PUT of the same group under way) is answered by a GET too. The
PUT is a long-running operation: the provider polls its Azure-AsyncOperation for up to
`provision_wait_seconds`, long enough to see a provisioning that fails at once, and leaves the rest to
`status()`.

The infrastructure id is the group's ARM resource id, which names the subscription and resource group that
`status`, `cancel` and `logs` need. Credentials come from DefaultAzureCredential and are never stored.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from ...errors import InvalidInput, ProviderError
from ..base import JobState, JobStatus, key_head
from .model import KEEP_TAG, ACIJobConfiguration, container_group_body, group_name, parse_job
from .model import template_location as literal_location
from .status import group_status, is_kept, main_container

log = logging.getLogger("pushpool.providers.aci")

__all__ = ["ACIProvider", "provider_error", "resource_id"]

SUBSCRIPTION_ENV = "AZURE_SUBSCRIPTION_ID"
RESOURCE_GROUP_ENV = "PUSHPOOL_ACI_RESOURCE_GROUP"
RESOURCE_GROUPS_API = "2021-04-01"
REMEMBERED_OUTCOMES = 10_000
"""Outcomes of deleted groups a provider keeps answering with (a few MB at most)."""
FIND_PAGES = 20
"""Pages of a subscription's container groups `find` reads at most, when the group is not where expected."""

_RESOURCE_ID = re.compile(
    r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
    r"/providers/Microsoft\.ContainerInstance/containerGroups/(?P<name>[^/]+)",
    re.IGNORECASE,
)
_TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CRASHED, JobState.CANCELLED})
_TRANSIENT_CODES = frozenset({"TooManyRequests", "RequestTimeout", "ServerTimeout", "ServiceUnavailable"})
_CredentialsKey = tuple[str | None, str | None]


def resource_id(subscription: str, resource_group: str, name: str) -> str:
    """The ARM resource id of a container group: the infrastructure id of its run."""
    return (
        f"/subscriptions/{subscription}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.ContainerInstance/containerGroups/{name}"
    )


def _split(infrastructure_id: str) -> tuple[str, str, str]:
    match = _RESOURCE_ID.fullmatch(infrastructure_id)
    if match is None:
        raise ProviderError(f"{infrastructure_id!r} is not the ARM resource id of a container group", transient=False)
    return match["sub"], match["rg"], match["name"]


def provider_error(exc: Exception, action: str) -> ProviderError:
    """An Azure SDK error as a ProviderError in Azure's words; transient for 429, 5xx, timeouts and lost connections."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return ProviderError(f"Azure Container Instances {action} failed: {exc}", transient=True)
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        error = getattr(exc, "error", None)
        code = str(getattr(error, "code", None) or exc.reason or "")
        text = str(getattr(error, "message", None) or exc.message or exc).splitlines()[0]
        details = ", ".join(
            part for part in (code, f"HTTP {status}" if status else "", _request_id(exc)) if part and part not in text
        )
        transient = (isinstance(status, int) and (status == 429 or status >= 500)) or code in _TRANSIENT_CODES
        if isinstance(exc, ClientAuthenticationError) and status is None:
            # A credential that found no identity (no environment, no managed identity): configuration.
            text = f"no Azure credentials could be obtained ({text}); see docs/deploy.md"
        suffix = f" ({details})" if details else ""
        return ProviderError(f"Azure Container Instances {action} failed: {text}{suffix}", transient=transient)
    return ProviderError(f"Azure Container Instances {action} failed: {exc}", transient=False)


def _request_id(exc: Any) -> str:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    request_id = headers.get("x-ms-request-id") if hasattr(headers, "get") else None
    return f"request id {request_id}" if request_id else ""


def _finish_time(group: Any) -> datetime | None:
    """When the group's flow run container ended (its instance view's finishTime), or None if it does not say."""
    container = main_container(group) or {}
    current = ((container.get("properties") or {}).get("instanceView") or {}).get("currentState") or {}
    try:
        ended = datetime.fromisoformat(str(current["finishTime"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return ended if ended.tzinfo else ended.replace(tzinfo=UTC)


def _retry_after(headers: Any, default: float | None) -> float:
    """Seconds to wait before the next poll: Azure's Retry-After, else the provider's interval, else 5."""
    try:
        return max(0.0, float(headers.get("Retry-After")))
    except (TypeError, ValueError):
        return 5.0 if default is None else default


def _status_of(exc: Exception) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


class ACIProvider:
    """Runs jobs as Azure container groups. Thread-safe: the dispatcher submits from several threads at once.

    - `credential`: a TokenCredential for every call; by default DefaultAzureCredential (environment,
      workload identity, managed identity), built per `aci_credentials` identity on first use.
    - `base_url`: the ARM endpoint (Azure's public cloud by default). An `http://` URL is for a local stub:
      the client then sends its bearer token over plain HTTP.
    - `polling_interval`: seconds between polls of a long-running operation (None: as Azure's Retry-After says).
    - `provision_wait_seconds`: how long a submit follows the PUT's operation before returning the group.
    - `read_timeout`, `connection_timeout`: per request; a request that exceeds one is a transient error.
    - `sweep_interval_seconds`, `sweep_min_age_seconds`: after a submit, at most this often per resource
      group, a background `sweep` deletes pushpool's groups whose run ended at least that long ago (None:
      no background sweeps; `sweep()` can still be called).
    - `subscription_id`, `resource_group`: where `find` looks for a run's group before anything was submitted
      (after a cold start); AZURE_SUBSCRIPTION_ID and PUSHPOOL_ACI_RESOURCE_GROUP when not given.

    Clients are built on first use, one per subscription and identity, and kept for the life of the provider,
    so warm cloud-function invocations reuse them. The SDK retries nothing (`retry_total=0`): the dispatcher
    owns retries, with backoff per run, and must get a throttled answer back within its own timeout.
    """

    status_is_cheap = False
    """status() is an Azure call: the reconciler asks only about runs that have been silent for a while."""

    def __init__(
        self,
        credential: Any = None,
        *,
        base_url: str | None = None,
        polling_interval: float | None = None,
        provision_wait_seconds: float = 5.0,
        read_timeout: float = 20.0,
        connection_timeout: float = 5.0,
        sweep_interval_seconds: float | None = 600.0,
        sweep_min_age_seconds: float = 3600.0,
        subscription_id: str | None = None,
        resource_group: str | None = None,
    ) -> None:
        self._credential = credential
        self._base_url = base_url
        self._polling_interval = polling_interval
        self.provision_wait_seconds = provision_wait_seconds
        self.sweep_interval_seconds = sweep_interval_seconds
        self.sweep_min_age_seconds = sweep_min_age_seconds
        self._home = (subscription_id, resource_group)
        self._timeouts = {"read_timeout": read_timeout, "connection_timeout": connection_timeout}
        self._lock = threading.Lock()
        self._credentials: dict[_CredentialsKey, Any] = {}
        self._clients: dict[tuple[str, _CredentialsKey], Any] = {}
        self._identity_of: dict[str, _CredentialsKey] = {}
        """subscription -> the identity its last submit used, for status/cancel/logs, which see only the id."""
        self._locations: dict[tuple[str, str], str] = {}
        self._ended: OrderedDict[str, JobStatus] = OrderedDict()
        """Outcomes of the groups this provider deleted (or stopped on request), oldest first, bounded."""
        self._swept: dict[tuple[str, str], float] = {}
        """(subscription, resource group) -> when its last sweep started (monotonic seconds)."""
        self._seen: dict[tuple[str, str], None] = {}
        """(subscription, resource group) pairs this provider launched in: where `find` looks first."""

    # -- clients -----------------------------------------------------------------------------------------------

    def client(self, subscription_id: str, identity: _CredentialsKey | None = None) -> Any:
        """The ContainerInstanceManagementClient of a subscription, built on first use and kept."""
        if identity is None:
            identity = self._identity_of.get(subscription_id, (None, None))
        key = (subscription_id, identity)
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = self._clients[key] = self._make_client(subscription_id, identity)
        return client

    def _make_client(self, subscription_id: str, identity: _CredentialsKey) -> Any:
        try:
            from azure.mgmt.containerinstance import ContainerInstanceManagementClient
        except ImportError as exc:  # pragma: no cover - the registry reports a missing extra first
            raise ProviderError(
                f"Azure Container Instances needs {exc.name!r}; run pip install 'pushpool[azure]'", transient=False
            ) from None
        # The SDK logs every request's headers at INFO; a dispatcher logging at INFO should not repeat them.
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
        kwargs: dict[str, Any] = {"retry_total": 0, "user_agent": "pushpool", **self._timeouts}
        if self._base_url:
            kwargs["base_url"] = self._base_url
            if self._base_url.startswith("http://"):
                kwargs["per_call_policies"] = [_allow_plain_http()]
        if self._polling_interval is not None:
            kwargs["polling_interval"] = self._polling_interval
        return ContainerInstanceManagementClient(self._credential_for(identity), subscription_id, **kwargs)

    def _credential_for(self, identity: _CredentialsKey) -> Any:
        if self._credential is not None:
            return self._credential
        if identity not in self._credentials:
            from azure.identity import DefaultAzureCredential

            client_id, tenant_id = identity
            kwargs: dict[str, Any] = {"exclude_interactive_browser_credential": True}
            if client_id:
                kwargs["managed_identity_client_id"] = client_id
                kwargs["workload_identity_client_id"] = client_id
            if tenant_id:
                kwargs["workload_identity_tenant_id"] = tenant_id
                kwargs["additionally_allowed_tenants"] = [tenant_id]
            self._credentials[identity] = DefaultAzureCredential(**kwargs)
        return self._credentials[identity]

    # -- Provider protocol -------------------------------------------------------------------------------------

    def validate(self, job: dict[str, Any]) -> dict[str, Any]:
        """Check a rendered job against `ACIJobConfiguration`; return it normalised (command as a list). Pure."""
        return parse_job(job).model_dump(mode="json", exclude_none=True)

    def submit(self, job: dict[str, Any], *, idempotency_key: str, resubmission: bool = False) -> str:
        """Create the run's container group unless it exists; return its resource id (see the module docstring).

        The GET runs before every PUT, resubmission or not: a PUT on a live group would restart it. The PUT
        itself carries `If-None-Match: *`, so a group created between the two is answered 412 (or 409 while
        its creation is under way) rather than restarted, and then found by a second GET.
        """
        try:
            config = parse_job(job)
        except InvalidInput as exc:
            raise ProviderError(str(exc), transient=False) from None
        subscription, resource_group = config.subscription_id, config.resource_group_name
        identity = (config.aci_credentials.client_id, config.aci_credentials.tenant_id)
        client = self.client(subscription, identity)
        with self._lock:
            self._identity_of[subscription] = identity
            self._seen[(subscription, resource_group)] = None
        name = group_name(key_head(idempotency_key))
        infra_id = resource_id(subscription, resource_group, name)

        if self._get(client, resource_group, name, "GET container group") is not None:
            return infra_id
        location = literal_location(config) or self._location(client, subscription, resource_group)
        body = json.dumps(container_group_body(config, location=location)).encode()
        try:
            operation = client.container_groups.begin_create_or_update(
                resource_group,
                name,
                body,
                content_type="application/json",
                headers={"If-None-Match": "*"},
                polling=False,
                cls=lambda response, _model, _headers: response.http_response.headers.get("Azure-AsyncOperation"),
            ).result()
        except Exception as exc:
            if _status_of(exc) in (409, 412) and self._get(client, resource_group, name, "GET container group"):
                return infra_id  # another submit of this run created it first
            raise provider_error(exc, "PUT container group") from None
        if operation:
            self._follow(client, str(operation), config, name)
        self._maybe_sweep(subscription, resource_group)
        return infra_id

    def status(self, infrastructure_id: str) -> JobStatus:
        """The run's status from its group's instance view (see `status.group_status`); MISSING once it is gone.

        A group whose run has ended is deleted here unless it is kept (`keep_container_group`). This provider
        remembers the outcome of the groups it deleted, so it keeps answering the same for them; another
        instance answers MISSING, by which time the run has been moved on.
        """
        ended = self._ended.get(infrastructure_id)
        if ended is not None:
            return ended
        subscription, resource_group, name = _split(infrastructure_id)
        client = self.client(subscription)
        group = self._get(client, resource_group, name, "GET container group")
        if group is None:
            return JobStatus(JobState.MISSING, message=f"container group {name} not found in {resource_group}")
        status = group_status(group)
        if status.state in _TERMINAL and not is_kept(group):
            self._delete_quietly(client, resource_group, name)
            self._remember(infrastructure_id, status)
        return status

    def cancel(self, infrastructure_id: str) -> None:
        """Stop the group, then delete it unless it is kept; a group already gone or ended is not stopped."""
        if infrastructure_id in self._ended:
            return
        subscription, resource_group, name = _split(infrastructure_id)
        client = self.client(subscription)
        group = self._get(client, resource_group, name, "GET container group")
        if group is None:
            return
        outcome = group_status(group)
        if outcome.state not in _TERMINAL:
            try:
                client.container_groups.stop(resource_group, name)
            except Exception as exc:
                if _status_of(exc) == 404:
                    return
                raise provider_error(exc, "stop container group") from None
            outcome = JobStatus(JobState.CANCELLED, message=f"container group {name} stopped on request")
        if not is_kept(group):
            self._delete(client, resource_group, name)
            self._remember(infrastructure_id, outcome)
        elif outcome.state is JobState.CANCELLED:
            self._remember(infrastructure_id, outcome)

    def sweep(self, subscription: str, resource_group: str, *, now: datetime | None = None) -> list[str]:
        """Delete pushpool's groups in a resource group whose run ended over `sweep_min_age_seconds` ago.

        `status()` deletes the groups it sees end, but a run that ends through its callback is never looked
        up again, and ended groups still count against the region's container group quota. Only groups this
        provider tagged and not kept are touched; the age leaves the reconciler time to read the outcome of
        a run whose callback was lost. Returns the names deleted.
        """
        now = now or datetime.now(UTC)
        client = self.client(subscription)
        deleted: list[str] = []
        try:
            names = [
                str(group.name)
                for group in client.container_groups.list_by_resource_group(resource_group)
                if (group.tags or {}).get(KEEP_TAG) == "false"
            ]
        except Exception as exc:
            raise provider_error(exc, "list container groups") from None
        for name in names:
            group = self._get(client, resource_group, name, "GET container group")
            if group is None or group_status(group).state not in _TERMINAL:
                continue
            ended = _finish_time(group)
            if ended is None or (now - ended).total_seconds() < self.sweep_min_age_seconds:
                continue
            self._delete_quietly(client, resource_group, name)
            deleted.append(name)
        if deleted:
            log.info("swept %d ended container groups from %s", len(deleted), resource_group)
        return deleted

    def _maybe_sweep(self, subscription: str, resource_group: str) -> None:
        """Start a sweep of this resource group in the background, at most once per `sweep_interval_seconds`."""
        if self.sweep_interval_seconds is None:
            return
        key = (subscription, resource_group)
        with self._lock:
            last = self._swept.get(key)
            if last is not None and time.monotonic() - last < self.sweep_interval_seconds:
                return
            self._swept[key] = time.monotonic()

        def run() -> None:
            try:
                self.sweep(subscription, resource_group)
            except ProviderError as exc:
                log.warning("sweep of %s failed: %s", resource_group, exc)

        threading.Thread(target=run, name=f"aci-sweep-{resource_group}", daemon=True).start()

    def find(self, idempotency_key: str) -> str | None:
        """The container group launched for this key's run, or None when there is none.

        The key names the run, hence the group; its subscription and resource group come from the submits this
        provider made, then from AZURE_SUBSCRIPTION_ID and PUSHPOOL_ACI_RESOURCE_GROUP, then from a listing of
        each known subscription's groups. Raises ProviderError when no subscription is known at all, since
        "none" would then be a guess.
        """
        name = group_name(key_head(idempotency_key))
        places = list(self._seen)
        subscription_env = self._home[0] or os.environ.get(SUBSCRIPTION_ENV)
        group_env = self._home[1] or os.environ.get(RESOURCE_GROUP_ENV)
        if subscription_env and group_env and (subscription_env, group_env) not in places:
            places.append((subscription_env, group_env))
        for subscription, resource_group in places:
            if self._get(self.client(subscription), resource_group, name, "GET container group") is not None:
                return resource_id(subscription, resource_group, name)
        subscriptions = list(dict.fromkeys([s for s, _ in places] + ([subscription_env] if subscription_env else [])))
        if not subscriptions:
            raise ProviderError(
                f"cannot look for container group {name}: no Azure subscription is known to this dispatcher; "
                f"set {SUBSCRIPTION_ENV}",
                transient=False,
            )
        for subscription in subscriptions:
            found = self._list_find(subscription, name)
            if found is not None:
                return found
        return None

    def logs(self, infrastructure_id: str) -> str:
        """The output of the run's container, as Azure keeps it while the group exists."""
        subscription, resource_group, name = _split(infrastructure_id)
        client = self.client(subscription)
        group = self._get(client, resource_group, name, "GET container group")
        if group is None:
            raise ProviderError(
                f"container group {name} no longer exists, and its logs went with it (groups are deleted when "
                f"their run ends; set keep_container_group to keep them)",
                transient=False,
            )
        container = main_container(group)
        if container is None:
            return ""
        try:
            logs = client.containers.list_logs(resource_group, name, str(container.get("name")))
        except Exception as exc:
            raise provider_error(exc, "read container logs") from None
        return str(getattr(logs, "content", None) or "")

    # -- internals ---------------------------------------------------------------------------------------------

    @staticmethod
    def _get(client: Any, resource_group: str, name: str, action: str) -> dict[str, Any] | None:
        """The group's ARM JSON as Azure sent it (REST spelling, instance views included), or None on a 404."""
        try:
            group: dict[str, Any] = client.container_groups.get(
                resource_group, name, cls=lambda response, _model, _headers: json.loads(response.http_response.text())
            )
        except Exception as exc:
            if _status_of(exc) == 404:
                return None
            raise provider_error(exc, action) from None
        return group

    def _location(self, client: Any, subscription: str, resource_group: str) -> str:
        """The resource group's location (cached): where its container groups go, as Prefect's template puts them."""
        key = (subscription, resource_group)
        if key in self._locations:
            return self._locations[key]
        from azure.core.rest import HttpRequest

        request = HttpRequest(
            "GET",
            f"/subscriptions/{subscription}/resourcegroups/{resource_group}",
            params={"api-version": RESOURCE_GROUPS_API},
        )
        try:
            response = client._send_request(request)  # the generated client's documented raw-request door
            response.raise_for_status()
            location = str(response.json()["location"])
        except (KeyError, ValueError) as exc:
            raise ProviderError(
                f"Azure answered a resource group GET without a location ({exc})", transient=True
            ) from None
        except Exception as exc:
            error = provider_error(exc, f"GET resource group {resource_group}")
            if _status_of(exc) == 404:
                error = ProviderError(
                    f"resource group {resource_group!r} does not exist in subscription {subscription} "
                    f"(set resource_group_name to an existing one)",
                    transient=False,
                )
            raise error from None
        self._locations[key] = location
        return location

    def _follow(self, client: Any, operation_url: str, config: ACIJobConfiguration, name: str) -> None:
        """Poll the PUT's Azure-AsyncOperation for a while: a provisioning that fails at once is permanent.

        Only the operation's outcome matters here, so the group itself is not fetched again (the SDK's poller
        would GET it at the end). A poll that fails, or an operation still running at the deadline, is not the
        group's failure: the group was accepted, and `status()` follows it from here.
        """
        from azure.core.rest import HttpRequest

        deadline = time.monotonic() + self.provision_wait_seconds
        while True:
            try:
                response = client._send_request(HttpRequest("GET", operation_url))
                response.raise_for_status()
                answer = response.json()
            except Exception as exc:
                log.warning("following the PUT of %s failed; status() takes over: %s", name, exc)
                return
            state = str(answer.get("status") or "").lower()
            if state not in ("failed", "canceled"):
                delay = _retry_after(response.headers, self._polling_interval)
                if state == "succeeded" or time.monotonic() + delay > deadline:
                    return
                time.sleep(delay)
                continue
            error = answer.get("error") or {}
            words = str(error.get("message") or f"the operation ended {state}")
            code = f" ({error['code']})" if error.get("code") else ""
            if not config.keep_container_group:
                self._delete_quietly(client, config.resource_group_name, name)
            raise ProviderError(
                f"Azure Container Instances provisioning of the container group failed: {words}{code}",
                transient=False,
            )

    def _remember(self, infrastructure_id: str, status: JobStatus) -> None:
        with self._lock:
            self._ended[infrastructure_id] = status
            while len(self._ended) > REMEMBERED_OUTCOMES:
                self._ended.popitem(last=False)

    def _delete(self, client: Any, resource_group: str, name: str) -> None:
        try:
            # Not followed to its end: the group stops billing when stopped, and the deletion finishes on its own.
            client.container_groups.begin_delete(resource_group, name, polling=False)
        except Exception as exc:
            if _status_of(exc) != 404:
                raise provider_error(exc, "DELETE container group") from None

    def _delete_quietly(self, client: Any, resource_group: str, name: str) -> None:
        try:
            self._delete(client, resource_group, name)
        except ProviderError as exc:
            # The run's outcome is known and must still be reported; the group stays, no longer billed once ended.
            log.warning("could not delete container group %s: %s", name, exc)

    def _list_find(self, subscription: str, name: str) -> str | None:
        client = self.client(subscription)
        try:
            pages = client.container_groups.list().by_page()
            for count, page in enumerate(pages):
                for group in page:
                    if getattr(group, "name", None) == name and getattr(group, "id", None):
                        return str(group.id)
                if count + 1 >= FIND_PAGES:
                    break
        except Exception as exc:
            raise provider_error(exc, "list container groups") from None
        return None


def _allow_plain_http() -> Any:
    """A pipeline policy that lets the bearer token go over http://, for a local stub of ARM (tests, emulators)."""
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    class AllowPlainHttp(SansIOHTTPPolicy):
        def on_request(self, request: Any) -> None:
            request.context.options["enforce_https"] = False

    return AllowPlainHttp()

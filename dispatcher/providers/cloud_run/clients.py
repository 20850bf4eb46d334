"""Google credentials and the Cloud Run clients, built on first use and kept while the process is warm.

This is the only module that imports google-cloud-run, and only inside `Clients.get` (≈0.7 s): constructing
the provider, validating jobs and a pass over other pool types never load it.

Credentials come from one of two places, and are never copied into a job, the store or a log:
- none named: Application Default Credentials (`google.auth.default`): `GOOGLE_APPLICATION_CREDENTIALS`, the
  metadata server on Google Cloud, or gcloud's user credentials on a workstation;
- `credentials.service_account_file`: a service-account key file, or an external-account configuration
  (Workload Identity Federation: in AWS Lambda, the function's IAM role is exchanged for a short-lived Google
  token; see docs/deploy.md), each loaded by the loader of the type the file declares (no other type is
  accepted, so a file cannot make pushpool run a credential helper it did not expect).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ...errors import ProviderError
from .errors import provider_error

__all__ = ["CloudRunClients", "Clients", "SCOPES"]

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
_ACCEPTED_FILE_TYPES = frozenset({"service_account", "external_account"})


@dataclass(frozen=True)
class CloudRunClients:
    """The clients of one credentials source, and the project those credentials name (if any)."""

    jobs: Any
    executions: Any
    credentials: Any
    project: str | None


class Clients:
    """One `CloudRunClients` per credentials source (None = ADC), built once and reused. Thread-safe.

    `credentials` and `api_endpoint` are for tests and embedders: given credentials (e.g. AnonymousCredentials)
    replace every lookup; an `http://` endpoint is a local server speaking the Cloud Run REST routes.
    """

    def __init__(self, *, credentials: Any = None, api_endpoint: str | None = None) -> None:
        self._given = credentials
        self._endpoint = api_endpoint
        self._lock = threading.Lock()
        self._built: dict[str | None, CloudRunClients] = {}

    def get(self, credentials_file: str | None) -> CloudRunClients:
        """The clients for a credentials file (None: ADC); built on first use."""
        built = self._built.get(credentials_file)
        if built is not None:
            return built
        with self._lock:
            if credentials_file not in self._built:
                self._built[credentials_file] = self._build(credentials_file)
            return self._built[credentials_file]

    def _build(self, credentials_file: str | None) -> CloudRunClients:
        try:
            from google.api_core.client_options import ClientOptions
            from google.cloud import run_v2
        except ImportError as exc:  # pragma: no cover - the registry checks the extra first
            raise ProviderError(
                f"cloud-run-v2:push needs {exc.name!r}; run pip install 'pushpool[gcp]'", transient=False
            ) from None
        credentials, project = self._credentials(credentials_file)
        options = ClientOptions(api_endpoint=self._endpoint) if self._endpoint else None
        try:
            jobs = run_v2.JobsClient(credentials=credentials, transport="rest", client_options=options)
            executions = run_v2.ExecutionsClient(credentials=credentials, transport="rest", client_options=options)
        except Exception as exc:
            raise provider_error(exc, "client setup") from None
        return CloudRunClients(jobs=jobs, executions=executions, credentials=credentials, project=project)

    def _credentials(self, credentials_file: str | None) -> tuple[Any, str | None]:
        if self._given is not None:
            return self._given, None
        try:
            if credentials_file is None:
                import google.auth

                credentials, project = google.auth.default(scopes=SCOPES)
                return credentials, project
            info = _read_file(credentials_file)
            return _from_info(info), info.get("project_id") or info.get("quota_project_id")
        except ProviderError:
            raise
        except Exception as exc:
            raise provider_error(exc, "loading credentials") from None


def _from_info(info: dict[str, Any]) -> Any:
    """Credentials of the one type the file says it holds, with the loader Google recommends for that type."""
    if info["type"] == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
    source = info.get("credential_source") or {}
    if str(source.get("environment_id", "")).startswith("aws"):
        from google.auth import aws

        return aws.Credentials.from_info(info, scopes=SCOPES)
    from google.auth import identity_pool

    return identity_pool.Credentials.from_info(info, scopes=SCOPES)


def _read_file(path: str) -> dict[str, Any]:
    """A credentials file's JSON, if it is of a type pushpool accepts; its contents are never echoed."""
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            info = json.load(handle)
        kind = info.get("type")
    except OSError as exc:
        raise ProviderError(
            f"credentials.service_account_file {path!r} cannot be read: {exc.strerror}", transient=False
        ) from None
    except (ValueError, AttributeError):
        raise ProviderError(
            f"credentials.service_account_file {path!r} is not a JSON credentials file", transient=False
        ) from None
    if kind not in _ACCEPTED_FILE_TYPES:
        raise ProviderError(
            f"credentials.service_account_file {path!r} has type {kind!r}; use a service-account key or an "
            f"external-account (Workload Identity Federation) configuration",
            transient=False,
        )
    result: dict[str, Any] = info
    return result

"""Google's exceptions as pushpool's `ProviderError`, in Cloud Run's words (SPEC §5).

Transient (a retry may cure it): 429 / RESOURCE_EXHAUSTED, 500, 502, 503 / UNAVAILABLE, 504 /
DEADLINE_EXCEEDED, a read timeout or a broken connection, a token refresh Google marks retryable.
Permanent: 400 / INVALID_ARGUMENT, 401, 403 / PERMISSION_DENIED, 404 / NOT_FOUND, missing or unusable
credentials, and anything else. Google's classes are looked up by name here, so this module imports no SDK.
"""

from __future__ import annotations

import re

from ...errors import ProviderError

__all__ = ["TRANSIENT_STATUSES", "http_status", "provider_error"]

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
_TRANSIENT_WORDS = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL", "ABORTED"})
# google-api-core prefixes REST errors with the request line ("POST http://...: "); the reader needs the rest.
_REQUEST_LINE = re.compile(r"^[A-Z]+ \S+: ")
_TRANSPORT_CLASSES = ("ConnectionError", "Timeout", "ReadTimeout", "ConnectTimeout", "TransportError", "RetryError")


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a google-api-core error (`GoogleAPICallError.code`), else None."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


def _status_word(exc: BaseException) -> str:
    """Google's status word for an error (`UNAVAILABLE`, `PERMISSION_DENIED`): from the REST error body, else
    from the gRPC code google-api-core attached, else the exception's class name."""
    response = getattr(exc, "response", None)
    try:
        word = response.json()["error"]["status"] if response is not None else None
    except Exception:  # not JSON, or not Google's error shape
        word = None
    if isinstance(word, str) and word:
        return word
    grpc_status = getattr(exc, "grpc_status_code", None)
    return str(getattr(grpc_status, "name", None) or type(exc).__name__)


def _classes(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def provider_error(exc: BaseException, action: str) -> ProviderError:
    """An exception raised by a Cloud Run call as a ProviderError that names the call and says what Google said."""
    classes = _classes(exc)
    status = http_status(exc)
    if status is not None and "GoogleAPICallError" in classes:
        message = _REQUEST_LINE.sub("", str(getattr(exc, "message", "") or exc)).strip()
        words = _status_word(exc)
        transient = status in TRANSIENT_STATUSES or words in _TRANSIENT_WORDS
        return ProviderError(f"Cloud Run {action} failed: {message} (HTTP {status} {words})", transient=transient)
    if "DefaultCredentialsError" in classes:
        return ProviderError(
            f"Cloud Run {action} failed: no Google credentials: {exc} (set GOOGLE_APPLICATION_CREDENTIALS on the "
            "dispatcher, or credentials.service_account_file in the pool)",
            transient=False,
        )
    if "RefreshError" in classes:
        retryable = bool(getattr(exc, "retryable", False))
        return ProviderError(
            f"Cloud Run {action} failed: the Google token could not be refreshed: {exc}", transient=retryable
        )
    if classes & set(_TRANSPORT_CLASSES) or isinstance(exc, TimeoutError | ConnectionError):
        return ProviderError(f"Cloud Run {action} failed: {type(exc).__name__}: {exc}", transient=True)
    return ProviderError(f"Cloud Run {action} failed: {type(exc).__name__}: {exc}", transient=False)

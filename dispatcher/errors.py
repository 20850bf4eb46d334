"""The project's errors: one root, a few children, each message one sentence that names the field and the fix."""

from __future__ import annotations


class PushpoolError(Exception):
    """Root of every error pushpool raises on purpose; the CLI and handlers print its message as is."""

    exit_code = 1
    http_status = 400


class InvalidInput(PushpoolError):
    """A name, limit, JSON document or option that breaks a rule; nothing was written."""

    exit_code = 2
    http_status = 422


class TemplateError(InvalidInput):
    """A base job template or job variables that break the template rules (SPEC §4)."""


class NotFound(PushpoolError):
    """A pool, queue, deployment or flow run that does not exist."""

    exit_code = 3
    http_status = 404


class Conflict(PushpoolError):
    """The thing exists already, or changed under us; nothing was written."""

    exit_code = 4
    http_status = 409


class StoreError(PushpoolError):
    """The store could not be opened or answered with an error."""

    exit_code = 5
    http_status = 503


class ConfigError(PushpoolError):
    """The environment or an optional extra is missing or wrong."""

    exit_code = 6
    http_status = 500


class ProviderError(PushpoolError):
    """The infrastructure refused or failed a call; `transient` says whether a retry may help."""

    http_status = 502

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient

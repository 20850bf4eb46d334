"""The `azure-container-instance:push` provider: one Azure container group per run.

`model` (the job's configuration and its container group, pure), `status` (instance view → run status, pure)
and `provider` (the calls to Azure). The Azure SDK is imported only when the provider first talks to Azure.
"""

from __future__ import annotations

from .model import ACIJobConfiguration
from .provider import ACIProvider

__all__ = ["ACIJobConfiguration", "ACIProvider"]

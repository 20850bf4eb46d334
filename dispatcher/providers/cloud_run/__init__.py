"""The `cloud-run-v2:push` provider: one Google Cloud Run job per run (SPEC §5).

- `model.py`: the job configuration (templates/cloud-run-v2-push.json) and the Cloud Run `Job` it becomes;
- `status.py`: what an execution says of a run;
- `errors.py`: Google's exceptions as pushpool's, transient or permanent;
- `clients.py`: credentials and the clients, built on first use (the only place google-cloud-run is imported);
- `provider.py`: `CloudRunProvider` (submit, status, cancel, find, logs, sweep);
- `logs.py`: the execution's log URI and entries.

Importing this package loads no Google SDK: that happens when a job is first submitted or looked up.
"""

from __future__ import annotations

from .model import CloudRunJobConfiguration
from .provider import CloudRunProvider

__all__ = ["CloudRunJobConfiguration", "CloudRunProvider"]

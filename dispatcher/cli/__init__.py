"""The `pushpool` command: parse options, call the core, print a table or JSON.

Rules live in the core (`pools`, `deployments`, `preview`, `apply`); each command here reads its options,
calls one operation and prints the result. Errors the core raises on purpose (`PushpoolError`) are caught
in one place, `common._Group.invoke`, and printed as one sentence on stderr with the error's exit code.

`common` holds the root app, its command groups, the shared options and helpers; `pools`, `queues`,
`deployments`, `runs` and `operations` hold the commands, which register on the apps when imported.
"""

from . import deployments, imports, operations, pools, queues, runs  # noqa: F401  (importing them registers the commands)
from .common import app, main

__all__ = ["app", "main"]

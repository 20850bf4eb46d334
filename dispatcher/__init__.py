"""pushpool: work pools without workers.

The package root stays import-light on purpose: cloud SDKs and the CLI are loaded only by the modules that
need them, so a cloud function's cold start pays only for what its pass uses.
"""

__version__ = "0.1.0"

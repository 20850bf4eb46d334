"""Dispatcher settings, read from `PUSHPOOL_*` environment variables with documented defaults."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta

from .errors import ConfigError


@dataclass(frozen=True)
class Settings:
    """Knobs of the scheduler and the dispatch pass; each maps to `PUSHPOOL_<NAME upper-cased>`."""

    late_after_seconds: float = 15.0
    """A SCHEDULED run this far past its time and not admitted is named Late (SPEC §2)."""
    schedule_horizon_seconds: float = 3600.0
    """How far ahead the scheduler creates runs for deployment schedules."""
    schedule_max_runs: int = 100
    """At most this many runs created per deployment in one scheduler step."""
    max_admissions_per_pass: int = 500
    """Due runs read per queue in one pass when no limit bounds them."""
    submission_attempts: int = 3
    """Submissions tried before a run is CRASHED (SPEC §5)."""
    retry_backoff_seconds: float = 10.0
    """Wait before the first retry of a transiently failed submission; doubles with each attempt."""
    submit_concurrency: int = 8
    """Provider calls a dispatcher makes at once."""
    provider_timeout_seconds: float = 30.0
    """A provider call taking longer is abandoned for this pass (the reconciler picks its run up)."""
    resubmit_grace_seconds: float = 60.0
    """A PENDING run this long without an infrastructure id is re-submitted with the same idempotency key."""
    reconcile_after_seconds: float = 300.0
    """An active run silent this long is looked up at the provider."""
    max_active_scan: int = 1000
    """Active runs read per pool by the reconciler in one pass; slot counters are repaired only below it."""
    slot_repair_settle_seconds: float = 10.0
    """A slot whose count changed this recently is not recounted down: an index of active runs (DynamoDB's
    are eventually consistent) may not show a run just admitted, and a recount from it would undo that."""

    @property
    def late_after(self) -> timedelta:
        return timedelta(seconds=self.late_after_seconds)

    @property
    def schedule_horizon(self) -> timedelta:
        return timedelta(seconds=self.schedule_horizon_seconds)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, float | int] = {}
        for f in fields(cls):
            key = f"PUSHPOOL_{f.name.upper()}"
            if key not in env:
                continue
            kind = int if f.type in (int, "int") else float
            try:
                value = kind(env[key])
            except ValueError:
                what = "whole number" if kind is int else "number"
                raise ConfigError(f"{key} must be a {what}, got {env[key]!r}") from None
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{key} must be greater than 0, got {env[key]!r}")
            values[f.name] = value
        return cls(**values)  # type: ignore[arg-type]

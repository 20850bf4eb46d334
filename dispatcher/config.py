"""Dispatcher settings, read from `PUSHPOOL_*` environment variables with documented defaults."""

from __future__ import annotations

import os
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

    @property
    def late_after(self) -> timedelta:
        return timedelta(seconds=self.late_after_seconds)

    @property
    def schedule_horizon(self) -> timedelta:
        return timedelta(seconds=self.schedule_horizon_seconds)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
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
                raise ConfigError(f"{key} must be a {kind.__name__}, got {env[key]!r}") from None
            if value <= 0:
                raise ConfigError(f"{key} must be greater than 0, got {env[key]!r}")
            values[f.name] = value
        return cls(**values)  # type: ignore[arg-type]

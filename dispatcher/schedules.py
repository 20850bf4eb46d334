"""Deployment schedules: cron with timezone, interval with anchor, RRULE -> upcoming run times (pure)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class CronSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cron: str
    timezone: str = "UTC"


class IntervalSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    interval: float = Field(gt=0, description="seconds between runs")
    anchor_date: datetime | None = None
    timezone: str = "UTC"


class RRuleSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rrule: str
    timezone: str = "UTC"


Schedule = CronSchedule | IntervalSchedule | RRuleSchedule

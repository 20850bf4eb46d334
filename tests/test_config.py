"""Tests for dispatcher.config.Settings: defaults and PUSHPOOL_* environment variables."""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta

import pytest

from dispatcher.config import Settings
from dispatcher.errors import ConfigError


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert s.late_after == timedelta(seconds=15)
    assert s.schedule_horizon == timedelta(hours=1)
    assert s.submission_attempts == 3


def test_every_field_reads_its_variable() -> None:
    env = {f"PUSHPOOL_{f.name.upper()}": "7" for f in fields(Settings)}
    s = Settings.from_env(env)
    for f in fields(Settings):
        value = getattr(s, f.name)
        assert value == 7 and type(value) is (int if f.type in (int, "int") else float)


def test_float_values() -> None:
    assert Settings.from_env({"PUSHPOOL_LATE_AFTER_SECONDS": "2.5"}).late_after == timedelta(seconds=2.5)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("PUSHPOOL_SCHEDULE_MAX_RUNS", "1.5", "whole number"),
        ("PUSHPOOL_SCHEDULE_MAX_RUNS", "ten", "whole number"),
        ("PUSHPOOL_LATE_AFTER_SECONDS", "soon", "must be a number"),
        ("PUSHPOOL_LATE_AFTER_SECONDS", "0", "greater than 0"),
        ("PUSHPOOL_SCHEDULE_HORIZON_SECONDS", "-5", "greater than 0"),
        ("PUSHPOOL_SCHEDULE_HORIZON_SECONDS", "inf", "greater than 0"),
        ("PUSHPOOL_SCHEDULE_HORIZON_SECONDS", "nan", "greater than 0"),
    ],
)
def test_bad_values_name_the_variable(key: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({key: value})
    assert key in str(info.value) and words in str(info.value) and repr(value) in str(info.value)

"""Settings come from flags, then STYLESERVE_* variables, then safe defaults, validated."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError
from styleserve.options import LIMITS
from styleserve_server.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("STYLESERVE_"):
            monkeypatch.delenv(name)


def test_defaults_are_safe_and_follow_the_shared_limits():
    settings = Settings.from_args([])
    assert (settings.host, settings.port, settings.metrics_port) == ("127.0.0.1", 50051, 0)
    assert (settings.job_slots, settings.auth_token, settings.warmup) == (1, None, True)
    assert settings.limits().max_iterations == LIMITS.max_iterations
    assert settings.limits().max_request_bytes == LIMITS.max_request_bytes


def test_flags_override_the_environment(monkeypatch):
    monkeypatch.setenv("STYLESERVE_JOB_SLOTS", "3")
    monkeypatch.setenv("STYLESERVE_HOST", "0.0.0.0")
    monkeypatch.setenv("STYLESERVE_AUTH_TOKEN", "t0ken")
    settings = Settings.from_args(["--job-slots", "2", "--no-warmup", "--max-iterations", "50"])
    assert (settings.job_slots, settings.host, settings.warmup) == (2, "0.0.0.0", False)
    assert settings.auth_token is not None and settings.auth_token.get_secret_value() == "t0ken"
    assert "t0ken" not in repr(settings)
    assert settings.limits().max_iterations == 50


def test_connection_age_comes_from_the_flag_or_the_environment(monkeypatch):
    assert Settings.from_args([]).max_connection_age_seconds > 0
    monkeypatch.setenv("STYLESERVE_MAX_CONNECTION_AGE_SECONDS", "0")
    assert Settings.from_args([]).max_connection_age_seconds == 0
    flagged = Settings.from_args(["--max-connection-age-seconds", "60"])
    assert flagged.max_connection_age_seconds == 60


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"device": "gpu"}, "device"),
        ({"backbone": "resnet"}, "backbone"),
        ({"job_slots": 0}, "job_slots"),
        ({"port": 70000}, "port"),
        ({"max_image_bytes": 10**9}, "max_request_bytes"),
        ({"auth_token": " "}, "auth_token"),
        ({"log_level": "chatty"}, "log_level"),
        ({"max_connection_age_seconds": -1}, "max_connection_age_seconds"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(values, named):
    with pytest.raises(ValidationError) as error:
        Settings(**values)
    assert named in str(error.value)

"""Settings come from flags, then STYLESERVE_* variables, then safe defaults, validated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trustme
from pydantic import ValidationError
from styleserve.options import LIMITS
from styleserve_server.main import main, misspelt
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


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, Path]:
    """A server certificate and key from a throwaway CA, another key, the CA and a non-PEM."""
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    server = ca.issue_cert("localhost")
    server.cert_chain_pems[0].write_to_path(str(directory / "tls.crt"))
    server.private_key_pem.write_to_path(str(directory / "tls.key"))
    ca.issue_cert("other").private_key_pem.write_to_path(str(directory / "other.key"))
    (directory / "garbage").write_text("not PEM", encoding="utf-8")
    return {p.name: p for p in directory.iterdir()}


def test_tls_settings_from_the_environment(monkeypatch, tls_files):
    monkeypatch.setenv("STYLESERVE_TLS_CERT_FILE", str(tls_files["tls.crt"]))
    monkeypatch.setenv("STYLESERVE_TLS_KEY_FILE", str(tls_files["tls.key"]))
    settings = Settings.from_args(["--tls-client-ca-file", str(tls_files["ca.crt"])])
    assert settings.uses_tls and settings.tls_client_ca_file == tls_files["ca.crt"]
    assert settings.health_port == 50052


def test_tls_is_off_by_default():
    settings = Settings.from_args([])
    assert not settings.uses_tls and settings.tls_client_ca_file is None


@pytest.mark.parametrize(
    ("files", "values", "named"),
    [
        ({"tls_key_file": "tls.key"}, {}, "tls_key_file is set without tls_cert_file"),
        ({"tls_cert_file": "tls.crt"}, {}, "tls_cert_file is set without tls_key_file"),
        ({"tls_client_ca_file": "ca.crt"}, {}, "tls_client_ca_file (mTLS) needs tls_cert_file"),
        ({"tls_cert_file": "tls.crt", "tls_key_file": "missing"}, {}, "tls_key_file"),
        ({"tls_cert_file": "tls.crt", "tls_key_file": "other.key"}, {}, "KEY_VALUES_MISMATCH"),
        ({"tls_cert_file": "garbage", "tls_key_file": "tls.key"}, {}, "tls_cert_file (/"),
        (
            {
                "tls_cert_file": "tls.crt",
                "tls_key_file": "tls.key",
                "tls_client_ca_file": "garbage",
            },
            {},
            "tls_client_ca_file (/",
        ),
        (
            {"tls_cert_file": "tls.crt", "tls_key_file": "tls.key"},
            {"health_port": 50051},
            "must differ from port (50051)",
        ),
        (
            {"tls_cert_file": "tls.crt", "tls_key_file": "tls.key"},
            {"health_port": 9090, "metrics_port": 9090},
            "health_port (9090) must differ",
        ),
        ({}, {"health_port": 50052}, "health_port is set but TLS is off"),
    ],
)
def test_bad_tls_settings_are_refused_naming_the_setting(tls_files, files, values, named):
    paths = {
        key: tls_files.get(name, tls_files["ca.crt"].parent / name) for key, name in files.items()
    }
    with pytest.raises(ValidationError) as error:
        Settings(**paths, **values)
    assert named in str(error.value)


def test_an_unreadable_tls_file_names_the_setting_and_the_reason(tls_files):
    with pytest.raises(ValidationError) as error:
        Settings(tls_cert_file=tls_files["tls.crt"].parent, tls_key_file=tls_files["tls.key"])
    assert "tls_cert_file" in str(error.value) and "cannot read" in str(error.value)


def test_the_help_names_optional_settings_by_their_type_without_null(capsys):
    with pytest.raises(SystemExit):
        Settings.from_args(["--help"])
    usage = capsys.readouterr().out
    assert "[--cache-dir Path]" in usage and "[--tls-cert-file Path]" in usage
    assert ",null}" not in usage


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["--job-slots", "-1"],
            "styleserve-server: --job-slots (STYLESERVE_JOB_SLOTS): Input should be greater than"
            " or equal to 1",
        ),
        (
            ["--min-output-side", "2000", "--max-output-side", "1000"],
            "styleserve-server: min_output_side (2000) exceeds max_output_side (1000)",
        ),
    ],
)
def test_bad_settings_are_one_line_each_naming_the_flag_and_never_the_token(
    monkeypatch, capsys, argv, said
):
    # pydantic's own text shows every setting's value, the token's from its Secret included.
    monkeypatch.setenv("STYLESERVE_AUTH_TOKEN", "hunter2-secret")
    assert main(argv) == 2
    assert capsys.readouterr().err == said + "\n"


def test_a_misspelt_variable_is_named_with_the_setting_it_nearly_names():
    # pydantic ignores it, and the server would start on the default unannounced.
    environment = {
        "STYLESERVE_JOBSLOTS": "3",
        "STYLESERVE_JOB_SLOTS": "2",
        # The client's, beside the server's in a shared environment: no setting's name.
        "STYLESERVE_SERVER": "127.0.0.1:50051",
        "STYLESERVE_TOKEN": "t",
        "PATH": "/bin",
    }
    assert misspelt(environment) == [
        "styleserve-server: STYLESERVE_JOBSLOTS names no setting (did you mean"
        " STYLESERVE_JOB_SLOTS?); ignored"
    ]

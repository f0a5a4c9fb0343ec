"""Packaging: the dependency floors match the committed stubs, and the server extra's onnxruntime
requirement resolves to a wheel on every platform it names.

onnxruntime-gpu, the runtime the service is built for, has wheels for Linux x86-64 only; the
markers in pyproject.toml pick the plain onnxruntime elsewhere. pip evaluates markers for the
running interpreter even with ``--platform``, so the markers are evaluated here for each
target environment with ``packaging`` (what pip itself uses), and pip then resolves the chosen
requirement against the package index for that platform's wheels.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

TARGETS = {
    # environment markers -> a wheel platform tag of that environment
    "linux-x86_64": (
        {"sys_platform": "linux", "platform_machine": "x86_64"},
        "manylinux_2_28_x86_64",
    ),
    "linux-aarch64": (
        {"sys_platform": "linux", "platform_machine": "aarch64"},
        "manylinux_2_28_aarch64",
    ),
    "macos-arm64": ({"sys_platform": "darwin", "platform_machine": "arm64"}, "macosx_14_0_arm64"),
}
EXPECTED = {
    "linux-x86_64": "onnxruntime-gpu",
    "linux-aarch64": "onnxruntime",
    "macos-arm64": "onnxruntime",
}


def _onnxruntime_for(environment: dict[str, str]) -> list[Requirement]:
    chosen = []
    for line in requires("styleserve") or ():
        requirement = Requirement(line)
        if not requirement.name.startswith("onnxruntime"):
            continue
        env = {**environment, "extra": "server"}
        if requirement.marker is None or requirement.marker.evaluate(env):
            chosen.append(requirement)
    return chosen


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_exactly_one_onnxruntime_is_chosen_per_platform(target: str):
    (requirement,) = _onnxruntime_for(TARGETS[target][0])
    assert requirement.name == EXPECTED[target]


@pytest.mark.parametrize("target", ["linux-aarch64", "macos-arm64"])
def test_the_chosen_requirement_has_a_wheel_for_that_platform(target: str, tmp_path: Path):
    environment, platform_tag = TARGETS[target]
    (requirement,) = _onnxruntime_for(environment)
    requirement.marker = None
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps"]
    command += ["--only-binary=:all:", "--platform", platform_tag, "--implementation", "cp"]
    command += ["--python-version", f"{sys.version_info.major}.{sys.version_info.minor}"]
    command += ["--target", str(tmp_path / "target"), "--report", str(report), str(requirement)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    (install,) = json.loads(report.read_text())["install"]
    assert install["metadata"]["name"] == requirement.name
    assert platform_tag.split("_", 1)[0] in install["download_info"]["url"]


def _floor(name: str) -> tuple[int, ...]:
    (requirement,) = (
        Requirement(r) for r in requires("styleserve") or () if Requirement(r).name == name
    )
    (spec,) = (s for s in requirement.specifier if s.operator == ">=")
    return tuple(int(part) for part in spec.version.split("."))


def test_the_runtime_floors_are_what_the_committed_stubs_require():
    """grpcio and protobuf older than the versions that generated the stubs refuse to import
    them ("generated code depends on grpcio>=..." / a gencode VersionError)."""
    stubs = Path(__file__).resolve().parents[1] / "client" / "styleserve" / "v1"
    grpc_stub = (stubs / "style_transfer_pb2_grpc.py").read_text(encoding="utf-8")
    (generated,) = re.findall(r"^GRPC_GENERATED_VERSION = '([\d.]+)'", grpc_stub, re.MULTILINE)
    assert _floor("grpcio") == tuple(int(p) for p in generated.split("."))
    message_stub = (stubs / "style_transfer_pb2.py").read_text(encoding="utf-8")
    (numbers,) = re.findall(
        r"ValidateProtobufRuntimeVersion\(\s*\S+,\s*(\d+),\s*(\d+),\s*(\d+),", message_stub
    )
    assert _floor("protobuf") == tuple(int(n) for n in numbers)

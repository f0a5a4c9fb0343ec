"""The Kubernetes manifests are valid for the API server and agree with the server they run.

kubernetes-validate checks every base manifest offline against the schemas it bundles, in
strict mode (an unknown or misspelt field fails), for the oldest Kubernetes release the
manifests claim (native gRPC probes and the preStop sleep action) and the newest it ships.
The rest compares the manifests with the settings class, the metrics registry and each other.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_files import BASE, BASE_MANIFESTS, K8S, ROOT

# 1.30: the first release with the preStop sleep action on by default.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")


def _validate(run_tool, path: Path, version: str) -> None:
    done = run_tool("kubernetes-validate", "--strict", "-k", version, path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # A kind without a bundled schema is only a warning; a base manifest must have one.
    assert "WARN" not in output and "passed" in output, output


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", BASE_MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_strictly_valid(run_tool, path: Path, version: str):
    _validate(run_tool, path, version)


def test_strict_validation_refuses_an_unknown_field(run_tool, tmp_path: Path):
    deployment = yaml.safe_load((BASE / "deployment.yaml").read_text(encoding="utf-8"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcc"] = {}
    bad = tmp_path / "deployment.yaml"
    bad.write_text(yaml.safe_dump(deployment), encoding="utf-8")
    done = run_tool("kubernetes-validate", "--strict", "-k", KUBERNETES_VERSIONS[0], bad)
    assert done.returncode != 0 and "grpcc" in done.stdout + done.stderr


def test_yamllint_strict_passes_on_the_project(run_tool):
    done = run_tool("yamllint", "--strict", "-c", ROOT / ".yamllint", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_kustomization_lists_every_base_manifest():
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == sorted(p.name for p in BASE_MANIFESTS)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")
@pytest.mark.parametrize("variant", ["base", "baked-weights"])
def test_kustomize_output_is_strictly_valid(run_tool, tmp_path: Path, variant: str):
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(K8S / variant)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    objects = list(yaml.safe_load_all(rendered))
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {
        "styleserve"
    }
    spec = deployment["spec"]["template"]["spec"]
    volumes = {v["name"] for v in spec["volumes"]}
    if variant == "baked-weights":
        # The weights come with the image: no export step and no volume hiding them.
        assert not spec.get("initContainers") and "weights" not in volumes
        assert all(m["name"] != "weights" for c in spec["containers"] for m in c["volumeMounts"])
    else:
        assert [c["name"] for c in spec["initContainers"]] == [
            "export-weights",
            "export-feed-forward",
        ]
        assert "weights" in volumes
    path = tmp_path / f"{variant}.yaml"
    path.write_text(rendered, encoding="utf-8")
    _validate(run_tool, path, KUBERNETES_VERSIONS[0])


# --- the manifests agree with the server ------------------------------------------------------


def test_configmap_and_env_hold_only_real_settings(configmap_env, pod_spec):
    from styleserve_server.settings import Settings

    assert configmap_env and all(k.startswith("STYLESERVE_") for k in configmap_env)
    names = set(configmap_env)
    for container in [*pod_spec["initContainers"], *pod_spec["containers"]]:
        names |= {
            e["name"] for e in container.get("env", []) if e["name"].startswith("STYLESERVE_")
        }
    unknown = {
        n for n in names if n.removeprefix("STYLESERVE_").lower() not in Settings.model_fields
    }
    assert not unknown, f"not settings of styleserve-server: {sorted(unknown)}"


def test_ports_and_probes_match_the_servers_port(cluster_settings, server_container, manifests):
    from styleserve_server.settings import Settings

    default_port = Settings.model_fields["port"].default
    # Clients and docs use the well-known port: the cluster keeps the server's default.
    assert cluster_settings.port == default_port
    ports = {p["name"]: p["containerPort"] for p in server_container["ports"]}
    assert ports == {"grpc": default_port, "metrics": cluster_settings.metrics_port}
    assert cluster_settings.metrics_port > 0, "the HPA needs the metrics port on"
    assert cluster_settings.host == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        # Native gRPC probes ask grpc.health.v1 for the server's overall status.
        assert server_container[probe]["grpc"] == {"port": default_port}, probe
    (grpc_port,) = manifests["Service/styleserve"]["spec"]["ports"]
    assert (grpc_port["port"], grpc_port["targetPort"]) == (default_port, "grpc")
    (metrics_port,) = manifests["Service/styleserve-metrics"]["spec"]["ports"]
    assert (metrics_port["port"], metrics_port["targetPort"]) == (
        cluster_settings.metrics_port,
        "metrics",
    )


def test_termination_grace_covers_prestop_and_drain(cluster_settings, pod_spec, server_container):
    pause = server_container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause > 0
    assert pod_spec["terminationGracePeriodSeconds"] >= pause + cluster_settings.grace_seconds


def test_liveness_outlasts_the_drain(cluster_settings, server_container):
    # A draining server reports NOT_SERVING; liveness must not kill it before the jobs finish.
    liveness = server_container["livenessProbe"]
    patience = liveness["periodSeconds"] * liveness["failureThreshold"]
    assert patience > cluster_settings.grace_seconds


def test_init_containers_export_what_the_server_loads(cluster_settings, pod_spec):
    exported = []
    for init in pod_spec["initContainers"]:
        assert init["command"] == ["styleserve-export"]
        args = init["args"]
        exported.append(args[args.index("--source") + 1])
        # The exporter reads STYLESERVE_CACHE_DIR from the same ConfigMap as the server.
        assert init["envFrom"] == [{"configMapRef": {"name": "styleserve"}}]
        mounts = {m["name"]: m for m in init["volumeMounts"]}
        assert Path(mounts["weights"]["mountPath"]) == cluster_settings.cache_dir
    assert exported == [cluster_settings.backbone, cluster_settings.feed_forward]


def test_settings_come_from_the_configmap(pod_spec, manifests):
    for container in [*pod_spec["initContainers"], *pod_spec["containers"]]:
        assert {"configMapRef": {"name": "styleserve"}} in container["envFrom"], container["name"]
    assert "ConfigMap/styleserve" in manifests


def test_every_container_is_restricted(pod_spec):
    pod = pod_spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec["automountServiceAccountToken"] is False
    for container in [*pod_spec["initContainers"], *pod_spec["containers"]]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["capabilities"] == {"drop": ["ALL"]}, container["name"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, f"{container['name']}: /tmp must be writable"
        resources = container["resources"]
        assert set(resources) == {"requests", "limits"}, container["name"]


def test_server_gets_one_gpu(server_container):
    resources = server_container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"].get("nvidia.com/gpu", 1) == 1


def test_selectors_find_the_pods(manifests):
    labels = manifests["Deployment/styleserve"]["spec"]["template"]["metadata"]["labels"]
    selectors = [
        manifests["Deployment/styleserve"]["spec"]["selector"]["matchLabels"],
        manifests["Service/styleserve"]["spec"]["selector"],
        manifests["Service/styleserve-metrics"]["spec"]["selector"],
        manifests["PodDisruptionBudget/styleserve"]["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items(), selector


def test_grpc_service_is_headless(manifests):
    # DNS must return each pod, so that round_robin clients balance per call.
    assert manifests["Service/styleserve"]["spec"]["clusterIP"] == "None"


def test_disruption_budget_leaves_pods_serving(manifests):
    pdb = manifests["PodDisruptionBudget/styleserve"]["spec"]
    hpa = manifests["HorizontalPodAutoscaler/styleserve"]["spec"]
    assert pdb["maxUnavailable"] < hpa["minReplicas"]


def _server_metric_names() -> set[str]:
    from styleserve_server.metrics import Metrics

    return {family.name for family in Metrics().registry.collect()}


def test_autoscaler_reads_metrics_the_server_exports(manifests):
    hpa = manifests["HorizontalPodAutoscaler/styleserve"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "styleserve",
    }
    wanted = {m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"}
    assert wanted and wanted <= _server_metric_names()
    adapter = yaml.safe_load(
        (K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text(encoding="utf-8")
    )
    (rule,) = adapter["rules"]["custom"]
    # The adapter's series selector must match each metric the HPA asks for, by name.
    pattern = re.search(r'__name__=~"([^"]+)"', rule["seriesQuery"]).group(1)
    assert all(re.fullmatch(pattern, name) for name in wanted), (pattern, wanted)


def test_running_jobs_target_is_below_the_slots(manifests, cluster_settings):
    hpa = manifests["HorizontalPodAutoscaler/styleserve"]["spec"]
    (target,) = [
        m["pods"]["target"]["averageValue"]
        for m in hpa["metrics"]
        if m["pods"]["metric"]["name"] == "styleserve_running_jobs"
    ]
    value = int(target[:-1]) / 1000 if target.endswith("m") else float(target)
    # A target at or above the slots could never be exceeded: the HPA would never scale on it.
    assert 0 < value < cluster_settings.job_slots


def test_images_are_the_kustomization_image(pod_spec):
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    (image,) = kustomization["images"]
    for container in [*pod_spec["initContainers"], *pod_spec["containers"]]:
        assert container["image"].split(":")[0] == image["name"], container["name"]

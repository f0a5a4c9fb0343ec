"""The Kubernetes manifests are valid for the API server and agree with the server they run.

kubernetes-validate checks every base manifest, and every overlay as kustomize renders it,
offline against the schemas it bundles, in strict mode (an unknown or misspelt field fails),
for the oldest Kubernetes release the manifests claim (native gRPC probes and the preStop
sleep action) and the newest it ships. The rest compares the manifests with the settings
class, the metrics registry and each other, and each overlay with the choice it stands for.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from styleserve_server.app import STOP_JOBS_SECONDS

from tests.deploy.deploy_files import (
    BASE,
    BASE_MANIFESTS,
    K8S,
    KUSTOMIZATIONS,
    OVERLAYS,
    ROOT,
    Rendered,
    render,
    write_tls_secret,
)

# 1.30: the first release with the preStop sleep action on by default.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# What a stopping server takes to exit once its jobs are stopped, with room to spare.
_EXIT_SECONDS = 10
# The overlay with the HPA of components/hpa.
AUTOSCALED = "autoscaled"
# The overlay with components/cpu: the Dockerfile's cpu target on nodes without a GPU.
CPU = "cpu"
CPU_COMPONENT = K8S / "components" / "cpu" / "kustomization.yaml"


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


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_strictly_valid(run_tool, rendered, tmp_path: Path, overlay, version):
    output = rendered(overlay)
    assert {
        o["metadata"].get("namespace") for o in output.objects.values() if o["kind"] != "Namespace"
    } == {"styleserve"}
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(output.text, encoding="utf-8")
    _validate(run_tool, path, version)


def test_the_overlays_are_the_documented_choices():
    assert OVERLAYS == ["autoscaled", "baked", "cpu", "index-init", "mtls", "tls", "volume"]
    readme = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    for overlay in OVERLAYS:
        assert f"deploy/k8s/overlays/{overlay}" in readme, overlay


# --- the manifests agree with the server ------------------------------------------------------


def test_configmap_and_env_hold_only_real_settings(configmap_env, pod_spec):
    from styleserve_server.settings import Settings

    assert configmap_env and all(k.startswith("STYLESERVE_") for k in configmap_env)
    names = set(configmap_env)
    for container in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
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
    # After the grace the server stops the late jobs, then exits (measured: 2.9 s on the tiny
    # network): SIGKILL must not come before.
    drain = pause + cluster_settings.grace_seconds + STOP_JOBS_SECONDS + _EXIT_SECONDS
    assert pod_spec["terminationGracePeriodSeconds"] >= drain


def test_liveness_outlasts_the_drain(cluster_settings, server_container):
    # A draining server reports NOT_SERVING; liveness must not kill it before the jobs finish.
    liveness = server_container["livenessProbe"]
    patience = liveness["periodSeconds"] * liveness["failureThreshold"]
    assert patience > cluster_settings.grace_seconds


def test_settings_come_from_the_configmap(pod_spec, manifests):
    for container in pod_spec["containers"]:
        assert {"configMapRef": {"name": "styleserve"}} in container["envFrom"], container["name"]
    assert "ConfigMap/styleserve" in manifests


def _assert_restricted(pod_spec: dict[str, Any]) -> None:
    pod = pod_spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec["automountServiceAccountToken"] is False
    for container in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["capabilities"] == {"drop": ["ALL"]}, container["name"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, f"{container['name']}: /tmp must be writable"
        resources = container["resources"]
        assert set(resources) == {"requests", "limits"}, container["name"]


def test_every_container_is_restricted(pod_spec):
    _assert_restricted(pod_spec)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_of_every_overlay_is_restricted(rendered, overlay):
    _assert_restricted(rendered(overlay).pod_spec)


def test_server_gets_one_gpu(server_container):
    resources = server_container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"].get("nvidia.com/gpu", 1) == 1


def _tolerates_gpu_nodes(pod_spec: dict[str, Any]) -> bool:
    return any(t.get("key") == "nvidia.com/gpu" for t in pod_spec.get("tolerations", []))


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if o != CPU])
def test_gpu_overlays_ask_for_a_gpu(rendered, overlay):
    output = rendered(overlay)
    resources = output.server["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"].get("nvidia.com/gpu", 1) == 1
    assert _tolerates_gpu_nodes(output.pod_spec)
    assert output.env["STYLESERVE_DEVICE"] == "cuda"


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


# --- scaling ------------------------------------------------------------------------------------


def _hpa(rendered) -> dict[str, Any]:
    return rendered(AUTOSCALED).objects["HorizontalPodAutoscaler/styleserve"]["spec"]


def test_the_base_scales_without_an_autoscaler(rendered, manifests):
    # No HPA in the base: it runs on a cluster without prometheus-adapter, and KEDA may scale
    # it instead (deploy/k8s/monitoring/keda-scaledobject.yaml).
    assert not rendered("base", K8S).of_kind("HorizontalPodAutoscaler")
    assert manifests["Deployment/styleserve"]["spec"]["replicas"] >= 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_autoscaled_overlay_has_an_hpa_and_it_owns_the_replicas(rendered, overlay):
    output = rendered(overlay)
    hpas = output.of_kind("HorizontalPodAutoscaler")
    deployment = output.objects["Deployment/styleserve"]["spec"]
    if overlay == AUTOSCALED:
        assert len(hpas) == 1
        # Left in, `kubectl apply` would reset the HPA's count at every roll-out.
        assert "replicas" not in deployment
    else:
        assert not hpas and deployment["replicas"] >= 2


def test_disruption_budget_leaves_pods_serving(manifests, rendered):
    pdb = manifests["PodDisruptionBudget/styleserve"]["spec"]
    assert pdb["maxUnavailable"] < manifests["Deployment/styleserve"]["spec"]["replicas"]
    assert pdb["maxUnavailable"] < _hpa(rendered)["minReplicas"]


def test_keda_is_the_same_autoscaler_by_other_means(rendered):
    keda = yaml.safe_load(
        (K8S / "monitoring" / "keda-scaledobject.yaml").read_text(encoding="utf-8")
    )["spec"]
    hpa = _hpa(rendered)
    assert keda["scaleTargetRef"]["name"] == hpa["scaleTargetRef"]["name"]
    assert (keda["minReplicaCount"], keda["maxReplicaCount"]) == (
        hpa["minReplicas"],
        hpa["maxReplicas"],
    )


def _server_metric_names() -> set[str]:
    from styleserve_server.metrics import Metrics

    return {family.name for family in Metrics().registry.collect()}


def test_autoscaler_reads_metrics_the_server_exports(rendered):
    hpa = _hpa(rendered)
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


def test_running_jobs_target_is_below_the_slots(rendered, cluster_settings):
    hpa = _hpa(rendered)
    (target,) = [
        m["pods"]["target"]["averageValue"]
        for m in hpa["metrics"]
        if m["pods"]["metric"]["name"] == "styleserve_running_jobs"
    ]
    value = int(target[:-1]) / 1000 if target.endswith("m") else float(target)
    # A target at or above the slots could never be exceeded: the HPA would never scale on it.
    assert 0 < value < cluster_settings.job_slots


# --- where the weights come from ---------------------------------------------------------------


def _mounts_over(container: dict[str, Any], path: Path) -> list[str]:
    """The container's mounts at ``path`` or above it (either hides what the image has there)."""
    return [
        m["mountPath"]
        for m in container.get("volumeMounts", [])
        if PurePosixPath(path).is_relative_to(m["mountPath"])
    ]


def _egress_ports(output: Rendered) -> set[int | str]:
    return {
        port["port"]
        for policy in output.of_kind("NetworkPolicy")
        for rule in policy["spec"].get("egress", [])
        for port in rule.get("ports", [])
    }


@pytest.mark.parametrize("overlay", ["baked", "cpu", "tls", "mtls"])
def test_baked_overlays_serve_the_image_weights_without_network(
    rendered, cluster_settings, overlay
):
    output = rendered(overlay)
    # No export step, nothing mounted over the weights baked in at STYLESERVE_CACHE_DIR.
    assert not output.pod_spec.get("initContainers")
    assert output.env["STYLESERVE_CACHE_DIR"] == str(cluster_settings.cache_dir)
    for container in output.containers:
        assert not _mounts_over(container, cluster_settings.cache_dir), container["name"]
    assert {v["name"] for v in output.pod_spec["volumes"]} <= {"tmp", "tls"}
    # Nor any way out: the pods start and serve without egress.
    assert output.of_kind("NetworkPolicy") and not _egress_ports(output)


def test_index_init_overlay_exports_what_the_server_loads(rendered, cluster_settings):
    output = rendered("index-init")
    exported = []
    (index,) = [c for c in output.of_kind("ConfigMap") if "PIP_INDEX_URL" in c.get("data", {})]
    assert index["data"]["PIP_INDEX_URL"].startswith("https://")
    for init in output.pod_spec["initContainers"]:
        assert init["command"] == ["styleserve-export"]
        args = init["args"]
        exported.append(args[args.index("--source") + 1])
        # The exporter reads STYLESERVE_CACHE_DIR from the server's ConfigMap, and pip its
        # index from the package-index one.
        assert init["envFrom"] == [
            {"configMapRef": {"name": "styleserve"}},
            {"configMapRef": {"name": index["metadata"]["name"]}},
        ]
        assert _mounts_over(init, cluster_settings.cache_dir) == [str(cluster_settings.cache_dir)]
        # The exporter is the server's own image.
        assert init["image"] == output.server["image"]
    assert exported == [cluster_settings.backbone, cluster_settings.feed_forward]
    (mount,) = [m for m in output.server["volumeMounts"] if m["name"] == "weights"]
    assert mount == {
        "name": "weights",
        "mountPath": str(cluster_settings.cache_dir),
        "readOnly": True,
    }
    (volume,) = [v for v in output.pod_spec["volumes"] if v["name"] == "weights"]
    assert "emptyDir" in volume
    assert _egress_ports(output) == {53, 443}


def test_volume_overlay_reads_the_weights_from_a_claim(rendered, cluster_settings):
    output = rendered("volume")
    assert not output.pod_spec.get("initContainers") and not _egress_ports(output)
    (volume,) = [v for v in output.pod_spec["volumes"] if v["name"] == "weights"]
    claim = volume["persistentVolumeClaim"]
    assert claim["readOnly"] is True
    pvc = output.objects[f"PersistentVolumeClaim/{claim['claimName']}"]
    # Every replica, on any node, reads the same cache.
    assert pvc["spec"]["accessModes"] == ["ReadOnlyMany"]
    (mount,) = [m for m in output.server["volumeMounts"] if m["name"] == "weights"]
    assert mount == {
        "name": "weights",
        "mountPath": str(cluster_settings.cache_dir),
        "readOnly": True,
    }


# --- CPU nodes (components/cpu, overlays/cpu) -------------------------------------------------


def _quantity(value: str | int) -> float:
    """A CPU or memory quantity as a number (cores, bytes): "2", "500m", "8Gi"."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * factor
    return float(text)


def _cpu_image() -> str:
    """The base's image with the cpu target's tag (deploy/README.md: TAG-cpu)."""
    (image,) = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))["images"]
    return f"{image['newName']}:{image['newTag']}-cpu"


def test_cpu_overlay_asks_for_no_gpu(rendered):
    output = rendered(CPU)
    # Neither a request, a limit nor a toleration: the name appears nowhere.
    assert "nvidia.com/gpu" not in output.text
    assert not output.pod_spec.get("tolerations")
    for container in output.containers:
        resources = container["resources"]
        assert not [r for part in resources.values() for r in part if "gpu" in r], resources
    assert not any("NVIDIA" in e["name"] for c in output.containers for e in c.get("env", []))


def test_cpu_overlay_runs_the_cpu_image_on_the_cpu(rendered, monkeypatch):
    from styleserve_server.settings import Settings

    output = rendered(CPU)
    assert output.server["image"] == _cpu_image()
    # The tag the README's `docker build --target cpu` pushes, and the target exists.
    readme = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    assert f"--target cpu -t {_cpu_image()} ." in readme
    assert re.search(r"^FROM \S+ AS cpu$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)

    assert {
        k for k in output.env if k.removeprefix("STYLESERVE_").lower() not in Settings.model_fields
    } == set()
    for name in [n for n in os.environ if n.startswith("STYLESERVE_")]:
        monkeypatch.delenv(name)
    for name, value in output.env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # the whole configuration validates
    assert settings.device == "cpu"


def test_cpu_overlay_sizes_the_pod_for_its_memory_budget(rendered, monkeypatch):
    from styleserve_server.settings import Settings

    output = rendered(CPU)
    resources = output.server["resources"]
    # On CPU the server measures its budget from the memory limit: the node must reserve it.
    assert resources["requests"] == resources["limits"], resources
    limits = {k: _quantity(v) for k, v in resources["limits"].items()}
    assert set(limits) == {"cpu", "memory"}
    for name in [n for n in os.environ if n.startswith("STYLESERVE_")]:
        monkeypatch.delenv(name)
    for name, value in output.env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    stores = settings.upload_store_bytes + settings.style_cache_bytes + settings.job_store_bytes
    # 80% of the limit (memory.measured_budget) less the stores' caps leaves room for a job
    # (a tiled default-preset job peaks near 2.6 GB) beside the loaded server.
    assert 0.8 * limits["memory"] - stores >= 4 * 2**30, limits
    # Threads follow the pod's CPUs, not the node's cores.
    assert settings.feed_forward_threads * settings.feed_forward_slots <= limits["cpu"]
    (omp,) = [e for e in output.server["env"] if e["name"] == "OMP_NUM_THREADS"]
    assert omp["valueFrom"]["resourceFieldRef"] == {
        "containerName": "server",
        "resource": "limits.cpu",
        "divisor": "1",
    }


def test_cpu_component_adds_to_other_overlays(tmp_path: Path):
    # A component like tls and hpa: on index-init, its exporting init containers take the CPU
    # image too.
    overlay = yaml.safe_load((K8S / "overlays" / CPU / "kustomization.yaml").read_text())
    assert overlay["components"] == ["../../components/cpu"]
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # Relative: kustomize refuses absolute paths.
                "resources": [os.path.relpath(K8S / "overlays" / "index-init", tmp_path)],
                "components": [os.path.relpath(CPU_COMPONENT.parent, tmp_path)],
            }
        ),
        encoding="utf-8",
    )
    output = render(tmp_path.name, tmp_path.parent)
    assert "nvidia.com/gpu" not in output.text and not output.pod_spec.get("tolerations")
    assert output.env["STYLESERVE_DEVICE"] == "cpu"
    images = {c["image"] for c in output.containers}
    assert len(output.containers) == 3 and images == {_cpu_image()}


# --- image, identity, network -------------------------------------------------------------------


def test_the_image_is_named_in_one_place():
    named = {
        path.relative_to(K8S).as_posix(): document["images"]
        for path in KUSTOMIZATIONS
        if "images" in (document := yaml.safe_load(path.read_text(encoding="utf-8")))
    }
    # The base names the image; components/cpu only swaps its tag for the cpu target's.
    assert sorted(named) == ["base/kustomization.yaml", "components/cpu/kustomization.yaml"]
    (image,) = named["base/kustomization.yaml"]
    (cpu,) = named["components/cpu/kustomization.yaml"]
    assert cpu == {"name": image["newName"], "newTag": f"{image['newTag']}-cpu"}, cpu
    assert image["name"] == "styleserve" and image["newTag"]
    # A registry host, not a Docker Hub library name nobody published.
    host = image["newName"].split("/")[0]
    assert "/" in image["newName"] and ("." in host or ":" in host), image["newName"]


def test_base_containers_name_only_the_image(pod_spec):
    for container in pod_spec["containers"]:
        assert container["image"] == "styleserve", container["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_runs_the_named_image(rendered, overlay):
    (image,) = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))["images"]
    # The cpu target's tag is the GPU image's with -cpu (deploy/README.md, components/cpu).
    tag = f"{image['newTag']}-cpu" if overlay == CPU else image["newTag"]
    for container in rendered(overlay).containers:
        assert container["image"] == f"{image['newName']}:{tag}", container["name"]


def test_pods_run_as_a_service_account_without_a_token(manifests, pod_spec):
    account = manifests["ServiceAccount/styleserve"]
    assert account["automountServiceAccountToken"] is False
    assert pod_spec["serviceAccountName"] == account["metadata"]["name"]
    assert pod_spec["automountServiceAccountToken"] is False


def test_network_policy_admits_clients_to_grpc_and_monitoring_to_metrics(
    manifests, server_container
):
    policy = manifests["NetworkPolicy/styleserve"]["spec"]
    labels = manifests["Deployment/styleserve"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"} and policy["egress"] == []
    admitted = {
        rule["ports"][0]["port"]: rule["from"] for rule in policy["ingress"] if rule["ports"]
    }
    assert all(len(rule["ports"]) == 1 for rule in policy["ingress"])
    assert admitted == {
        "grpc": [
            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"styleserve-client": "true"}}}
        ],
        "metrics": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
    }
    # Named ports: they must be the container's.
    assert set(admitted) <= {p["name"] for p in server_container["ports"]}


# --- TLS ------------------------------------------------------------------------------------------


def _with_local_tls_files(env: dict[str, str], directory: Path) -> dict[str, str]:
    """``env`` with its TLS files (the Secret's keys) replaced by real ones in ``directory``,
    so that the settings class can validate the whole configuration."""
    write_tls_secret(directory)
    return {
        k: str(directory / PurePosixPath(v).name) if k.startswith("STYLESERVE_TLS_") else v
        for k, v in env.items()
    }


@pytest.mark.parametrize("overlay", ["tls", "mtls"])
def test_tls_overlays_mount_the_secret_and_probe_the_health_port(
    rendered, monkeypatch, tmp_path: Path, overlay
):
    from styleserve_server.settings import Settings

    output = rendered(overlay)
    (volume,) = [v for v in output.pod_spec["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "styleserve-tls"
    (mount,) = [m for m in output.server["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    # The files are the Secret's keys, as kubernetes.io/tls Secrets and cert-manager name them.
    files = {k: v for k, v in output.env.items() if k.startswith("STYLESERVE_TLS_")}
    expected = {"STYLESERVE_TLS_CERT_FILE": "tls.crt", "STYLESERVE_TLS_KEY_FILE": "tls.key"}
    if overlay == "mtls":
        expected["STYLESERVE_TLS_CLIENT_CA_FILE"] = "ca.crt"
    assert files == {k: f"{mount['mountPath']}/{name}" for k, name in expected.items()}

    for name in [n for n in os.environ if n.startswith("STYLESERVE_")]:
        monkeypatch.delenv(name)
    for name, value in _with_local_tls_files(output.env, tmp_path).items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # the whole configuration validates, TLS files included
    assert settings.uses_tls and (settings.tls_client_ca_file is not None) == (overlay == "mtls")
    ports = {p["name"]: p["containerPort"] for p in output.server["ports"]}
    assert ports == {
        "grpc": settings.port,
        "health": settings.health_port,
        "metrics": settings.metrics_port,
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        # kubelet's gRPC probes speak plaintext: the health-only port.
        assert output.server[probe]["grpc"] == {"port": settings.health_port}, probe
    (grpc_port,) = output.objects["Service/styleserve"]["spec"]["ports"]
    assert grpc_port["appProtocol"] == "https"
    # Nobody but kubelet (from the node) needs the health port: no policy admits it.
    policy = output.objects["NetworkPolicy/styleserve"]["spec"]
    assert "health" not in {p["port"] for rule in policy["ingress"] for p in rule["ports"]}


@pytest.mark.parametrize("overlay", ["baked", "cpu", "index-init", "volume"])
def test_plaintext_overlays_have_no_tls_settings(rendered, overlay):
    output = rendered(overlay)
    assert not [k for k in output.env if k.startswith("STYLESERVE_TLS_")]
    assert "STYLESERVE_HEALTH_PORT" not in output.env
    assert output.server["readinessProbe"]["grpc"] == {"port": int(output.env["STYLESERVE_PORT"])}


def test_cert_manager_certificate_is_the_secret_the_tls_component_mounts():
    documents = list(
        yaml.safe_load_all((K8S / "cert-manager" / "certificates.yaml").read_text(encoding="utf-8"))
    )
    certificates = {
        d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "Certificate"
    }
    server = certificates["styleserve"]
    assert server["secretName"] == "styleserve-tls" and server["usages"] == ["server auth"]
    assert "styleserve.styleserve.svc.cluster.local" in server["dnsNames"]
    assert certificates["styleserve-client"]["usages"] == ["client auth"]
    # Both issued by the CA whose ca.crt the mTLS component trusts for clients.
    assert server["issuerRef"] == certificates["styleserve-client"]["issuerRef"]

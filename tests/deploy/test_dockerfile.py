"""The Dockerfile lints clean and agrees with the code it packages.

No Docker engine runs on these machines, so the image is never built here: hadolint checks
the file, and the rest checks what the image would run against the project itself.
"""

from __future__ import annotations

import importlib.util
import re
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from deploy_files import ROOT, Dockerfile

from scripts.lock import pins


def test_hadolint_finds_nothing(run_tool):
    done = run_tool("hadolint", "--no-color", "Dockerfile")
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_hadolint_reports_a_bad_dockerfile(run_tool, tmp_path: Path):
    # The check above means something only if hadolint really reads the file it is given.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n", encoding="utf-8")
    done = run_tool("hadolint", "--no-color", bad)
    assert done.returncode != 0
    assert "DL3007" in done.stdout and "DL3013" in done.stdout, done.stdout


def test_entrypoint_is_a_console_script_in_exec_form(dockerfile: Dockerfile):
    entrypoint = dockerfile.entrypoint()  # JSON: the exec form, so SIGTERM reaches the server
    # The installed metadata of this checkout (pip install -e), i.e. pyproject's [project.scripts].
    scripts = {
        e.name: e.value
        for e in entry_points(group="console_scripts")
        if e.dist is not None and e.dist.name == "styleserve"
    }
    assert entrypoint[0] in scripts, f"{entrypoint[0]} is not a console script: {sorted(scripts)}"
    module = scripts[entrypoint[0]].partition(":")[0]
    assert entrypoint == ["styleserve-server"]
    assert importlib.util.find_spec(module) is not None, f"{module} does not exist"


def test_final_stage_runs_as_the_deployments_non_root_user(dockerfile: Dockerfile, pod_spec):
    (user,) = dockerfile.final("USER")
    uid, _, gid = user.arguments.replace("${UID}", dockerfile.final_args()["UID"]).partition(":")
    # Numeric: Kubernetes' runAsNonRoot can verify only a numeric user.
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    security = pod_spec["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid))


def test_final_stage_has_no_compiler_and_no_pip_cache(dockerfile: Dockerfile):
    runs = " ".join(i.arguments for i in dockerfile.final("RUN"))
    assert not re.search(r"\b(apt-get|apk|gcc|g\+\+|build-essential)\b", runs), runs
    assert dockerfile.final_env().get("PIP_NO_CACHE_DIR") == "1"
    for instruction in dockerfile.instructions:
        if instruction.keyword == "RUN" and "pip install" in instruction.arguments:
            assert "--no-cache-dir" in instruction.arguments, f"line {instruction.line}"


def test_image_environment_is_real_server_settings(dockerfile: Dockerfile, monkeypatch):
    from styleserve_server.settings import Settings

    env = {k: v for k, v in dockerfile.final_env().items() if k.startswith("STYLESERVE_")}
    unknown = {k for k in env if k.removeprefix("STYLESERVE_").lower() not in Settings.model_fields}
    assert not unknown, f"not settings of styleserve-server: {sorted(unknown)}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # validates the values too
    assert settings.host == "0.0.0.0", "a container must listen beyond its loopback"
    exposed = {int(p) for i in dockerfile.final("EXPOSE") for p in i.arguments.split()}
    assert exposed == {settings.port, settings.metrics_port}


def test_baked_and_volume_weights_share_one_path(dockerfile: Dockerfile, configmap_env):
    cache_dir = dockerfile.final_env()["STYLESERVE_CACHE_DIR"]
    copied = [i.arguments.split()[-1] for i in dockerfile.final("COPY") if "weights" in i.arguments]
    assert copied == [cache_dir]
    # The overlays' weight volumes are checked against this ConfigMap value in
    # test_k8s_manifests.py (mounted exactly there, or, baked, nothing over it).
    assert configmap_env["STYLESERVE_CACHE_DIR"] == cache_dir


def test_image_ships_the_torch_release_ci_tests():
    image = pins(ROOT / "locks" / "image-cuda.txt")["torch"]
    ci = pins(ROOT / "locks" / "dev-cpu.txt")["torch"]
    assert image == ci.removesuffix("+cpu") and "+" not in image


def test_image_installs_only_from_its_lock(dockerfile: Dockerfile):
    """Every pip install in the image is the hash-checked lock or the project itself with no
    dependencies resolved: nothing floats at build time."""
    installs = [i for i in dockerfile.instructions if "pip install" in i.arguments]
    assert installs
    for instruction in installs:
        words = instruction.arguments.split()
        assert "--no-deps" in words, f"line {instruction.line}: resolves dependencies"
        assert "--require-hashes" in words or words[-1] == ".", f"line {instruction.line}"
        if "-r" in words:
            copied = [
                i.arguments.split()[0] for i in dockerfile.instructions if i.keyword == "COPY"
            ]
            assert words[words.index("-r") + 1] == "image-cuda.txt"
            assert "locks/image-cuda.txt" in copied


def test_image_lock_gives_torch_and_onnxruntime_one_cuda_major():
    """onnxruntime-gpu's CUDA and cuDNN come from the same NVIDIA wheels as torch's, so both
    load one CUDA runtime: the lock's CUDA runtime is wanted by both, and every NVIDIA wheel
    that names a CUDA major names the runtime's."""
    path = ROOT / "locks" / "image-cuda.txt"
    lock = path.read_text(encoding="utf-8")
    major = pins(path)["nvidia-cuda-runtime"].split(".")[0]
    # The runtime's entry up to the next package: its hashes and the packages that want it.
    entry = lock.split("\nnvidia-cuda-runtime==", 1)[1].split("\nnvidia-", 1)[0]
    assert "#   onnxruntime-gpu" in entry and "#   cuda-toolkit" in entry, entry
    assert pins(path)["cuda-toolkit"].split(".")[0] == major  # torch's CUDA
    suffixed = re.findall(r"^nvidia-[a-z-]+-cu(\d+)==", lock, re.MULTILINE)
    assert suffixed and set(suffixed) == {major}, suffixed


def test_copied_paths_exist_and_pass_the_dockerignore(dockerfile: Dockerfile):
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    admitted = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, ".dockerignore is an allow-list: it starts by excluding everything"
    for instruction in dockerfile.instructions:
        if instruction.keyword != "COPY" or "--from=" in instruction.arguments:
            continue
        *sources, _ = instruction.arguments.split()
        for source in sources:
            source = source.rstrip("/")
            assert (ROOT / source).exists(), f"line {instruction.line}: {source} does not exist"
            assert source in admitted, f"line {instruction.line}: .dockerignore drops {source}"


@pytest.mark.parametrize("required", ["pyproject.toml", "README.md"])
def test_build_context_holds_the_package_metadata(dockerfile: Dockerfile, required: str):
    # pyproject.toml names README.md as the readme: a build without it fails.
    copied: list[Any] = [
        s for i in dockerfile.instructions if i.keyword == "COPY" for s in i.arguments.split()
    ]
    assert required in copied

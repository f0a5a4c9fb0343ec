"""The Dockerfile lints clean and agrees with the code it packages.

No Docker engine runs on these machines, so the images are never built here: hadolint checks
the file, the rest checks each target (``cuda``, the default, and ``cpu``) against the project
itself, and the images' health check runs, as Docker would run it, against real servers.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import tomllib

from scripts.lock import PYTORCH_CPU_INDEX, pins
from tests.deploy.deploy_files import ROOT, Dockerfile, write_tls_secret
from tests.fixtures_server import free_port

# docker build --target NAME: each image and the lock its environment is made from.
LOCKS = {"cuda": "image-cuda.txt", "cpu": "image-cpu.txt"}
TARGETS = sorted(LOCKS)


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


def _console_scripts() -> dict[str, str]:
    """The installed metadata of this checkout (pip install -e), i.e. pyproject's
    [project.scripts]."""
    return {
        e.name: e.value
        for e in entry_points(group="console_scripts")
        if e.dist is not None and e.dist.name == "styleserve"
    }


def test_the_default_build_is_the_cuda_image_and_cpu_is_a_target(dockerfile: Dockerfile):
    # `docker build .` builds the last stage: the CUDA image, as before the CPU one existed.
    assert dockerfile.default_target == "cuda"
    assert set(TARGETS) <= set(dockerfile.stages)


@pytest.mark.parametrize("target", TARGETS)
def test_each_image_runs_the_environment_of_its_own_lock(dockerfile: Dockerfile, target: str):
    image = dockerfile.target(target)
    (venv,) = [i for i in image.of("COPY") if i.arguments.endswith("/opt/venv /opt/venv")]
    built = dockerfile.target(venv.arguments.split()[0].removeprefix("--from="))
    locks = [
        words[words.index("-r") + 1]
        for i in built.of("RUN")
        if "-r" in (words := i.arguments.split())
    ]
    assert locks == [LOCKS[target]]
    copied = [i.arguments.split()[0] for i in built.of("COPY")]
    assert f"locks/{LOCKS[target]}" in copied


@pytest.mark.parametrize("target", TARGETS)
def test_only_the_cuda_image_asks_the_nvidia_toolkit_for_gpus(dockerfile: Dockerfile, target):
    nvidia = {k for k in dockerfile.target(target).env() if k.startswith("NVIDIA_")}
    expected = (
        {"NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"} if target == "cuda" else set()
    )
    assert nvidia == expected


@pytest.mark.parametrize("target", TARGETS)
def test_entrypoint_is_a_console_script_in_exec_form(dockerfile: Dockerfile, target: str):
    # JSON: the exec form, so SIGTERM reaches the server.
    entrypoint = dockerfile.target(target).entrypoint()
    scripts = _console_scripts()
    assert entrypoint[0] in scripts, f"{entrypoint[0]} is not a console script: {sorted(scripts)}"
    module = scripts[entrypoint[0]].partition(":")[0]
    assert entrypoint == ["styleserve-server"]
    assert importlib.util.find_spec(module) is not None, f"{module} does not exist"


@pytest.mark.parametrize("target", TARGETS)
def test_image_runs_as_the_deployments_non_root_user(dockerfile: Dockerfile, target, pod_spec):
    image = dockerfile.target(target)
    (user,) = image.of("USER")
    uid, _, gid = user.arguments.replace("${UID}", image.args()["UID"]).partition(":")
    # Numeric: Kubernetes' runAsNonRoot can verify only a numeric user.
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    security = pod_spec["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid))


@pytest.mark.parametrize("target", TARGETS)
def test_image_has_no_compiler_and_no_pip_cache(dockerfile: Dockerfile, target: str):
    image = dockerfile.target(target)
    runs = " ".join(i.arguments for i in image.of("RUN"))
    assert not re.search(r"\b(apt-get|apk|gcc|g\+\+|build-essential)\b", runs), runs
    assert image.env().get("PIP_NO_CACHE_DIR") == "1"
    for instruction in dockerfile.instructions:
        if instruction.keyword == "RUN" and "pip install" in instruction.arguments:
            assert "--no-cache-dir" in instruction.arguments, f"line {instruction.line}"


@pytest.mark.parametrize("target", TARGETS)
def test_image_environment_is_real_server_settings(dockerfile: Dockerfile, target, monkeypatch):
    from styleserve_server.settings import Settings

    image = dockerfile.target(target)
    env = {k: v for k, v in image.env().items() if k.startswith("STYLESERVE_")}
    unknown = {k for k in env if k.removeprefix("STYLESERVE_").lower() not in Settings.model_fields}
    assert not unknown, f"not settings of styleserve-server: {sorted(unknown)}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # validates the values too
    assert settings.host == "0.0.0.0", "a container must listen beyond its loopback"
    exposed = {int(p) for i in image.of("EXPOSE") for p in i.arguments.split()}
    assert exposed == {settings.port, settings.metrics_port}


@pytest.mark.parametrize("target", TARGETS)
def test_baked_and_volume_weights_share_one_path(dockerfile: Dockerfile, target, configmap_env):
    image = dockerfile.target(target)
    cache_dir = image.env()["STYLESERVE_CACHE_DIR"]
    copied = [i.arguments.split()[-1] for i in image.of("COPY") if "weights" in i.arguments]
    assert copied == [cache_dir]
    # The overlays' weight volumes are checked against this ConfigMap value in
    # test_k8s_manifests.py (mounted exactly there, or, baked, nothing over it).
    assert configmap_env["STYLESERVE_CACHE_DIR"] == cache_dir


@pytest.mark.parametrize(("target", "build"), [("cuda", ""), ("cpu", "+cpu")])
def test_image_ships_the_torch_release_ci_tests(target: str, build: str):
    image = pins(ROOT / "locks" / LOCKS[target])["torch"]
    ci = pins(ROOT / "locks" / "dev-cpu.txt")["torch"]
    # The same release; PyPI's default Linux wheel (CUDA) or PyTorch's CPU build.
    assert image == ci.removesuffix("+cpu") + build


def test_image_installs_only_from_its_lock(dockerfile: Dockerfile):
    """Every pip install or wheel build in the images is a hash-checked lock, or the project
    itself (built from the checkout, then that wheel installed), with no dependencies resolved:
    nothing floats at build time."""
    copied = [i.arguments.split()[0] for i in dockerfile.instructions if i.keyword == "COPY"]
    commands = [
        (instruction.line, command.split())
        for instruction in dockerfile.instructions
        for command in re.findall(r"pip (?:install|wheel) [^&]+", instruction.arguments)
    ]
    assert len(commands) == 5, commands
    for line, words in commands:
        assert "--no-deps" in words, f"line {line}: resolves dependencies"
        if "-r" in words:
            assert "--require-hashes" in words, f"line {line}"
            assert f"locks/{words[words.index('-r') + 1]}" in copied, f"line {line}"
        else:
            assert words[-1] in (".", "/dist/styleserve-*.whl"), f"line {line}"


def test_cpu_image_finds_torch_where_its_lock_was_made(dockerfile: Dockerfile):
    # PyTorch's CPU index, the one scripts/lock.py locks torch's CPU build from (a mirror may
    # replace it at build time; the hashes still decide).
    build = dockerfile.target("cpu-build")
    assert build.args()["TORCH_CPU_INDEX"] == PYTORCH_CPU_INDEX
    (install,) = [i for i in build.of("RUN") if LOCKS["cpu"] in i.arguments]
    assert '--extra-index-url "$TORCH_CPU_INDEX"' in install.arguments


def test_cpu_lock_carries_no_cuda():
    cuda = [n for n in pins(ROOT / "locks" / LOCKS["cpu"]) if n.startswith(("nvidia-", "cuda-"))]
    assert not cuda


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


def test_build_context_holds_the_package_metadata(dockerfile: Dockerfile):
    # pyproject.toml names the readme and the licence files: a build without them fails or,
    # for the licence, leaves it out of the wheel.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    required = {"pyproject.toml", project["readme"], *project["license-files"]}
    copied: list[Any] = [
        s for i in dockerfile.instructions if i.keyword == "COPY" for s in i.arguments.split()
    ]
    assert required <= set(copied)


# --- the health check --------------------------------------------------------------------------


def _seconds(duration: str) -> float:
    value, unit = re.fullmatch(r"(\d+)(s|m)", duration).groups()
    return int(value) * (60 if unit == "m" else 1)


@pytest.mark.parametrize("target", TARGETS)
def test_healthcheck_is_the_clis_health_command(
    dockerfile: Dockerfile, target: str, server_container, monkeypatch
):
    from styleserve.cli import build_parser
    from styleserve_server.settings import Settings

    image = dockerfile.target(target)
    options, command = image.healthcheck()  # JSON: the exec form, no shell in the image needed
    assert command[0] in _console_scripts() and _console_scripts()[command[0]].startswith(
        "styleserve.cli:"
    )
    monkeypatch.delenv("STYLESERVE_SERVER", raising=False)
    for name, value in image.env().items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(command[1:])
    assert args.command == "health" and args.service == ""
    # It dials the port the image's server listens on (on loopback: it binds every address).
    assert args.server == f"127.0.0.1:{Settings().port}"
    # The call gives up before Docker kills it, and the checks do not overlap.
    assert args.timeout < _seconds(options["--timeout"]) <= _seconds(options["--interval"])
    # The same start-up budget as the cluster's startup probe, for loading and warming up.
    startup = server_container["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert _seconds(options["--start-period"]) == budget
    assert int(options["--retries"]) >= 1


def _run_healthcheck(dockerfile: Dockerfile, server: str) -> subprocess.CompletedProcess[str]:
    """The images' health check as Docker runs it, with STYLESERVE_SERVER set in the container."""
    (command,) = {tuple(dockerfile.target(t).healthcheck()[1]) for t in TARGETS}
    executable = Path(sys.executable).parent / command[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STYLESERVE_")}
    return subprocess.run(
        [str(executable), *command[1:]],
        env={**env, "STYLESERVE_SERVER": server},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_healthcheck_passes_on_a_serving_server_and_fails_with_1_without_one(
    dockerfile: Dockerfile, start_server
):
    with start_server() as server:
        done = _run_healthcheck(dockerfile, server.target)
    assert (done.returncode, done.stdout.strip()) == (0, "SERVING"), done.stderr
    # 1 is "unhealthy" to Docker; 2 is reserved.
    done = _run_healthcheck(dockerfile, f"127.0.0.1:{free_port()}")
    assert done.returncode == 1, done.stdout + done.stderr


def test_healthcheck_under_tls_asks_the_plaintext_health_port(
    dockerfile: Dockerfile, start_server, tmp_path: Path
):
    write_tls_secret(tmp_path)
    tls = {"tls_cert_file": tmp_path / "tls.crt", "tls_key_file": tmp_path / "tls.key"}
    with start_server(**tls, tls_client_ca_file=tmp_path / "ca.crt", health_port=0) as server:
        # What deploy/README.md says to set: STYLESERVE_SERVER=127.0.0.1:<health port>.
        on_health_port = _run_healthcheck(dockerfile, f"127.0.0.1:{server.server.health_port}")
        on_tls_port = _run_healthcheck(dockerfile, server.target)
    assert on_health_port.returncode == 0, on_health_port.stderr
    # Without it the check cannot pass under TLS (mTLS here): plaintext to the TLS port.
    assert on_tls_port.returncode == 1

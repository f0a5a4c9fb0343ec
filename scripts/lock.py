"""The project's locks: one per environment it installs, made from pyproject.toml by uv.

pyproject.toml keeps honest floors for people who install the library; the locks under
``locks/`` are what the project itself installs, exact versions with hashes, so no new release
on the package index can change a developer's, CI's or the image's environment. Four
environments, all CPython 3.11 on Linux x86-64 (what CI and the image run):

- ``locks/dev-cpu.txt``: development, CI and the demo (server, dev and video extras, torch's CPU
  build) - scripts/venv.sh makes .venv equal to it;
- ``locks/image-cuda.txt``: the server image for GPU nodes (server and cuda extras, torch's
  CUDA build) - the Dockerfile installs it and nothing else;
- ``locks/image-cpu.txt``: the server image for CPU nodes (server extra, torch's CPU build) -
  the Dockerfile's ``cpu`` target installs it and nothing else;
- ``locks/client.txt``: the client alone (no extra).

Every lock carries the build backend too, so the project itself is built from the lock
(``--no-build-isolation``), and a fingerprint of its inputs (the dependency tables of
pyproject.toml and the platform constraints), so CI sees a lock that pyproject.toml has left.

    python scripts/lock.py refresh [--upgrade]   (what scripts/lock.sh runs)
    python scripts/lock.py check                 every lock matches its inputs
    python scripts/lock.py check-env LOCK        the running interpreter's packages equal LOCK
    python scripts/lock.py torch-source          uv's options for torch's CPU build, one a line

Stdlib only: it runs before any environment exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import distributions
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
REFRESH_COMMAND = "scripts/lock.sh"
PYTHON_VERSION = "3.11"
PYTHON_PLATFORM = "x86_64-manylinux_2_28"
FINGERPRINT_PREFIX = "# inputs-sha256: "
# Where torch's CPU build comes from for uv when pip is not set up with a wheel house of its own.
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# The project itself is installed from the checkout, never from a lock.
PROJECT = "styleserve"


@dataclass(frozen=True)
class Lock:
    path: str
    extras: tuple[str, ...]
    constraints: str | None
    purpose: str


LOCKS = (
    Lock(
        "locks/dev-cpu.txt",
        ("server", "dev", "video"),
        "constraints/cpu.txt",
        "development and CI, CPU",
    ),
    Lock("locks/image-cuda.txt", ("server", "cuda"), "constraints/cuda.txt", "the server image"),
    Lock("locks/image-cpu.txt", ("server",), "constraints/cpu.txt", "the server image, CPU"),
    Lock("locks/client.txt", (), None, "the client alone"),
)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _significant_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text("utf-8").splitlines())
    return [line for line in lines if line]


def build_requirements() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    return list(pyproject["build-system"]["requires"])


def fingerprint(lock: Lock) -> str:
    """A digest of everything the lock is made from: the dependency tables of pyproject.toml
    (parsed, so comments and formatting do not count), the constraints and the lock's own
    definition."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    project = pyproject["project"]
    inputs = {
        "requires-python": project["requires-python"],
        "dependencies": project["dependencies"],
        "extras": {name: project["optional-dependencies"][name] for name in lock.extras},
        "build-system": build_requirements(),
        "constraints": _significant_lines(ROOT / lock.constraints) if lock.constraints else [],
        "target": [PYTHON_VERSION, PYTHON_PLATFORM],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def pins(lock_path: Path) -> dict[str, str]:
    """``{normalised name: version}`` of a requirements-style lock."""
    found = {}
    for line in lock_path.read_text("utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", line)
        if match:
            found[_normalise(match[1])] = match[2]
    return found


def torch_source() -> list[str]:
    """uv's options for finding torch's CPU build: a wheel house pip is configured with (the
    project's build machines keep the build there), else PyTorch's CPU index, searched beside
    the default one (safe with hashes: a file of another origin fails its hash)."""
    if any(name in os.environ for name in ("UV_FIND_LINKS", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL")):
        return []
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    links = re.findall(r"find-links='([^']+)'", listed)
    if links:
        return ["--find-links", links[0]]
    return ["--extra-index-url", PYTORCH_CPU_INDEX, "--index-strategy", "unsafe-best-match"]


def _uv() -> str:
    for candidate in (ROOT / ".venv" / "bin" / "uv", shutil.which("uv")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    sys.exit("lock: uv is not installed (scripts/venv.sh installs it into .venv)")


def refresh(upgrade: bool) -> None:
    uv = _uv()
    for lock in LOCKS:
        target = ROOT / lock.path
        target.parent.mkdir(exist_ok=True)
        command = [uv, "pip", "compile", "pyproject.toml", "-", "--quiet", "--generate-hashes"]
        command += ["--python-version", PYTHON_VERSION, "--python-platform", PYTHON_PLATFORM]
        command += ["--custom-compile-command", REFRESH_COMMAND, "-o", lock.path]
        command += [arg for extra in lock.extras for arg in ("--extra", extra)]
        if lock.constraints:
            command += ["--constraint", lock.constraints]
        command += torch_source() if lock.constraints == "constraints/cpu.txt" else []
        command += ["--upgrade"] if upgrade else []
        stdin = "\n".join(build_requirements()) + "\n"
        subprocess.run(command, input=stdin, text=True, cwd=ROOT, check=True)
        header = f"{FINGERPRINT_PREFIX}{fingerprint(lock)}\n# for: {lock.purpose}\n"
        target.write_text(header + target.read_text("utf-8"), "utf-8")
        print(f"lock: {lock.path}: {len(pins(target))} packages")


def stale_locks() -> list[str]:
    stale = []
    for lock in LOCKS:
        path = ROOT / lock.path
        first = path.read_text("utf-8").splitlines()[0] if path.exists() else ""
        if first != FINGERPRINT_PREFIX + fingerprint(lock):
            stale.append(lock.path)
    return stale


def environment_drift(lock_path: Path) -> list[str]:
    """How the running interpreter's packages differ from the lock (the project excepted)."""
    wanted = pins(lock_path)
    installed = {_normalise(d.metadata["Name"]): d.version for d in distributions()}
    installed.pop(PROJECT, None)
    drift = [f"missing: {n}=={v}" for n, v in sorted(wanted.items()) if n not in installed]
    drift += [f"not in the lock: {n}=={v}" for n, v in sorted(installed.items()) if n not in wanted]
    drift += [
        f"{n}: {installed[n]} installed, {v} locked"
        for n, v in sorted(wanted.items())
        if n in installed and installed[n] != v
    ]
    return drift


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    refresh_parser = commands.add_parser("refresh", help="make every lock from its inputs")
    refresh_parser.add_argument("--upgrade", action="store_true", help="newest allowed releases")
    commands.add_parser("check", help="fail when a lock no longer matches pyproject.toml")
    env_parser = commands.add_parser("check-env", help="fail when this environment is not LOCK")
    env_parser.add_argument("lock", type=Path)
    commands.add_parser("torch-source", help="uv's options for torch's CPU build, one a line")
    args = parser.parse_args()
    if args.command == "refresh":
        refresh(args.upgrade)
    elif args.command == "torch-source":
        print("\n".join(torch_source()))
    elif args.command == "check":
        stale = stale_locks()
        if stale:
            sys.exit(
                f"lock: {', '.join(stale)} no longer match pyproject.toml or the constraints: "
                f"run {REFRESH_COMMAND} and commit the locks (a reviewed commit of its own)"
            )
        print(f"lock: {len(LOCKS)} locks match their inputs")
    else:
        drift = environment_drift(args.lock)
        if drift:
            sys.exit(f"lock: {sys.prefix} differs from {args.lock}:\n  " + "\n  ".join(drift))
        print(f"lock: {sys.prefix} equals {args.lock}")


if __name__ == "__main__":
    main()

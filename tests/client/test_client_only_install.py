"""A client-only install (``pip install styleserve``, no ``server`` extra) works as a client,
and its server-side commands say how to get the extra instead of failing with a traceback."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest
from styleserve.commands import INSTALL_HINT

ROOT = Path(__file__).resolve().parents[2]

# Runs a command's entry point in a process where the server's dependencies cannot be imported,
# as in an install without the extra.
_WITHOUT_SERVER_DEPENDENCIES = """
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "pydantic", "pydantic_settings", "numpy"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
from styleserve import commands
sys.exit(getattr(commands, sys.argv[1])())
"""


@pytest.mark.parametrize(
    ("entry", "command"), [("server", "styleserve-server"), ("export", "styleserve-export")]
)
def test_a_missing_extra_gets_the_install_hint_and_exit_1(entry: str, command: str):
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SERVER_DEPENDENCIES, entry],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert (
        done.stderr.startswith(f"{command}: needs the server extra") and INSTALL_HINT in done.stderr
    )
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_fresh_client_only_virtualenv(tmp_path: Path):
    """The real thing: a new virtualenv made equal to the client's lock (locks/client.txt,
    hash-checked) and the project built from the checkout, nothing else."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    bin_dir = env_dir / "bin"
    uv = Path(sys.executable).parent / "uv"
    for command, *arguments in (
        ["sync", "--require-hashes", ROOT / "locks" / "client.txt"],
        ["install", "--no-deps", "--no-build-isolation", ROOT],
    ):
        install = subprocess.run(
            [uv, "pip", command, "--quiet", "--python", bin_dir / "python", *arguments],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert install.returncode == 0, install.stdout + install.stderr
    equal = subprocess.run(
        [bin_dir / "python", ROOT / "scripts" / "lock.py", "check-env", "locks/client.txt"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert equal.returncode == 0, equal.stdout + equal.stderr
    probe = "import importlib.util as u; print(u.find_spec('torch') is None)"
    assert (
        subprocess.run(
            [bin_dir / "python", "-c", probe], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "True"
    )
    usage = subprocess.run(
        [bin_dir / "styleserve", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert usage.returncode == 0 and "stylize" in usage.stdout, usage.stderr
    for command in ("styleserve-server", "styleserve-export"):
        done = subprocess.run(
            [bin_dir / command], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 1, done.stderr
        assert INSTALL_HINT in done.stderr and "Traceback" not in done.stderr, done.stderr

"""The locks: committed locks match pyproject.toml, a lock that pyproject.toml has left fails with
the refresh command, the environment the tests run in is the dev lock, and scripts/venv.sh makes
an old environment equal to the lock again (a sync, not an add)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.lock import LOCKS, REFRESH_COMMAND, environment_drift, pins

ROOT = Path(__file__).resolve().parents[1]


def _lock_check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, root / "scripts" / "lock.py", "check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _copy(names: list[str], into: Path) -> None:
    for name in names:
        source, target = ROOT / name, into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(
                source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy2(source, target)


def test_committed_locks_match_their_inputs():
    done = _lock_check(ROOT)
    assert done.returncode == 0, done.stderr


def test_a_floor_changed_without_a_refresh_fails_naming_the_refresh_command(tmp_path: Path):
    _copy(["pyproject.toml", "scripts/lock.py", "constraints", "locks"], tmp_path)
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    # A comment is not an input: the locks still match.
    pyproject.write_text(text.replace("[project]", "# a note\n[project]"), encoding="utf-8")
    assert _lock_check(tmp_path).returncode == 0
    assert '"tqdm>=4.66"' in text
    pyproject.write_text(text.replace('"tqdm>=4.66"', '"tqdm>=4.67"'), encoding="utf-8")
    done = _lock_check(tmp_path)
    assert done.returncode == 1
    # tqdm is in every environment, so every lock is stale.
    assert all(lock.path in done.stderr for lock in LOCKS)
    assert f"run {REFRESH_COMMAND}" in done.stderr


def test_the_tests_run_in_the_environment_of_the_dev_lock():
    """What `pip freeze` lists here is the lock: the same names at the same versions."""
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    frozen = dict(line.split("==", 1) for line in freeze.splitlines() if "==" in line)
    locked = pins(ROOT / "locks" / "dev-cpu.txt")
    assert {n.lower().replace("_", "-"): v for n, v in frozen.items()} == locked
    assert environment_drift(ROOT / "locks" / "dev-cpu.txt") == []


@pytest.mark.slow
def test_venv_sh_syncs_an_old_environment_back_to_the_lock(tmp_path: Path):
    """A scratch checkout whose lock holds the installer and build backend alone: the first run
    makes the environment equal to it; a package installed by hand is left alone until the lock
    changes, and the next run removes it."""
    _copy(
        ["pyproject.toml", "README.md", "LICENSE", "scripts", "client", "server", "model_export"],
        tmp_path,
    )
    entries, keep = [], False
    for line in (ROOT / "locks" / "dev-cpu.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith((" ", "#")):
            keep = line.split("==", 1)[0] in ("pip", "setuptools", "uv")
        if keep:
            entries.append(line)
    lock = tmp_path / "locks" / "dev-cpu.txt"
    lock.parent.mkdir()
    lock.write_text("\n".join(entries) + "\n", encoding="utf-8")
    assert set(pins(lock)) == {"pip", "setuptools", "uv"}
    env = {**os.environ, "VENV_DIR": str(tmp_path / "venv")}
    env.pop("VIRTUAL_ENV", None)
    env.pop("SKIP_INSTALL", None)

    def setup_and_check() -> subprocess.CompletedProcess[str]:
        script = "source scripts/venv.sh && python scripts/lock.py check-env locks/dev-cpu.txt"
        return subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    first = setup_and_check()
    assert first.returncode == 0, first.stdout + first.stderr
    # A package installed by hand: a distribution's metadata is what installers read.
    (site,) = (tmp_path / "venv" / "lib").glob("python3.*/site-packages")
    extra = site / "leftover-1.0.dist-info"
    extra.mkdir()
    (extra / "METADATA").write_text("Metadata-Version: 2.1\nName: leftover\nVersion: 1.0\n")
    (extra / "RECORD").write_text(
        "leftover-1.0.dist-info/METADATA,,\nleftover-1.0.dist-info/RECORD,,\n"
    )
    drifted = setup_and_check()
    assert drifted.returncode == 1 and "not in the lock: leftover==1.0" in drifted.stderr
    lock.write_text(lock.read_text(encoding="utf-8") + "# refreshed\n", encoding="utf-8")
    synced = setup_and_check()
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert not extra.exists()

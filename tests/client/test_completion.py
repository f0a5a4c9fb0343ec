"""``styleserve completion SHELL``: shtab's script made from the real parser, and bash
completing with it as a user's shell would (the installed console script, sourced in bash).

zsh and tcsh are not on the test machines: their scripts are checked for what they name.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from styleserve.cli import build_parser
from styleserve.options import PRESETS

# The console script a user runs, from the environment running the tests.
STYLESERVE = Path(sys.executable).parent / "styleserve"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def _script(shell: str) -> str:
    done = subprocess.run(
        [STYLESERVE, "completion", shell], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _bash(command: str, source: str, cwd: Path | None = None) -> str:
    """Runs ``command`` in a bash that has sourced the completion script from ``source``."""
    done = subprocess.run(
        ["bash", "-c", f"source {source} && {command}"],
        env={**os.environ, "STYLESERVE": str(STYLESERVE)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def complete(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., set[str]]:
    """``complete(*words, cwd=None)``: what bash offers for the last of ``words`` (as typed
    after ``styleserve``), asking the function the script registered, as bash does on Tab."""
    script = tmp_path_factory.mktemp("completion") / "styleserve.bash"
    script.write_text(_script("bash"), encoding="utf-8")

    def offered(*words: str, cwd: Path | None = None) -> set[str]:
        line = ["styleserve", *words]
        shown = _bash(
            f"COMP_WORDS=({shlex.join(line)}); COMP_CWORD={len(line) - 1}; "
            '_shtab_styleserve; printf "%s\\n" "${COMPREPLY[@]}"',
            shlex.quote(str(script)),
            cwd,
        )
        return set(shown.split())

    return offered


@pytest.mark.parametrize("shell", ["bash", "zsh", "tcsh"])
def test_the_script_names_the_subcommands_flags_and_choices(shell: str):
    script = _script(shell)
    parser = build_parser()
    for name, subparser in _subcommands(parser).items():
        assert name in script, name
        # By name: tcsh's script lists the long flags without their dashes.
        for flag in subparser._option_string_actions:
            assert flag.lstrip("-") in script, f"{name} {flag}"
    assert all(preset in script for preset in PRESETS)


def test_bash_registers_a_completion_for_styleserve():
    # The line the help suggests for ~/.bashrc.
    registered = _bash("complete -p styleserve", source='<("$STYLESERVE" completion bash)')
    assert registered.split()[-1] == "styleserve" and "-F _shtab_styleserve" in registered


def test_bash_completes_every_subcommand(complete):
    assert complete("") == set(_subcommands(build_parser()))
    assert complete("jobs", "") == {"list", "get", "watch", "cancel"}
    assert complete("completion", "") == {"bash", "zsh", "tcsh"}


def test_bash_completes_flags_and_their_choices(complete):
    assert {"--preset", "--preserve-color"} <= complete("stylize", "--pre")
    assert complete("stylize", "--preset", "") == set(PRESETS)


def test_bash_completes_file_names_where_a_command_takes_a_file(complete, tmp_path: Path):
    (tmp_path / "tubingen.jpg").touch()
    (tmp_path / "starry.jpg").touch()
    assert complete("stylize", "tub", cwd=tmp_path) == {"tubingen.jpg"}
    assert complete("stylize", "tubingen.jpg", "st", cwd=tmp_path) == {"starry.jpg"}
    assert complete("stylize", "tubingen.jpg", "-o", "st", cwd=tmp_path) == {"starry.jpg"}


def test_an_unknown_shell_is_a_usage_error():
    done = subprocess.run(
        [STYLESERVE, "completion", "cmd.exe"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "invalid choice" in done.stderr

"""``styleserve completion SHELL``: shtab's script made from the real parser, and bash
completing with it as a user's shell would (the installed console script, sourced in bash).

zsh and tcsh are not on the test machines: the lists their scripts complete from (and bash's)
are read and compared with the parser's subcommands, flags and choices.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from styleserve.cli import build_parser, subcommands
from styleserve.options import PRESETS

# The console script a user runs, from the environment running the tests.
STYLESERVE = Path(sys.executable).parent / "styleserve"


def _word(name: str) -> str:
    """A name as shtab puts it in a variable's (its non-word characters as underscores)."""
    return re.sub(r"\W", "_", name)


def _parsers(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command line, ``styleserve``'s own first (prefix ""), each with the
    prefix of shtab's variables for it (``_jobs_watch`` for ``styleserve jobs watch``)."""
    yield prefix, parser
    for name, subparser in subcommands(parser).items():
        yield from _parsers(subparser, f"{prefix}_{_word(name)}")


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's options that shtab completes (not those whose help is suppressed)."""
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]


def _expected(shell: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """What ``shell``'s script should list for ``parser``, as :func:`_listed` reads it."""
    parsers = list(_parsers(parser))
    commands = {prefix: set(subcommands(p)) for prefix, p in parsers if subcommands(p)}
    flags = {prefix: {f for a in _options(p) for f in a.option_strings} for prefix, p in parsers}
    choices = {
        (prefix, flag): tuple(map(str, a.choices))
        for prefix, p in parsers
        for a in _options(p)
        if a.choices
        for flag in a.option_strings
    }
    if shell == "bash":
        # Its choices are arrays named by parser and flag, or by positional (subcommands too).
        positional = {
            f"{prefix}_pos_{i}": tuple(map(str, a.choices))
            for prefix, p in parsers
            for i, a in enumerate(p._get_positional_actions())
            if a.choices
        }
        named = {f"{prefix}_{_word(flag)}": values for (prefix, flag), values in choices.items()}
        return {"commands": commands, "flags": flags, "choices": named | positional}
    if shell == "zsh":
        return {"commands": commands, "flags": flags, "choices": choices}
    # tcsh mingles every parser's flags: one list of long ones without their dashes, one of
    # short ones (and "-", on the way to a long one); after a subcommand's name, the choices
    # of its first positional (its own subcommands, or a plain choice).
    every = set().union(*flags.values())
    after = {
        name: set(map(str, positionals[0].choices))
        for name, p in (("", parser), *subcommands(parser).items())
        if (positionals := p._get_positional_actions()) and positionals[0].choices
    }
    return {
        "after a command": after,
        "long flags": {f[2:] for f in every if f.startswith("--")},
        "short flags": {f[1:] for f in every if not f.startswith("--")} | {"-"},
        "choices": {(flag, values) for (_, flag), values in choices.items()},
    }


def _listed(shell: str, script: str) -> dict[str, Any]:
    """What ``shell``'s script lists, read from the arrays and word lists shtab writes there
    (not searched for in the whole script, which holds every help text)."""
    root = "_shtab_styleserve"
    if shell == "bash":
        arrays = dict(re.findall(rf"^{root}(\w*)=\((.*)\)$", script, re.MULTILINE))

        def ending(suffix: str) -> dict[str, list[str]]:
            return {
                k.removesuffix(suffix): v.split() for k, v in arrays.items() if k.endswith(suffix)
            }

        return {
            "commands": {k: set(v) for k, v in ending("_subparsers").items()},
            "flags": {k: set(v) for k, v in ending("_option_strings").items()},
            "choices": {k: tuple(v) for k, v in ending("_choices").items()},
        }
    if shell == "zsh":
        commands = re.findall(
            rf"^{root}(\w*)_commands\(\) \{{\n  local _commands=\(\n(.*?)\n  \)",
            script,
            re.MULTILINE | re.DOTALL,
        )
        flags: dict[str, set[str]] = {}
        choices: dict[tuple[str, str], tuple[str, ...]] = {}
        for prefix, block in re.findall(
            rf"^{root}(\w*)_options=\(\n(.*?)\n\)", script, re.MULTILINE | re.DOTALL
        ):
            flags[prefix] = set()
            for line in block.splitlines():
                # "(- : *)"{-h,--help}"[help]", "(- : *)--version[help]", {-o,--output}"[help]",
                # "--flag[help]:NAME:(a b)", "*--repeated[help]"; a positional: ":help:..."
                spec = re.match(r'\s*"?(?:\([^)]*\))?"?(?:\{([^}]*)\}"|\*?(-[^\[]+))\[', line)
                if spec is None:  # a positional
                    continue
                strings = spec[1].split(",") if spec[1] else [spec[2]]
                flags[prefix] |= set(strings)
                if values := re.search(r':\(([^)]*)\)"$', line):
                    choices |= {(prefix, flag): tuple(values[1].split()) for flag in strings}
        return {
            "commands": {
                prefix: set(re.findall(r"^\s+([^:\s]+):", block, re.MULTILINE))
                for prefix, block in commands
            },
            "flags": flags,
            "choices": choices,
        }
    # tcsh: one `complete` command, its patterns 'c/--flag=/(words)/', 'n/word/(words)/', ...
    patterns = re.findall(r"'([cnp])/([^/]*)/\(([^)]*)\)/'", script)
    words = {(kind, selector): values.split() for kind, selector, values in patterns}
    return {
        "after a command": {
            selector if kind == "n" else "": set(values)
            for (kind, selector), values in words.items()
            if (kind, selector) == ("p", "1") or (kind == "n" and not selector.startswith("-"))
        },
        "long flags": set(words[("c", "--")]),
        "short flags": set(words[("c", "-")]),
        # A flag's choices once per subcommand that has it.
        "choices": {
            (selector.removesuffix("="), tuple(values.split()))
            for kind, selector, values in patterns
            if kind == "c" and selector.endswith("=")
        },
    }


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
def test_the_script_lists_the_subcommands_flags_and_choices(shell: str):
    assert _listed(shell, _script(shell)) == _expected(shell, build_parser())


def test_bash_registers_a_completion_for_styleserve():
    # The line the help suggests for ~/.bashrc.
    registered = _bash("complete -p styleserve", source='<("$STYLESERVE" completion bash)')
    assert registered.split()[-1] == "styleserve" and "-F _shtab_styleserve" in registered


def test_bash_completes_every_subcommand(complete):
    assert complete("") == set(subcommands(build_parser()))
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

"""The docs site and the README: generated tables cover what they describe, the README stays a
landing page whose links resolve, and the site builds with ``mkdocs build --strict``."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import styleserve
from styleserve.cli import build_parser, subcommands
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve_server.settings import Settings

from scripts.docs_hooks import cli_reference, metrics_table, protocol_reference, settings_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_LIMIT = 12 * 1024
TWO_COMMANDS = (
    "scripts/demo.sh   # set up .venv, export the weights, start a real server, stylise examples/,"
    " stop it\n"
    "scripts/test.sh   # the test suite (the command CI runs): python -m pytest -q in .venv\n"
)


def test_settings_table_has_a_row_for_every_setting_and_nothing_else():
    rows = re.findall(r"^\| `--([a-z-]+)`.*$", settings_table(), flags=re.MULTILINE)
    assert sorted(rows) == sorted(name.replace("_", "-") for name in Settings.model_fields)
    for name in Settings.model_fields:
        flag = f"| `--{name.replace('_', '-')}`"
        (line,) = [r for r in settings_table().splitlines() if r.startswith(flag)]
        assert f"`STYLESERVE_{name.upper()}`" in line


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every subcommand's parser under it."""
    return [parser, *(c for sub in subcommands(parser).values() for c in _commands(sub))]


def test_cli_reference_covers_every_command_and_flag():
    reference = cli_reference()
    commands = _commands(build_parser())
    assert "styleserve jobs watch" in [command.prog for command in commands]
    for command in commands:
        heading = re.search(rf"^#+ `{re.escape(command.prog)}`$", reference, flags=re.MULTILINE)
        assert heading, f"the CLI reference has no section for {command.prog}"
        section = reference[heading.end() :].split("\n#", 1)[0]
        for action in command._actions:
            for option in action.option_strings:
                assert f"`{option}" in section, f"{command.prog}: {option} is missing"


def test_protocol_reference_covers_every_message_enum_and_rpc():
    reference = protocol_reference()
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        heading = f"### `{message.name}`\n"
        assert heading in reference, f"the protocol reference has no section for {message.name}"
        section = reference.split(heading, 1)[1].split("\n### ", 1)[0]
        for field in message.fields:
            assert f"| {field.number} | `{field.name}` |" in section, field.full_name
    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        assert f"### `{enum.name}`\n" in reference
    for method in pb.DESCRIPTOR.services_by_name["StyleTransferService"].methods:
        assert f"| `{method.name}` |" in reference


def test_metrics_table_names_each_metric_as_prometheus_exposes_it():
    rows = {row.split(" | ")[0][3:-1]: row for row in metrics_table().splitlines()[2:]}
    assert "`method`, `code`" in rows["styleserve_requests_total"]
    assert "styleserve_build_info" in rows
    assert "styleserve_queue_depth" in rows


def test_readme_is_a_landing_page_that_starts_with_the_two_commands():
    readme = README.read_text(encoding="utf-8")
    size = len(readme.encode("utf-8"))
    assert size <= README_LIMIT, f"README.md is {size} bytes: move detail to docs/ (limit 12 KiB)"
    first_block = re.search(r"^```\w*\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    assert first_block is not None and first_block.group(1) == TWO_COMMANDS


def test_every_relative_link_of_the_readme_points_at_a_file():
    readme = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    relative = [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:|#", t)]
    assert relative, "README.md links into docs/"
    missing = [target for target in relative if not (ROOT / target).is_file()]
    assert missing == []


@pytest.mark.slow
def test_site_builds_strict_with_its_generated_references(tmp_path: Path):
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    settings = (site / "operator" / "server" / "index.html").read_text(encoding="utf-8")
    assert "STYLESERVE_JOB_SLOTS" in settings
    api = (site / "sdk" / "api" / "index.html").read_text(encoding="utf-8")
    undocumented = [name for name in styleserve.__all__ if f'id="styleserve.{name}"' not in api]
    assert undocumented == []

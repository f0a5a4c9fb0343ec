"""The README's tables are checked against what they describe: the settings class and the .proto."""

import re
import runpy
from pathlib import Path

import pytest
from styleserve_server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_in_the_configuration_table(name):
    flag = f"`--{name.replace('_', '-')}`"
    env = f"`STYLESERVE_{name.upper()}`"
    rows = [line for line in README.splitlines() if line.startswith(f"| {flag}")]
    assert rows, f"README's configuration table has no row for {flag}"
    assert env in rows[0], f"the row of {flag} should name {env}"


def test_configuration_table_names_no_setting_that_does_not_exist():
    table = re.findall(r"^\| `--([a-z-]+)`", README, flags=re.MULTILINE)
    assert set(table) <= {name.replace("_", "-") for name in Settings.model_fields}


def test_protocol_reference_is_generated_from_the_proto():
    reference = runpy.run_path(str(ROOT / "scripts" / "proto_reference.py"))["reference"]()
    assert reference.strip() in README, (
        "README's protocol reference is stale: paste the output of "
        "`python scripts/proto_reference.py` in its place"
    )

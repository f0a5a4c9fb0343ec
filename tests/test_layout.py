"""The test tree mirrors the packages (tests/__init__.py says how), kept so: a test named after a
module sits in the folder of that module's package, and every folder of tests is a package."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Each package's folder of tests.
MIRRORS = {
    "tests/client": "client/styleserve",
    "tests/server": "server/styleserve_server",
    "tests/server/engine": "server/styleserve_server/engine",
    "tests/model_export": "model_export/styleserve_export",
}


def _modules(package: str) -> set[str]:
    return {path.stem for path in (ROOT / package).glob("*.py") if path.stem != "__init__"}


def _misplaced(root: Path) -> list[str]:
    """Tests named after a module of another package than their folder's, wherever in the
    tree they sit (the root and the folders of no package included)."""
    owners: dict[str, list[str]] = {}
    for tests, package in MIRRORS.items():
        for module in _modules(package):
            owners.setdefault(module, []).append(tests)
    found = []
    folders = [path for path in [root / "tests", *(root / "tests").rglob("*")] if path.is_dir()]
    for tests in sorted(str(folder.relative_to(root)) for folder in folders):
        for path in sorted((root / tests).glob("test_*.py")):
            module = path.stem.removeprefix("test_")
            if module in owners and tests not in owners[module]:
                found.append(f"{tests}/{path.name} belongs in {' or '.join(owners[module])}")
    return found


def test_a_module_test_sits_beside_its_package_tests():
    assert _misplaced(ROOT) == []


def test_a_misplaced_test_is_found(tmp_path):
    for tests in MIRRORS:
        (tmp_path / tests).mkdir(parents=True, exist_ok=True)
    (tmp_path / "tests/server/test_convert.py").touch()  # convert.py is the client's
    (tmp_path / "tests/test_plan.py").touch()  # so is plan.py, and the root is no package's
    assert _misplaced(tmp_path) == [
        "tests/test_plan.py belongs in tests/client",
        "tests/server/test_convert.py belongs in tests/client",
    ]


@pytest.mark.parametrize(
    "folder",
    sorted(
        str(path.relative_to(ROOT))
        for path in [ROOT / "tests", *(ROOT / "tests").rglob("*")]
        if path.is_dir() and path.name != "__pycache__" and any(path.glob("*.py"))
    ),
)
def test_every_folder_of_tests_is_a_package(folder):
    assert (ROOT / folder / "__init__.py").is_file(), f"{folder} needs an __init__.py"

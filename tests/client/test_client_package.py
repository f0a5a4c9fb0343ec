"""The package's public surface: exact ``__all__``, each name importable, and what importing the
package (or a part of it the server uses) loads."""

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import styleserve


def _imported_for_type_checkers() -> dict[str, str]:
    """The names ``__init__`` imports under TYPE_CHECKING, each with its module, read off the
    source: the surface type checkers and the docs see."""
    tree = ast.parse(Path(styleserve.__file__).read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If))
    return {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }


def test_all_is_exactly_the_public_names_and_each_resolves():
    imported = _imported_for_type_checkers()
    assert len(imported) > 30, "the walk found too few names"
    assert sorted(styleserve.__all__) == sorted([*imported, "__version__"])
    assert styleserve._SOURCES == imported
    assert len(set(styleserve.__all__)) == len(styleserve.__all__)
    for name in styleserve.__all__:
        value = getattr(styleserve, name)
        assert value is not None and name in dir(styleserve), name
        if name in imported:
            assert value is getattr(importlib.import_module(imported[name]), name), name


def test_a_name_the_package_lacks_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'Clinet'"):
        _ = styleserve.Clinet  # type: ignore[attr-defined]
    assert not hasattr(styleserve, "Clinet")


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    assert styleserve.__version__ == version("styleserve")


def test_exceptions_form_one_tree():
    for name in styleserve.__all__:
        obj = getattr(styleserve, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, Exception)
            and obj is not styleserve.OptionsError
        ):
            assert issubclass(obj, styleserve.StyleserveError), name


def _loaded_after(statements: str, roots: tuple[str, ...]) -> list[str]:
    """The modules under ``roots`` that a fresh interpreter holds after ``statements``."""
    code = (
        f"import json, sys\n{statements}\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {roots!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_importing_the_client_imports_neither_torch_nor_numpy():
    statements = (
        "import styleserve, styleserve.cli, styleserve.aio, styleserve.convert\n"
        "[getattr(styleserve, name) for name in styleserve.__all__]"
    )
    assert (
        _loaded_after(statements, ("torch", "numpy", "styleserve_server", "styleserve_export"))
        == []
    )


def test_the_engine_loads_no_grpc_and_only_the_sdk_modules_it_shares():
    # The engine resolves options and plans stages with the SDK's own modules, pure Python;
    # importing them must not bring the client or grpc along (the package loads its names
    # lazily). protobuf may come: onnx, a library of the engine's, loads it.
    loaded = _loaded_after("import styleserve_server.engine", ("grpc", "styleserve"))
    assert loaded == ["styleserve", "styleserve.options", "styleserve.plan"]

"""The package's public surface: exact ``__all__``, and no torch or numpy on import."""

import json
import subprocess
import sys
import types

import styleserve


def _public_names() -> set[str]:
    """What the package defines or re-exports for callers, read off the module itself (as
    httpx's test does): every name not starting with an underscore that is not a submodule."""
    return {
        name
        for name, value in vars(styleserve).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    } | {"__version__"}


def test_all_is_exactly_the_public_names_and_each_resolves():
    assert sorted(styleserve.__all__) == sorted(_public_names())
    assert len(set(styleserve.__all__)) == len(styleserve.__all__)
    for name in styleserve.__all__:
        assert getattr(styleserve, name) is not None, name


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


def test_importing_the_client_imports_neither_torch_nor_numpy():
    code = (
        "import json, sys\n"
        "import styleserve, styleserve.cli, styleserve.aio, styleserve.convert\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('torch', 'numpy', 'styleserve_server', 'styleserve_export'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []

"""The entry points of ``styleserve-server`` and ``styleserve-export``, installed with every
styleserve: a client-only install (no ``server`` extra, so no torch or pydantic) gets the
install hint and exit status 1 instead of an import traceback."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

__all__ = ["export", "server"]

INSTALL_HINT = "pip install 'styleserve[server]'"


def _run(module: str, command: str) -> int:
    try:
        main: Callable[[], int] = importlib.import_module(module).main
    except ModuleNotFoundError as error:
        if error.name is None or error.name.startswith("styleserve"):
            raise
        print(
            f"{command}: needs the server extra ({error.name} is not installed): {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 1
    return main()


def server() -> int:
    return _run("styleserve_server.main", "styleserve-server")


def export() -> int:
    return _run("styleserve_export.cli", "styleserve-export")

"""The export step's one error type, so the CLI prints any failure as one actionable line."""

from __future__ import annotations

__all__ = ["ExportError"]


class ExportError(RuntimeError):
    """An export failed; the message says what went wrong and what to do about it."""

"""edgebuild: build, compress, convert and validate ML models for phones, boards and microcontrollers."""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"
__all__ = ["__version__", "build"]


def build(recipe: Any, target: Any, out: Any = None, *, quiet: bool = True) -> dict[str, Any]:
    """Build ``recipe`` for ``target`` and return the report; see ``edgebuild.pipeline.build``."""
    from edgebuild.pipeline import build as _build

    return _build(recipe, target, out, quiet=quiet)

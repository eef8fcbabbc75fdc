"""Help text a person reads: typer's type tags (``<str>``) and usage braces (``{VIDEO}``) are noise.

Every command and group of the CLI uses these classes; the metavars (``VIDEO``, ``MODEL``, ``PATH``) carry the
meaning, the help strings the rest.
"""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperCommand, TyperGroup

__all__ = ["PlainCommand", "PlainGroup", "tidy_help"]

_TYPE_TAG = re.compile(r" <(?:bool|str|int|float|path|text|integer)>")
_REQUIRED = re.compile(r"\{([A-Z][A-Z0-9_-]*)\}")
_DOUBLE_OPTIONAL = re.compile(r"\[\[([A-Z][A-Z0-9_-]*)\]\]")


def tidy_help(text: str) -> str:
    """``VIDEO <str>`` -> ``VIDEO``, ``{VIDEO}`` -> ``VIDEO``, ``[[ID]]`` -> ``[ID]``."""
    text = _TYPE_TAG.sub("", text)
    text = _REQUIRED.sub(r"\1", text)
    return _DOUBLE_OPTIONAL.sub(r"[\1]", text)


class PlainCommand(TyperCommand):
    def get_help(self, ctx: Any) -> str:
        return tidy_help(super().get_help(ctx))


class PlainGroup(TyperGroup):
    def get_help(self, ctx: Any) -> str:
        return tidy_help(super().get_help(ctx))

"""The lipsyncer settings that point a client at a sandbox: every emulated provider, and fal-cdn storage.

The unified API fetches media by URL only, so local files need a storage: ``storage = "fal-cdn"`` uploads them
to the sandbox's emulated fal CDN. ``sandbox serve`` prints this as TOML; ``--sandbox`` applies it in-process.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["EMULATED_PROVIDERS", "STORAGE", "client_config", "config_toml"]

EMULATED_PROVIDERS = ("fal-v3", "fal-v2", "fal-v2-pro", "fal-legacy", "unified", "syncso")
"""The built-in providers whose APIs the sandbox emulates."""

STORAGE = "fal-cdn"
"""The storage that hosts local files on the sandbox's fal CDN."""


def client_config(base_url: str | None, *, insecure_callbacks: bool) -> dict[str, Any]:
    """Settings (``Settings`` field names) for a sandbox at ``base_url`` (None: reached in-process)."""
    target: dict[str, Any] = {} if base_url is None else {"base_url": base_url.rstrip("/")}
    providers: dict[str, dict[str, Any]] = {pid: dict(target) for pid in EMULATED_PROVIDERS}
    if insecure_callbacks:
        # The unified provider refuses http callback URLs unless told (loopback hosts only).
        providers["unified"]["options"] = {"allow_insecure_callbacks": True}
        providers["syncso"]["options"] = {"allow_insecure_webhooks": True}
    return {"storage": STORAGE, "storages": {STORAGE: dict(target)}, "providers": providers}


def config_toml(config: dict[str, Any]) -> str:
    """TOML text for a settings dict of scalars and nested tables (what ``client_config`` returns)."""
    lines: list[str] = []
    _table(lines, (), config)
    return "\n".join(lines).strip() + "\n"


def _table(lines: list[str], path: tuple[str, ...], table: dict[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    header = bool(path) and (bool(scalars) or not tables)  # a table with only sub-tables needs no header
    if header:
        lines.append(f"[{'.'.join(_key(p) for p in path)}]")
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    if header or scalars:
        lines.append("")
    for key, value in tables.items():
        _table(lines, (*path, key), value)


def _key(key: str) -> str:
    bare = key.replace("-", "").replace("_", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")

"""The plugin data types are public names, documented field by field; built-ins use them as a third party would."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from pydantic import BaseModel

import lipsyncer
from lipsyncer import (
    JobStatus,
    ModelSpec,
    ProviderContext,
    ProviderOutput,
    Submission,
    VideoFile,
    WebhookEvent,
)

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "plugins.md").read_text()
TYPES = [ModelSpec, ProviderContext, Submission, JobStatus, ProviderOutput, WebhookEvent, VideoFile]


def fields(cls: type) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    assert issubclass(cls, BaseModel)
    return list(cls.model_fields)


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
def test_every_plugin_type_is_public_and_each_field_documented(cls: type) -> None:
    assert getattr(lipsyncer, cls.__name__) is cls and cls.__name__ in lipsyncer.__all__
    assert f"`{cls.__name__}`" in PAGE
    missing = [name for name in fields(cls) if f"`{name}`" not in PAGE]
    assert not missing, f"docs/plugins.md does not document {cls.__name__}'s fields {missing}"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # resolve relative imports against the file's package
                package = path.relative_to(ROOT / "src").parent.parts
                module = ".".join(package[: len(package) - node.level + 1] + ((module,) if module else ()))
            out.append(module)
        elif isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
    return out


def test_built_in_providers_take_public_names_from_the_public_package() -> None:
    """A name ``lipsyncer`` exports is imported from ``lipsyncer``, never from ``lipsyncer.core.*``."""
    offenders = {}
    for path in (ROOT / "src" / "lipsyncer" / "providers").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            module = node.module or ""
            if node.level or module.startswith("lipsyncer.core"):
                public = [a.name for a in node.names if a.name in lipsyncer.__all__]
                if public:
                    offenders.setdefault(str(path.relative_to(ROOT)), []).extend(public)
    assert not offenders


def test_contrib_imports_no_provider_module_and_core_none_of_either() -> None:
    for path in (ROOT / "src" / "lipsyncer" / "contrib").rglob("*.py"):
        assert not [m for m in _imports(path) if m.startswith("lipsyncer.providers")], path
    for path in (ROOT / "src" / "lipsyncer" / "core").rglob("*.py"):
        assert not [
            m for m in _imports(path) if m.startswith(("lipsyncer.providers", "lipsyncer.contrib"))
        ], path

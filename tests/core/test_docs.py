"""The docs cannot drift from the code: every hook with its signature, and the capability matrix."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from lipsyncer.core import hookspecs
from lipsyncer.core.matrix import BEGIN, END, capability_matrix
from lipsyncer.core.plugins import PluginHost, hook_names

DOCS = Path(__file__).resolve().parents[2] / "docs"


def signature(name: str) -> str:
    params = list(inspect.signature(getattr(hookspecs.LipsyncProvider, name)).parameters)[1:]
    return f"{name}({', '.join(params)})"


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_is_documented_with_its_signature(name: str) -> None:
    page = (DOCS / "hooks.md").read_text()
    assert f"## {signature(name)}" in page, f"docs/hooks.md lacks a '## {signature(name)}' section"
    doc = (inspect.getdoc(getattr(hookspecs.LipsyncProvider, name)) or "").replace("``", "`")
    assert doc.splitlines()[0] in page, "the hook's docstring summary belongs in its section"


def test_docs_document_no_hook_that_does_not_exist() -> None:
    documented = {
        line[3:].split("(")[0]
        for line in (DOCS / "hooks.md").read_text().splitlines()
        if line.startswith("## ")
    }
    assert documented == set(hook_names())


def test_capability_matrix_page_matches_the_providers() -> None:
    page = (DOCS / "capabilities.md").read_text()
    block = page.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    expected = capability_matrix(PluginHost().providers)
    assert block == expected, "run: python -m lipsyncer.core.matrix --write docs/capabilities.md"

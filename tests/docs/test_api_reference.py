"""The API reference documents every public name, and names nothing that is not public."""

from __future__ import annotations

import re
from pathlib import Path

import lipsyncer

API = Path(__file__).resolve().parents[2] / "docs" / "api"
DIRECTIVE = re.compile(r"^::: (lipsyncer\.[\w.]+)$", re.M)


def documented() -> set[str]:
    return {name for page in API.glob("*.md") for name in DIRECTIVE.findall(page.read_text())}


def test_every_public_name_has_a_reference_entry() -> None:
    public = {f"lipsyncer.{name}" for name in lipsyncer.__all__ if not name.startswith("_")}
    missing = public - documented()
    assert not missing, f"add to docs/api/: {sorted(missing)}"


def test_every_reference_entry_resolves() -> None:
    for dotted in documented():
        module, _, attr = dotted.rpartition(".")
        if module == "lipsyncer":
            assert attr in lipsyncer.__all__, f"{dotted} is not a public name of lipsyncer"
            getattr(lipsyncer, attr)
        else:
            imported = __import__(module, fromlist=[attr])
            assert hasattr(imported, attr), dotted

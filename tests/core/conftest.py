from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def install_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    """Install a fake distribution (module + dist-info with a `lipsyncer` entry point) on sys.path.

    This is what pip leaves behind for a wheel, so entry-point discovery sees it as a real package.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    added: list[str] = []

    def install(dist: str, module: str, source: str, *, entry_name: str | None = None) -> Path:
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-1.0.dist-info"  # pip normalizes the folder name
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[lipsyncer]\n{entry_name or dist} = {module}\n")
        added.append(module)
        importlib.invalidate_caches()
        return site

    yield install
    for module in added:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()

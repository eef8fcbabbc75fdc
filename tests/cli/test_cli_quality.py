"""The CLI's own files pass the project's strictest checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FILES = ["src/lipsyncer/cli", "tests/cli"]


def check(*args: str) -> None:
    done = subprocess.run(list(args), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_mypy_strict() -> None:
    check(str(BIN / "mypy"), "--strict", "src/lipsyncer/cli")


@pytest.mark.slow
def test_ruff_check_and_format() -> None:
    check(str(BIN / "ruff"), "check", *FILES)
    check(str(BIN / "ruff"), "format", "--check", *FILES)

"""`lipsyncer demo` from a fresh virtual environment with lipsyncer installed as a wheel.

The wheel is built from this checkout and installed into a new venv (no editable install, so packaging
mistakes — a missing entry point, module or package file — show up here). With no network in tests, the new
venv borrows only its third-party dependencies from the running environment through a .pth file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from lipsyncer.core.media import probe

pytestmark = pytest.mark.slow


def sync_rule(mode: str, v: float, a: float) -> float:
    """The output length each sync mode gives (reference §1), written out here rather than imported."""
    return {"cut_off": min(v, a), "loop": a, "bounce": a, "silence": v, "remap": a}[
        str(getattr(mode, "value", mode))
    ]


ROOT = Path(__file__).resolve().parents[2]


def test_demo_from_a_fresh_venv_writes_an_mp4_that_follows_the_sync_mode_rule(tmp_path: Path) -> None:
    env_dir = tmp_path / "fresh"
    venv.create(env_dir)  # no pip inside: the running pip installs into it (--python), as fast and as real
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # pip builds this checkout's wheel (not editable) and installs it, in one process. No byte-compiling of the
    # whole package: the demo compiles what it imports.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--no-compile",
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )

    work = tmp_path / "work"
    work.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "EVOLINK", "LIPSYNCER"))}
    clean["HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [str(env_dir / "bin" / "lipsyncer"), "demo", "--sync-mode", "bounce", "-o", "out.mp4"],
        cwd=work,
        env=clean,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    located = subprocess.run(
        [str(python), "-c", "import lipsyncer; print(lipsyncer.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(env_dir) in located, "the demo must run the installed wheel, not this checkout"
    info = probe(work / "out.mp4")
    assert info.has_video and info.has_audio
    expected = sync_rule("bounce", 2.0, 3.0)
    assert abs(info.duration - expected) <= 1 / 25 + 0.05

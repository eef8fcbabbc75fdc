"""The documented out-of-tree plugin, installed by pip as a user would, is discovered and serves jobs."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lipsyncer import AsyncLipsyncer, LipsyncRequest, MemoryJobStore, load_settings
from lipsyncer.contrib.sandbox import Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia, fast_config

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "lipsyncer-acme"


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    target = tmp_path / "site"
    source = shutil.copytree(EXAMPLE, tmp_path / "lipsyncer-acme")  # builds leave nothing in the repo
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    monkeypatch.syspath_prepend(str(target))
    importlib.invalidate_caches()
    yield target
    sys.modules.pop("lipsyncer_acme", None)


async def test_installed_example_is_routed_to_and_serves_a_job(
    installed: Path, media: SampleMedia, tmp_path: Path
) -> None:
    assert list(installed.glob("lipsyncer_acme-1.0.0.dist-info/entry_points.txt"))
    with Sandbox(fast_config(strict=True)) as sandbox:
        video = sandbox.put_file(media.video.read_bytes(), file_name="talk.mp4", content_type="video/mp4")
        audio = sandbox.put_file(media.audio.read_bytes(), file_name="dub.wav", content_type="audio/wav")
        env = {"ACME_API_KEY": sandbox.config.unified_key}
        settings = load_settings(
            env=env, cwd=tmp_path, polling={"initial_interval": 0.02, "max_interval": 0.1}
        )
        async with AsyncLipsyncer(
            settings, env=env, transport=sandbox.transport(), store=MemoryJobStore()
        ) as client:
            assert client.plugins.plugin_for("acme") is not None
            assert client.plugins.plugin_for("acme").source == "lipsyncer-acme 1.0.0"  # type: ignore[union-attr]
            request = LipsyncRequest(video=video, audio=audio, model="lipsync-2", temperature=0.4)
            plan = client.route(request)
            assert plan.first.id == "acme:lipsync-2"
            result = await client.run(request)
        (create,) = sandbox.submits()
        assert create.host == "api.acme.example"
        assert create.body == {
            "model": "lipsync-2",
            "video_url": video,
            "audio_url": audio,
            "sync_mode": "cut_off",
            "temperature": 0.4,
        }
        assert result.served_by.provider == "acme"
        assert sandbox.file_bytes(result.video.url)

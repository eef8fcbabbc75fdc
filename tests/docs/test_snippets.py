"""Every Python and shell snippet of the README and docs/ runs, against a sandbox, exactly as written.

Each page gets a fresh working directory holding the media its snippets name (``talk.mp4``, ``dub.wav``,
``dub_es.wav``), a loopback sandbox, and a ``lipsyncer.toml`` sending every provider and the ``fal-cdn`` storage
to it, with the sandbox's keys in ``FAL_KEY`` / ``EVOLINK_API_KEY``: what a reader's machine would have, with the
sandbox standing in for the providers. The docs' example sandbox address (``127.0.0.1:8765``) is the test's,
and their reader's home (``/home/me``) is the test's working directory.

Shell commands: ``lipsyncer ...`` runs in-process. Environment set-up is not run (``pip install``, ``python3 -m
venv``, ``export``, ``bash scripts/check.sh``: the fresh-install test and CI cover them), nor ``lipsyncer sandbox
serve`` (it serves until interrupted; the CLI tests run it). A command whose shown output has an ``error:`` line
must fail with exactly that line; any other command must succeed. A ``toml`` fence headed ``# NAME.toml ...`` is
written to NAME.toml when a command on the page names that file; every lipsyncer config fence must load. An
HTML comment ``<!-- not run: why -->`` just above a fence keeps it out (say why).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
import tomllib
from pytest_examples import CodeExample, EvalExample
from snippets import PYTHON, SHELL, Command, Fence, commands, fences, pipeline
from typer.testing import CliRunner

from lipsyncer.cli import build_app
from lipsyncer.contrib.sandbox import (
    Sandbox,
    SandboxConfig,
    serve_in_thread,
    write_sample_audio,
    write_sample_video,
)
from lipsyncer.core.config import load_settings

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted(p for p in (REPO / "docs").rglob("*.md") if "examples" not in p.parts)]
DOC_SANDBOX = "127.0.0.1:8765"
PROVIDERS = ("fal-legacy", "fal-v2", "fal-v2-pro", "fal-v3", "unified")

NOT_RUN = {
    ("pip",): "installs packages",
    (".venv/bin/pip",): "installs packages",
    ("python3", "-m", "venv"): "creates a virtual environment",
    ("python", "-m", "venv"): "creates a virtual environment",
    ("export",): "the test sets the sandbox's keys itself",
    ("bash", "scripts/check.sh"): "the checks and tests themselves",
    ("lipsyncer", "sandbox", "serve"): "serves until interrupted (tests/cli runs it)",
}
LIPSYNCER = ("lipsyncer", ".venv/bin/lipsyncer")


def page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


def runnable(page: Path) -> bool:
    return any(f.lang in PYTHON + SHELL and not f.skipped for f in fences(page))


@pytest.fixture
def reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A reader's working directory and environment, with a loopback sandbox as every provider."""
    for var in list(os.environ):
        if var.startswith("LIPSYNCER_") or var in ("FAL_KEY", "EVOLINK_API_KEY", "LIPSYNCER_CONFIG"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.chdir(tmp_path)
    write_sample_video(tmp_path / "talk.mp4", 2.0)
    write_sample_audio(tmp_path / "dub.wav", 3.0)
    write_sample_audio(tmp_path / "dub_es.wav", 3.0)
    config = SandboxConfig(queue_seconds=0.02, processing_seconds=0.1, allow_insecure_callbacks=True)
    with Sandbox(config) as sandbox, serve_in_thread(sandbox) as server:
        monkeypatch.setenv("FAL_KEY", sandbox.config.fal_key)
        monkeypatch.setenv("EVOLINK_API_KEY", sandbox.config.unified_key)
        lines = ['storage = "fal-cdn"', "[polling]", "initial_interval = 0.05", "max_interval = 0.2", ""]
        for pid in PROVIDERS:
            lines += [f"[providers.{pid}]", f'base_url = "{server.base_url}"', ""]
        lines += ["[storages.fal-cdn]", f'base_url = "{server.base_url}"']
        (tmp_path / "lipsyncer.toml").write_text("\n".join(lines) + "\n")
        yield server.base_url.removeprefix("http://")


@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)], ids=page_id)
def test_page_snippets_run(page: Path, reader: str, eval_example: EvalExample) -> None:
    namespace: dict[str, object] = {}
    page_fences = fences(page)
    for fence in page_fences:
        if fence.lang == "toml":
            write_if_named(fence, page_fences, reader)
    for fence in page_fences:
        if fence.skipped:
            continue
        if fence.lang in PYTHON:
            example = CodeExample.create(fence.body, path=page, start_line=fence.line - 1, prefix=fence.info)
            try:
                namespace.update(eval_example.run(example, module_globals=dict(namespace)))
            except Exception as exc:
                # pytest-examples' rewritten traceback can crash pytest's reporting on 3.11: say where instead.
                raise AssertionError(f"{page_id(page)}:{snippet_line(exc, page)}: {exc!r}") from None
        elif fence.lang in SHELL:
            for command in commands(fence):
                run_command(command, fence, reader)


def snippet_line(exc: BaseException, page: Path) -> int | str:
    """The page line the snippet failed on (pytest-examples maps the snippet's frames to the Markdown file)."""
    lines = [
        frame.tb_lineno
        for frame in _frames(exc.__traceback__)
        if frame.tb_frame.f_code.co_filename == str(page)
    ]
    return lines[-1] if lines else "?"


def _frames(tb: TracebackType | None) -> Iterator[TracebackType]:
    while tb is not None:
        yield tb
        tb = tb.tb_next


def run_command(command: Command, fence: Fence, sandbox_address: str) -> None:
    where = f"{fence.path.name}:{command.line}: {command.text}"
    for step in pipeline(command.text.replace(DOC_SANDBOX, sandbox_address)):
        argv, rest = step[0], step[1:]
        env: dict[str, str] = {}
        while argv and "=" in argv[0] and not argv[0].startswith("-"):
            name, _, value = argv.pop(0).partition("=")
            env[name] = value
        if argv[0] == "mkdir":
            for folder in argv[1:]:
                Path(folder).mkdir(parents=True, exist_ok=True)
            continue
        if any(tuple(argv[: len(prefix)]) == prefix for prefix in NOT_RUN) or (
            argv[0] in LIPSYNCER and argv[1:3] == ["sandbox", "serve"]
        ):
            continue
        assert argv[0] in LIPSYNCER, f"{where}: teach tests/docs to run {argv[0]!r}, or mark the fence"
        result = CliRunner().invoke(build_app(), argv[1:], env=env)
        if isinstance(result.exception, Exception) and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"{where}: crashed") from result.exception
        # The pages' reader lives in /home/me; this one in a temporary directory.
        stderr = result.stderr.replace(str(Path.cwd()), "/home/me")
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        expected = command.shown_error
        if expected is None:
            assert result.exit_code == 0, f"{where}: exit {result.exit_code}\n{result.stderr}"
        else:
            assert result.exit_code != 0, f"{where}: the page shows an error, the command succeeded"
            assert errors[:1] == [expected], (
                f"{where}: the page shows {expected!r}, the CLI said {errors[:1]}"
            )
        for piped in rest:
            assert piped[0] == "jq", f"{where}: only `| jq` is understood after a pipe"
            json.loads(result.stdout)  # what jq would read must be one JSON document


def write_if_named(fence: Fence, page: list[Fence], sandbox_address: str) -> None:
    """A ``# NAME.toml`` config the page's commands use (``--config NAME.toml``), written where they look."""
    first = fence.body.lstrip().splitlines()[0] if fence.body.strip() else ""
    name = first[2:].split()[0].rstrip(",:") if first.startswith("# ") and first[2:].strip() else ""
    if not name.endswith(".toml"):
        return
    mentioned = any(
        name in shlex.split(c.text, comments=True) for f in page for c in commands(f) if f.lang in SHELL
    )
    if mentioned:
        Path(name).write_text(fence.body.replace(DOC_SANDBOX, sandbox_address))


TOML_FENCES = [f for page in PAGES for f in fences(page) if f.lang == "toml" and not f.skipped]


@pytest.mark.parametrize("fence", TOML_FENCES, ids=lambda f: f"{page_id(f.path)}:{f.line}")
def test_config_snippets_load(fence: Fence, tmp_path: Path) -> None:
    """Every lipsyncer config on a page is valid: unknown keys or bad values would fail here."""
    data = tomllib.loads(fence.body)
    if "project" in data and "tool" not in data:
        return  # a package's pyproject.toml (entry points), not a lipsyncer config
    if "tool" in data:
        (tmp_path / "pyproject.toml").write_text(fence.body)
        settings = load_settings(env={}, cwd=tmp_path)
        assert "pyproject.toml" in settings.source[0]
    else:
        (tmp_path / "lipsyncer.toml").write_text(fence.body)
        settings = load_settings(env={}, cwd=tmp_path)
        assert settings.source

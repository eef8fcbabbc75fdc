"""Start-up stays cheap: what `import lipsyncer` and `lipsyncer --help` load, checked by module, not by clock.

The timings themselves are measured by ``bench/startup.py`` (best of N, fresh interpreters); a test asserts
what makes them small, so it cannot flake on a busy machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("httpx", "pydantic", "rich", "av", "fal_client", "lipsyncer.providers", "lipsyncer.core.client")


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)}


def test_import_lipsyncer_loads_nothing_heavy() -> None:
    assert heavy(loaded_after("import lipsyncer")) == set()


def test_a_public_name_loads_on_first_use() -> None:
    modules = loaded_after("from lipsyncer import LipsyncRequest")
    assert "lipsyncer.core.schema" in modules and "lipsyncer.core.client" not in modules


def loaded_by_main(argv: list[str]) -> set[str]:
    """The modules a fresh interpreter has loaded after ``lipsyncer`` ran with ``argv``."""
    code = (
        "import sys\n"
        "from lipsyncer.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "sys.stdout.flush()"
    )
    return loaded_after(code)


@pytest.mark.parametrize("argv", [["--help"], ["--version"], []])
def test_help_loads_no_command_module_nor_http_stack(argv: list[str]) -> None:
    modules = loaded_by_main(argv)
    assert heavy(modules) == set(), sorted(heavy(modules))
    commands = {"lipsyncer.cli.run", "lipsyncer.cli.providers", "lipsyncer.cli.demo"}
    assert not modules & commands


@pytest.mark.parametrize("argv", [["run", "--help"], ["run", "only-a-video.mp4"]])
def test_a_commands_help_or_usage_error_loads_no_client_nor_job_store(argv: list[str]) -> None:
    """Parsing a command line, and refusing a bad one, needs the command but not the client it would build
    (nor its job store's SQLAlchemy): that is loaded when the command runs."""
    modules = loaded_by_main(argv)
    assert "lipsyncer.cli.run" in modules
    client_side = {m for m in modules if m.split(".")[0] == "sqlalchemy" or m == "lipsyncer.core.client"}
    assert client_side == set(), sorted(client_side)


def test_a_command_on_the_default_sqlite_store_loads_no_postgresql_nor_an_unused_providers_sdk(
    tmp_path: Path,
) -> None:
    """Every CLI process, Celery worker and client pays for what it imports: PostgreSQL's SQLAlchemy dialect
    loads only for a PostgreSQL store, and sync.so's SDK with sync.so's first request, not with the plugin."""
    store = tmp_path / "jobs.sqlite"
    modules = loaded_by_main(["jobs", "list", "--store", str(store)])
    assert "lipsyncer.core.client" in modules and "lipsyncer.providers.syncso" in modules  # it did the work
    assert store.exists()
    unused = {m for m in modules if m.startswith(("sqlalchemy.dialects.postgresql", "sync.", "psycopg"))}
    assert unused == set(), sorted(unused)


def test_every_public_name_resolves_lazily() -> None:
    code = (
        "import lipsyncer\n"
        "names = [n for n in lipsyncer.__all__ if n != '__version__']\n"
        "assert sorted(names) == sorted(lipsyncer._WHERE), 'lipsyncer.__all__ and _WHERE disagree'\n"
        "for name in names:\n"
        "    value = getattr(lipsyncer, name)\n"
        "    assert getattr(value, '__name__', name) == name, (name, value)\n"
        "assert set(names) <= set(dir(lipsyncer))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

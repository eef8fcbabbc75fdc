#!/usr/bin/env bash
# The project's checks and tests, in the order that fails fastest: lint, types, docs, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
[ -x "$bin/python" ] || { echo "run: python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'" >&2; exit 2; }

# The fleet tests start private redis-server and PostgreSQL instances (real binaries, loopback ports, temp dirs).
# Install them on a fresh Debian/Ubuntu machine when missing and we may (root with apt-get); otherwise say how.
have_postgres() { command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
if ! command -v redis-server >/dev/null || ! have_postgres; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing redis-server and postgresql (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server postgresql >/dev/null
    else
        echo "the fleet tests need redis-server and PostgreSQL's initdb/postgres: see the README" >&2
    fi
fi
echo "== ruff"; "$bin/ruff" check src tests bench docs/examples; "$bin/ruff" format --check src tests bench docs/examples
echo "== mypy --strict src"; "$bin/mypy" --strict src
export NO_MKDOCS_2_WARNING=1  # the theme's banner about MkDocs 2, on every build
echo "== docs"; "$bin/mkdocs" build --strict --quiet --site-dir "$(mktemp -d)"
# Bytecode caches on: the workers and every subprocess a test starts would otherwise compile lipsyncer (and
# pytest would re-rewrite every test module) from source each time. Compile once, before the workers start.
unset PYTHONDONTWRITEBYTECODE
"$bin/python" -m compileall -q src tests bench >/dev/null
export LIPSYNCER_HYPOTHESIS=check  # the same generated examples every run (tests/conftest.py)
# pytest caches each test module with its asserts rewritten. Six workers starting without that cache (a fresh
# clone) would each rewrite every module, ~2.5 s of CPU apiece: let one collection write it first.
modules=$(find tests -name 'test_*.py' -o -name 'conftest.py' | wc -l)
cached=$(find tests -name '*-pytest-*.pyc' | wc -l)
if [ "$cached" -lt "$modules" ]; then
    echo "== pytest: caching the rewritten test modules"
    "$bin/python" -m pytest -q -p no:cacheprovider --collect-only >/dev/null
fi
# Six workers on two cores: most tests wait on loopback servers, subprocesses and timers, not on the CPU
# (six finished the suite as fast as five or faster in every paired run; four were slower).
# One test at a time per worker (--maxschedchunk 1): xdist's default first hands each worker a quarter of its
# share in one piece, which gave one worker all the slow tests (they are sorted first) and left three idle.
echo "== pytest"; "$bin/python" -m pytest -q -p no:cacheprovider -n "${LIPSYNCER_TEST_WORKERS:-6}" --maxschedchunk 1 "$@"

#!/usr/bin/env bash
# The project's checks and tests, in the order that fails fastest: lint, types, docs, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
[ -x "$bin/python" ] || { echo "run: python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'" >&2; exit 2; }
echo "== ruff"; "$bin/ruff" check src tests bench docs/examples; "$bin/ruff" format --check src tests bench docs/examples
echo "== mypy --strict src"; "$bin/mypy" --strict src
echo "== docs"; "$bin/mkdocs" build --strict --quiet --site-dir "$(mktemp -d)"
echo "== pytest"; "$bin/python" -m pytest -q -p no:cacheprovider "$@"

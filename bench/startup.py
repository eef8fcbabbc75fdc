"""Start-up cost: ``import lipsyncer`` against ``import fal_client``, and ``lipsyncer --help`` against 0.3 s.

Every sample is a fresh interpreter (nothing cached in ``sys.modules``); the import is timed inside it, the
``--help`` run from outside (interpreter start included, as a user waits for it). Imports alternate rounds so
machine noise hits both sides; each figure is the best of N, the usual way to read a noisy shared machine.

    .venv/bin/python bench/startup.py [--rounds 7] [--check]

``--check`` exits 1 when a budget is exceeded: ``import lipsyncer`` at most 1.1x ``import fal_client``, and
``lipsyncer --help`` under 0.3 s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence

IMPORT_BUDGET = 1.1
"""``import lipsyncer`` may take at most this multiple of ``import fal_client``."""
HELP_BUDGET_SECONDS = 0.3

_TIMED = "import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"


def import_seconds(stmt: str) -> float:
    """How long ``stmt`` takes in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _TIMED.format(stmt=stmt)], capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def wall_seconds(argv: Sequence[str]) -> float:
    """How long a command takes from launch to exit."""
    start = time.perf_counter()
    subprocess.run(list(argv), capture_output=True, check=True)
    return time.perf_counter() - start


def best_of(rounds: int, samples: dict[str, Sequence[str] | str]) -> dict[str, float]:
    """The fastest of ``rounds`` samples of each; a string is an import statement, a sequence a command."""
    best = dict.fromkeys(samples, float("inf"))
    for _ in range(rounds):
        for name, what in samples.items():
            seconds = import_seconds(what) if isinstance(what, str) else wall_seconds(what)
            best[name] = min(best[name], seconds)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="samples of each (the best counts)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a budget is exceeded")
    args = parser.parse_args(argv)

    best = best_of(
        args.rounds,
        {
            "import fal_client": "import fal_client",
            "import lipsyncer": "import lipsyncer",
            "from lipsyncer import Lipsyncer, LipsyncRequest": "from lipsyncer import Lipsyncer, LipsyncRequest",
            "lipsyncer --help": [sys.executable, "-m", "lipsyncer.cli", "--help"],
        },
    )
    base = best["import fal_client"]
    for name, seconds in best.items():
        print(f"{name:<50} {seconds * 1000:8.1f} ms")
    import_ratio = best["import lipsyncer"] / base
    help_ratio = best["lipsyncer --help"] / HELP_BUDGET_SECONDS
    print(f"import lipsyncer / import fal_client   {import_ratio:5.2f}x  (budget {IMPORT_BUDGET}x)")
    print(
        f"from lipsyncer import Lipsyncer / fal  {best['from lipsyncer import Lipsyncer, LipsyncRequest'] / base:5.2f}x"
        "  (informational: the client itself)"
    )
    print(f"lipsyncer --help / {HELP_BUDGET_SECONDS} s               {help_ratio:5.2f}x  (budget 1.0x)")
    over = import_ratio > IMPORT_BUDGET or help_ratio > 1.0
    return 1 if args.check and over else 0


if __name__ == "__main__":
    sys.exit(main())

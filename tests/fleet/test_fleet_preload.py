"""A prefork worker's main process imports what the tasks' clients load before its pool forks, then freezes it
out of the garbage collector."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import gc, json, sys
from celery.signals import worker_init
from lipsyncer import load_settings
from lipsyncer.contrib.celery import Fleet, create_app

class Worker:  # what worker_init's sender offers: the worker's app and pool
    def __init__(self, app, pool_cls="prefork"):
        self.app = app
        self.pool_cls = pool_cls

WATCHED = ("lipsyncer.providers.fal", "lipsyncer.providers.unified", "psycopg", "httpcore", "av")
app = create_app(Fleet(load_settings(sys.argv[1], env={}), env={}))
seen = {"before": [m for m in WATCHED if m in sys.modules]}
worker_init.send(sender=Worker(object()))  # another app's worker: not these fleets' business
seen["other"] = [m for m in WATCHED if m in sys.modules]
seen["frozen_other"] = gc.get_freeze_count()
worker_init.send(sender=Worker(app, "threads"))  # no fork follows: nothing to freeze
seen["frozen_threads"] = gc.get_freeze_count()
worker_init.send(sender=Worker(app))
seen["after"] = [m for m in WATCHED if m in sys.modules]
seen["frozen_after"] = gc.get_freeze_count()
print(json.dumps(seen))
"""


def test_a_worker_preloads_the_providers_and_the_store_driver_opening_nothing(tmp_path: Path) -> None:
    config = tmp_path / "lipsyncer.toml"
    # A server nobody listens on: preloading imports the driver and never connects.
    config.write_text('job_store = "postgresql://nobody@127.0.0.1:9/none"\n')
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(config)], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["before"] == seen["other"] == []  # lazily imported: a producer that never works pays nothing
    assert seen["after"] == [
        "lipsyncer.providers.fal",
        "lipsyncer.providers.unified",
        "psycopg",
        "httpcore",
        "av",
    ]
    # A prefork worker (Celery's default pool) forks its children next: what it holds is frozen out of the
    # garbage collector first, so no collection walks it again.
    assert seen["frozen_other"] == seen["frozen_threads"] == 0 and seen["frozen_after"] > 0

"""Helpers shared by the fleet tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SANDBOX_KEYS = {"FAL_KEY": "sandbox-fal-key", "EVOLINK_API_KEY": "sandbox-unified-key"}
PROVIDER_IDS = ("fal-legacy", "fal-v2", "fal-v2-pro", "fal-v3", "unified")


@dataclass(frozen=True)
class FleetSetup:
    config: Path
    store_url: str
    broker_url: str
    work: Path

    def env(self) -> dict[str, str]:
        """A worker subprocess's environment: the sandbox keys, this config, no user config or data dir."""
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("LIPSYNCER_") and k not in SANDBOX_KEYS
        }
        env.update(SANDBOX_KEYS)
        env.update({"LIPSYNCER_CONFIG": str(self.config), "XDG_DATA_HOME": str(self.work / "data")})
        return env


def write_fleet_config(
    path: Path,
    *,
    base_url: str,
    store_url: str,
    broker_url: str,
    result_backend: str,
    polling: tuple[float, float] = (0.2, 0.5),
    webhook_url: str | None = None,
    sweep_interval: float = 10.0,
) -> Path:
    """Every provider at the sandbox, the shared PostgreSQL store, Celery on the private Redis."""
    lines = [f'job_store = "{store_url}"']
    if webhook_url:
        lines.append(f'webhook_url = "{webhook_url}"')
    lines += [
        "[polling]",
        f"initial_interval = {polling[0]}",
        f"max_interval = {polling[1]}",
        "multiplier = 1.3",
    ]
    lines += ["", "[celery]", f'broker_url = "{broker_url}"', f'result_backend = "{result_backend}"']
    # For the tests that run beat: a task Redis lost comes back within seconds, not the default five minutes.
    lines.append(f"sweep_interval = {sweep_interval}")
    # A killed worker's unacknowledged tasks come back within seconds instead of Redis's default hour; a worker
    # killed while it held kombu's restore mutex blocks every restore until the mutex expires (300 s by default).
    lines += [
        "[celery.options]",
        "broker_transport_options = { visibility_timeout = 10, unacked_restore_interval = 1, "
        "unacked_restore_throttle = 1, unacked_mutex_expire = 5 }",
        "result_expires = 3600",
        "",
    ]
    for pid in PROVIDER_IDS:
        lines += [f"[providers.{pid}]", f'base_url = "{base_url}"', ""]
    lines += ["[storages.fal-cdn]", f'base_url = "{base_url}"', ""]
    path.write_text("\n".join(lines))
    return path


class WorkerProcess:
    """``celery -A lipsyncer.contrib.celery worker`` in its own session (so a kill takes its children too)."""

    def __init__(self, setup: FleetSetup, name: str, *, concurrency: int = 2, beat: bool = False) -> None:
        self.name = name
        self.log = setup.work / f"{name}.log"
        args = [sys.executable, "-m", "celery", "-A", "lipsyncer.contrib.celery", "worker"]
        args += [
            "--pool=prefork",
            f"--concurrency={concurrency}",
            "--loglevel=WARNING",
            f"--hostname={name}@%h",
        ]
        args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        if beat:  # Celery beat inside this worker, with the fleet's default schedule (the sweep)
            args += ["--beat", f"--schedule={setup.work / f'{name}-beat-schedule'}"]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                args,
                cwd=setup.work,
                env=setup.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once: a machine lost mid-run."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

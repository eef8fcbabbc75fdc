"""The ``--json`` documents (their schema is in docs/cli.md) and the provider rows both outputs share.

Built from the client's public data only; no value of a credential ever enters a payload, only its env name.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..core.schema import Job, JobStatus, LipsyncResult
from .errors import Failure

if TYPE_CHECKING:
    from ..core.client import AsyncLipsyncer
    from ..core.router import RoutePlan

__all__ = [
    "ProviderRow",
    "error_payload",
    "job_payload",
    "plan_payload",
    "provider_rows",
    "result_payload",
    "storage_rows",
]


def _jsonable(model: Any) -> Any:
    return json.loads(model.model_dump_json()) if model is not None else None


def result_payload(result: LipsyncResult, *, expected_seconds: float | None = None) -> dict[str, Any]:
    """The ``run`` / ``jobs resume`` result document."""
    payload: dict[str, Any] = {
        "job_id": result.job_id,
        "remote_id": result.remote_id,
        "served_by": _jsonable(result.served_by),
        "attempts": [_jsonable(a) for a in result.attempts],
        "cost": _jsonable(result.cost),
        "saved_to": result.saved_to,
        "video": _jsonable(result.video),
        "elapsed_seconds": result.timings.elapsed,
    }
    if expected_seconds is not None:
        payload["expected_seconds"] = expected_seconds
    return payload


def error_payload(job_id: str | None, failure: Failure) -> dict[str, Any]:
    return {"job_id": job_id, "error": failure.message, "fix": failure.fix, "exit_code": failure.code}


def plan_payload(plan: RoutePlan) -> dict[str, Any]:
    """The ``route`` / ``estimate`` document: candidates in order, exclusions with reasons."""
    candidates = []
    for route in plan.candidates:
        cost = plan.estimate(route)
        candidates.append(
            {
                "route": route.id,
                "provider": route.provider.id,
                "model": route.model.id,
                "endpoint": route.model.endpoint,
                "priority": route.priority,
                "price_per_second": str(route.price_per_second),
                "estimated_cost": _jsonable(cost),
            }
        )
    return {
        "model": plan.request.model,
        "strategy": plan.strategy,
        "output_seconds": plan.output_seconds,
        "candidates": candidates,
        "excluded": [{"route": e.route, "kind": e.kind, "reason": e.reason} for e in plan.excluded],
        "suggestions": list(plan.suggestions),
        "explanation": plan.explain(),
    }


def job_payload(job: Job, history: list[JobStatus] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(job.model_dump_json())
    if history is not None:
        data["history"] = [json.loads(s.model_dump_json()) for s in history]
    return data


@dataclass(frozen=True)
class ProviderRow:
    id: str
    description: str
    enabled: bool
    priority: int
    credential_env: str | None
    credentials: str
    """found | missing | not needed (never the value)."""
    features: list[str]
    plugin: str
    models: list[dict[str, Any]]

    def payload(self) -> dict[str, Any]:
        return asdict(self)


def _credentials(client: AsyncLipsyncer, env_var: str | None) -> str:
    if env_var is None:
        return "not needed"
    return "found" if client.env.get(env_var) else "missing"


def provider_rows(client: AsyncLipsyncer) -> list[ProviderRow]:
    """One row per installed provider, with config prices and priorities applied (as the router sees them)."""
    routes = client.router.routes()
    rows = []
    for pid in sorted(client.plugins.providers):
        cls = client.plugins.providers[pid]
        env_var = client.credential_env(cls)
        report = client.plugins.plugin_for(pid)
        features = [
            name
            for name, on in (
                ("cancel", cls.can_cancel),
                ("idempotent submits", cls.idempotent_submits),
                ("webhooks", cls.accepts_webhooks),
                ("uploads local files", cls.uploads_local_files),
            )
            if on
        ]
        models = [
            {
                "id": r.model.id,
                "endpoint": r.model.endpoint,
                "options": sorted(o.value for o in r.model.options),
                "price_per_second": str(r.price_per_second),
                "price_per_minute": str((r.price_per_second * 60).quantize(Decimal("0.0001"))),
            }
            for r in routes
            if r.provider.id == pid
        ]
        rows.append(
            ProviderRow(
                id=pid,
                description=cls.description,
                enabled=client.settings.enabled(pid),
                priority=client.settings.priority(pid, cls.default_priority),
                credential_env=env_var,
                credentials=_credentials(client, env_var),
                features=features,
                plugin=f"{report.name} ({report.source})" if report else "?",
                models=models,
            )
        )
    return rows


def storage_rows(client: AsyncLipsyncer) -> list[dict[str, Any]]:
    rows = []
    for sid in sorted(client.plugins.storages):
        cls = client.plugins.storages[sid]
        env_var = client.credential_env(cls)
        report = next((r for r in client.plugins.reports.values() if sid in r.storages), None)
        rows.append(
            {
                "id": sid,
                "credential_env": env_var,
                "credentials": _credentials(client, env_var),
                "configured": client.settings.storage == sid,
                "plugin": f"{report.name} ({report.source})" if report else "?",
            }
        )
    return rows


def plugin_errors(client: AsyncLipsyncer) -> list[dict[str, Any]]:
    return [
        {"plugin": r.name, "source": r.source, "error": r.error}
        for r in client.plugins.reports.values()
        if not r.ok
    ]

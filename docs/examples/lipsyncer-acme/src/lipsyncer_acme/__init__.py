"""ACME Lipsync: a white-label copy of the unified task API, shipped as its own lipsyncer plugin.

Everything lipsyncer needs is declared as class data; the four async methods do the I/O.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx

from lipsyncer import (
    Job,
    JobFailedError,
    JobState,
    JobStatus,
    LipsyncRequest,
    ModelSpec,
    Option,
    Provider,
    ProviderOutput,
    ProviderRejectedError,
    ProviderUnavailableError,
    Submission,
    VideoFile,
    hookimpl,
)

_STATES = {
    "pending": JobState.QUEUED,
    "processing": JobState.RUNNING,
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "cancelled": JobState.CANCELLED,
}


class AcmeProvider(Provider):
    id = "acme"
    description = "ACME Lipsync (white-label unified task API)"
    models = (
        ModelSpec(
            id="lipsync-2",
            endpoint="/v1/videos/generations",
            options=frozenset({Option.SYNC_MODE, Option.TEMPERATURE}),
            price_per_second=Decimal("0.03"),
            seconds_per_output_second=6,
        ),
    )
    credential_env = "ACME_API_KEY"
    hosts = ("api.acme.example",)
    default_priority = 50

    def _client(self) -> httpx.AsyncClient:
        base = self.context.base_url or "https://api.acme.example"
        return httpx.AsyncClient(
            base_url=base,
            transport=self.context.transport,
            headers={"Authorization": f"Bearer {self.context.key()}"},
            timeout=30,
        )

    async def submit(
        self,
        request: LipsyncRequest,
        model: ModelSpec,
        *,
        video_url: str,
        audio_url: str,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Submission:
        body: dict[str, Any] = {
            "model": model.id,
            "video_url": video_url,
            "audio_url": audio_url,
            "sync_mode": request.sync_mode.value,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        async with self._client() as client:
            response = await client.post(model.endpoint, json=body)
        if response.status_code >= 500:
            raise ProviderUnavailableError(
                response.text,
                provider=self.id,
                status_code=response.status_code,
                retryable=True,
                accepted=False,
            )
        if response.status_code >= 400:
            raise ProviderRejectedError(response.text, provider=self.id, status_code=response.status_code)
        task = response.json()
        return Submission(remote_id=task["id"], endpoint=model.endpoint, status_url=f"/v1/tasks/{task['id']}")

    async def status(self, job: Job) -> JobStatus:
        task = await self._task(job)
        state = _STATES.get(task["status"], JobState.UNKNOWN)
        error = task.get("error") or {}
        return JobStatus(
            state=state,
            progress=task.get("progress"),
            raw_status=task["status"],
            error_code=error.get("code"),
            error_message=error.get("message"),
        )

    async def result(self, job: Job) -> ProviderOutput:
        task = await self._task(job)
        if task["status"] != "completed":
            raise JobFailedError(f"task {job.remote_id} is {task['status']}", job=job)
        first = task["results"][0]
        url = first["url"] if isinstance(first, dict) else first
        return ProviderOutput(video=VideoFile(url=url), raw=task)

    async def _task(self, job: Job) -> dict[str, Any]:
        async with self._client() as client:
            response = await client.get(f"/v1/tasks/{job.remote_id}")
        if response.status_code >= 400:
            raise ProviderUnavailableError(
                response.text,
                provider=self.id,
                status_code=response.status_code,
                retryable=response.status_code >= 500,
            )
        task: dict[str, Any] = response.json()
        return task


@hookimpl
def register_providers(register: Any) -> None:
    register(AcmeProvider)

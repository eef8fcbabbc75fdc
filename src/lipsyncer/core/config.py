"""Configuration: one typed object per client, loaded from files and the environment.

Precedence, lowest first: defaults, ``[tool.lipsyncer]`` in ./pyproject.toml, ./lipsyncer.toml, the file named
by ``LIPSYNCER_CONFIG``, ``LIPSYNCER_*`` environment variables, then keyword overrides. Swapping the backend a
script uses is a change here only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "CelerySettings",
    "LimitsSettings",
    "PluginSettings",
    "PollingPolicy",
    "ProviderSettings",
    "Settings",
    "load_settings",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PollingPolicy(_Strict):
    """How long to wait between status look-ups, and when to give up waiting (the job itself stays stored)."""

    initial_interval: float = Field(default=1.0, gt=0)
    max_interval: float = Field(default=30.0, gt=0)
    multiplier: float = Field(default=1.6, ge=1.0)
    jitter: float = Field(default=0.2, ge=0, le=1)
    start_deadline: float | None = Field(default=None, gt=0, description="seconds the job may stay queued")
    total_deadline: float | None = Field(default=None, gt=0, description="seconds from submit to completion")
    call_timeout: float = Field(default=30.0, gt=0, description="seconds for one HTTP call")

    @classmethod
    def for_speed(cls, seconds_per_output_second: float) -> PollingPolicy:
        """Defaults tuned to a model's speed: poll sync-3 (minutes per clip) far less often than lipsync-1.9."""
        initial = min(10.0, max(1.0, seconds_per_output_second / 2))
        return cls(
            initial_interval=initial,
            max_interval=min(60.0, max(5.0, seconds_per_output_second * 2)),
            start_deadline=3600.0,
            total_deadline=max(1800.0, seconds_per_output_second * 600 * 2),
        )

    def merged(self, override: PollingPolicy | None) -> PollingPolicy:
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_unset=True))


class ProviderSettings(_Strict):
    enabled: bool = True
    priority: int | None = None
    api_key_env: str | None = None
    webhook_secret_env: str | None = Field(
        default=None, description="env var holding the webhook signing secret (providers that sign with one)"
    )
    base_url: str | None = Field(default=None, description="send this provider's traffic to another base URL")
    prices: dict[str, Decimal] = Field(default_factory=dict, description="model -> USD per output second")
    polling: PollingPolicy | None = None
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="provider-specific settings, validated against the provider's `options_model` "
        "(an unknown key is a ConfigError naming the provider and the key)",
    )
    max_in_flight: int | None = Field(
        default=None, ge=1, description="jobs submitted to this provider and not finished, at most"
    )
    submits_per_minute: float | None = Field(default=None, gt=0, description="submits in any minute, at most")
    max_requests: int = Field(
        default=32,
        ge=1,
        description="HTTP requests to this provider at once (kept below the connection pool)",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/") if value else value


class LimitsSettings(_Strict):
    backend: str | None = Field(
        default=None,
        description="where limits are counted: None for this process; a URL (redis://...) for a fleet, "
        "served by a plugin's make_limit_backend hook",
    )


class PluginSettings(_Strict):
    allow: list[str] | None = Field(default=None, description="load only these entry points (None: all)")
    block: list[str] = Field(default_factory=list)
    strict: bool = False


class CelerySettings(_Strict):
    """``[celery]``: where :mod:`lipsyncer.contrib.celery` workers take tasks from and put results."""

    broker_url: str | None = Field(default=None, repr=False, description="e.g. redis://host:6379/0")
    result_backend: str | None = Field(default=None, repr=False, description="e.g. redis://host:6379/1")
    queue: str = Field(default="lipsyncer", description="the queue lipsyncer's tasks are sent to")
    sweep_interval: float | None = Field(
        default=300.0,
        gt=0,
        description="seconds between lipsyncer.sweep runs when Celery beat runs (None: no schedule)",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="any other Celery setting, as is")


class Settings(_Strict):
    model: str | None = Field(default=None, description="the model of requests that name none")
    strategy: str = "priority"
    fallbacks: bool = True
    max_attempts: int = Field(default=3, ge=1, description="tries across retries and fallbacks together")
    storage: str | None = None
    job_store: str | None = Field(
        default=None,
        repr=False,  # a URL may carry a password
        description="SQLite path or postgresql:// URL; None: SQLite in the user data dir",
    )
    download_dir: str | None = None
    polling: PollingPolicy | None = None
    webhook_jwks_url: str | None = None
    webhook_url: str | None = Field(
        default=None,
        description="this client's own webhook receiver ({provider} is replaced by the provider id); "
        "every job is tagged with lipsyncer_job=<id> on it",
    )
    strict_config: bool = Field(
        default=True, description="config naming providers or storages that are not installed is an error"
    )
    claim_lease: float = Field(default=300.0, gt=0, description="seconds a completer's claim lasts unrenewed")
    resume_concurrency: int = Field(default=8, ge=1, description="jobs resume() finishes at once")
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    plugins: PluginSettings = Field(default_factory=PluginSettings)
    celery: CelerySettings = Field(default_factory=CelerySettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    storages: dict[str, dict[str, Any]] = Field(default_factory=dict)
    only: list[str] | None = Field(default=None, description="enable only these providers, in this order")
    source: tuple[str, ...] = Field(default=(), description="where these settings came from")

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        from .schema import check_model_id

        return None if value is None else check_model_id(value)

    def provider(self, provider_id: str) -> ProviderSettings:
        return self.providers.get(provider_id) or ProviderSettings()

    def enabled(self, provider_id: str) -> bool:
        if self.only is not None and provider_id not in self.only:
            return False
        return self.provider(provider_id).enabled

    def priority(self, provider_id: str, default: int) -> int:
        """Lower runs first: ``only`` order, then the configured priority, then the provider's default."""
        if self.only is not None and provider_id in self.only:
            return self.only.index(provider_id) - 1_000_000
        configured = self.provider(provider_id).priority
        return default if configured is None else configured

    def with_overrides(self, **changes: Any) -> Settings:
        return _build(_deep_merge(self.model_dump(exclude_unset=True), changes), (*self.source, "overrides"))


def load_settings(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings from the usual places; ``env`` and ``cwd`` are injectable so tests need no globals."""
    env = os.environ if env is None else env
    base = Path(cwd) if cwd is not None else Path.cwd()
    data: dict[str, Any] = {}
    sources: list[str] = []
    files: list[tuple[Path, dict[str, Any]]] = []

    pyproject = base / "pyproject.toml"
    if pyproject.is_file():
        section = _read_toml(pyproject).get("tool", {}).get("lipsyncer")
        if section:
            data = _deep_merge(data, section)
            sources.append(f"{pyproject}[tool.lipsyncer]")
            files.append((pyproject, section))
    for candidate in (base / "lipsyncer.toml", env.get("LIPSYNCER_CONFIG"), path):
        if not candidate:
            continue
        file = Path(candidate).expanduser()
        if not file.is_absolute():
            file = base / file
        if not file.is_file():
            if candidate is path or candidate == env.get("LIPSYNCER_CONFIG"):
                raise ConfigError(f"config file not found: {file}", fix="check the path or LIPSYNCER_CONFIG")
            continue
        content = _read_toml(file)
        if file.name == "pyproject.toml":
            content = content.get("tool", {}).get("lipsyncer", {})
        data = _deep_merge(data, content)
        sources.append(str(file))
        files.append((file, content))

    env_data = _from_env(env)
    if env_data:
        data = _deep_merge(data, env_data)
        sources.append("environment")
    if overrides:
        data = _deep_merge(data, overrides)
        sources.append("overrides")
    return _build(data, tuple(sources), files)


def _build(
    data: dict[str, Any], sources: tuple[str, ...], files: list[tuple[Path, dict[str, Any]]] | None = None
) -> Settings:
    data = {k: v for k, v in data.items() if k != "source"}
    try:
        return Settings.model_validate({**data, "source": sources})
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        key = ".".join(str(p) for p in first["loc"])
        where = _where_set(first["loc"], files or [])
        if where is None:
            head = f"invalid configuration ({', '.join(sources) or 'defaults'})"
        else:
            head = f"{where[0]}, line {where[1]}" if where[1] else str(where[0])
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        raise ConfigError(f"{head}: {problems}", fix=_config_fix(key, first)) from None


def _config_fix(key: str, error: Mapping[str, Any]) -> str:
    """What to change, from pydantic's error type (the message says what is wrong)."""
    kind = error.get("type", "")
    expected = (error.get("ctx") or {}).get("expected")
    if kind == "extra_forbidden":
        return f"remove {key} or correct its spelling (docs/configuration.md lists every setting)"
    if expected:
        return f"set {key} to {expected}"
    bounds = {k: v for k, v in (error.get("ctx") or {}).items() if k in ("ge", "gt", "le", "lt")}
    if bounds:
        signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
        return f"set {key} to a value " + " and ".join(f"{signs[k]} {v}" for k, v in bounds.items())
    if kind.startswith(("int_", "float_", "bool_", "string_", "decimal_")):
        wanted = kind.split("_", 1)[0].replace("int", "a whole number").replace("float", "a number")
        wanted = {"bool": "true or false", "string": "a quoted string", "decimal": "a number"}.get(
            wanted, wanted
        )
        return f"set {key} to {wanted}"
    return f"correct {key} (see docs/configuration.md)"


def _where_set(
    loc: tuple[Any, ...], files: list[tuple[Path, dict[str, Any]]]
) -> tuple[Path, int | None] | None:
    """The last file that sets ``loc`` (later files win), and the line that sets it when it can be found."""
    keys = [str(p) for p in loc]
    for file, content in reversed(files):
        node: Any = content
        depth = 0
        for part in keys:
            if not isinstance(node, Mapping) or part not in node:
                break
            node, depth = node[part], depth + 1
        if depth:
            return file, _line_of(file, keys[:depth])
    return None


def _line_of(file: Path, keys: list[str]) -> int | None:
    """The line assigning ``keys`` (``a.b.c``): ``c =`` under ``[a.b]``, ``b.c =`` under ``[a]``, or a header."""
    prefix = ["tool", "lipsyncer"] if file.name == "pyproject.toml" else []
    table: list[str] = []
    try:
        lines = file.read_text().splitlines()
    except OSError:
        return None
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if line.startswith("["):
            table = [p.strip().strip("\"'") for p in line.strip("[]").split(".")]
            if table[: len(prefix)] != prefix:
                table = ["<other>"]
                continue
            table = table[len(prefix) :]
            if table == keys:
                return number
            continue
        name = line.split("=", 1)[0].strip() if "=" in line else None
        if name is None:
            continue
        dotted = table + [p.strip().strip("\"'") for p in name.split(".")]
        if dotted == keys or (len(dotted) < len(keys) and keys[: len(dotted)] == dotted):
            return number
    return None


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with open(file, "rb") as fh:
            content: dict[str, Any] = tomllib.load(fh)
            return content
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from None


_TRUE = {"1", "true", "yes", "on"}


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    simple = {
        "LIPSYNCER_MODEL": "model",
        "LIPSYNCER_STRATEGY": "strategy",
        "LIPSYNCER_STORAGE": "storage",
        "LIPSYNCER_JOB_STORE": "job_store",
        "LIPSYNCER_DOWNLOAD_DIR": "download_dir",
    }
    for var, key in simple.items():
        if env.get(var):
            data[key] = env[var]
    if env.get("LIPSYNCER_FALLBACKS"):
        data["fallbacks"] = env["LIPSYNCER_FALLBACKS"].lower() in _TRUE
    if env.get("LIPSYNCER_MAX_ATTEMPTS"):
        data["max_attempts"] = env["LIPSYNCER_MAX_ATTEMPTS"]
    if env.get("LIPSYNCER_PROVIDERS"):
        # "fal-v3,unified": only these, in this order. The quickest way to swap a backend from a shell.
        data["only"] = [p.strip() for p in env["LIPSYNCER_PROVIDERS"].split(",") if p.strip()]
    return data


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out

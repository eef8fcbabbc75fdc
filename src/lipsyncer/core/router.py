"""Candidate selection: which routes can honour a request, in what order, and why the others cannot.

The router reads providers' declared data only (models, options, credentials, prices). It never names a
provider, so adding one never edits this file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from .config import Settings
from .errors import NoRouteError
from .provider import ModelSpec, Provider
from .schema import Cost, LipsyncRequest, MediaKind, Option
from .strategies import CostStrategy, PriorityStrategy, strategy_named

__all__ = ["Exclusion", "Route", "RoutePlan", "Router"]


@dataclass(frozen=True)
class Route:
    provider: type[Provider]
    model: ModelSpec
    price_per_second: Decimal
    priority: int

    @property
    def id(self) -> str:
        return f"{self.provider.id}:{self.model.id}"

    def cost(self, output_seconds: float) -> Cost:
        """The estimated cost of an output this long on this route."""
        return Cost.of(self.price_per_second, output_seconds, "estimate")


@dataclass(frozen=True)
class Exclusion:
    route: str
    reason: str
    kind: str
    """model | option | credentials | disabled | storage | pinned | cost"""
    missing_options: frozenset[Option] = frozenset()


@dataclass(frozen=True)
class RoutePlan:
    request: LipsyncRequest
    candidates: tuple[Route, ...]
    excluded: tuple[Exclusion, ...]
    strategy: str
    output_seconds: float | None = None
    suggestions: tuple[str, ...] = field(default=())

    @property
    def first(self) -> Route:
        return self.candidates[0]

    def estimate(self, route: Route) -> Cost | None:
        return None if self.output_seconds is None else route.cost(self.output_seconds)

    def explain(self) -> str:
        lines = [f"Routing {self.request.model!r} by {self.strategy}:"]
        if self.candidates:
            for i, route in enumerate(self.candidates, 1):
                cost = self.estimate(route)
                price = f"${route.price_per_second:.4f}/s" + (f", about ${cost.amount}" if cost else "")
                lines.append(
                    f"  {i}. {route.id}  ({route.model.endpoint}; {price}; priority {route.priority})"
                )
        else:
            lines.append("  no candidate")
        if self.excluded:
            lines.append("Excluded:")
            lines += [f"  - {e.route}: {e.reason}" for e in self.excluded]
        if self.suggestions:
            lines.append("A relaxed request would be served:")
            lines += [f"  - {s}" for s in self.suggestions]
        return "\n".join(lines)


class Router:
    """Builds a :class:`RoutePlan` from provider classes, settings and what credentials exist."""

    def __init__(
        self,
        providers: Mapping[str, type[Provider]],
        settings: Settings,
        *,
        has_credentials: Callable[[type[Provider]], str | None],
        storage: str | None = None,
    ) -> None:
        """``has_credentials`` returns None when the provider's key is present, else the env var it needs."""
        self.providers = dict(providers)
        self.settings = settings
        self._missing_credentials = has_credentials
        self._storage = storage
        self.strategy: PriorityStrategy | CostStrategy = strategy_named(settings.strategy)

    def routes(self) -> list[Route]:
        """Every (provider, model) pair, enabled or not, with configured prices and priorities applied."""
        out = []
        for pid in sorted(self.providers):
            cls = self.providers[pid]
            conf = self.settings.provider(pid)
            for spec in cls.models:
                out.append(
                    Route(
                        provider=cls,
                        model=spec,
                        price_per_second=conf.prices.get(spec.id, spec.price_per_second),
                        priority=self.settings.priority(pid, cls.default_priority),
                    )
                )
        return out

    def plan(self, request: LipsyncRequest, *, output_seconds: float | None = None) -> RoutePlan:
        """Order the routes that can serve ``request``; raise :class:`NoRouteError` when none can."""
        wanted = request.options()
        model_id = request.model_id  # raises InvalidRequestError when neither request nor config names one
        pinned = request.pinned_provider
        kinds = {request.video.kind, request.audio.kind}
        if pinned is not None and pinned not in self.providers:
            raise NoRouteError(
                f"provider {pinned!r} is not installed",
                reasons={pid: "not the pinned provider" for pid in sorted(self.providers)},
                suggestions=[f"installed providers: {', '.join(sorted(self.providers)) or 'none'}"],
            )

        eligible: list[Route] = []
        excluded: list[Exclusion] = []
        by_provider: dict[str, list[Route]] = {}
        for each in self.routes():
            by_provider.setdefault(each.provider.id, []).append(each)

        for pid, routes in by_provider.items():
            cls = self.providers[pid]
            match = next((r for r in routes if r.model.id == model_id), None)
            if pinned is not None and pid != pinned:
                excluded.append(Exclusion(pid, f"request is pinned to {pinned!r}", "pinned"))
                continue
            if match is None:
                served = ", ".join(r.model.id for r in routes)
                excluded.append(Exclusion(pid, f"does not serve {model_id!r} (serves {served})", "model"))
                continue
            route = match
            if not self.settings.enabled(pid):
                excluded.append(Exclusion(route.id, "disabled in the config", "disabled"))
                continue
            missing = frozenset(o for o in wanted if not route.model.honours(o))
            if missing:
                names = ", ".join(sorted(o.value for o in missing))
                excluded.append(Exclusion(route.id, f"does not honour {names}", "option", missing))
                continue
            if _needs_hosting(cls, kinds) and self._storage is None:
                excluded.append(
                    Exclusion(route.id, "cannot take local files and no storage is configured", "storage")
                )
                continue
            env_var = self._missing_credentials(cls)
            if env_var is not None:
                excluded.append(Exclusion(route.id, f"no credentials ({env_var} is not set)", "credentials"))
                continue
            if request.max_cost is not None:
                if output_seconds is None:
                    excluded.append(
                        Exclusion(
                            route.id,
                            "max_cost set, but the output's length is unknown (remote media)",
                            "cost",
                        )
                    )
                    continue
                estimate = route.cost(output_seconds)
                if estimate.amount > request.max_cost:
                    excluded.append(
                        Exclusion(
                            route.id,
                            f"estimated ${estimate.amount} for {output_seconds:.2f} s is over max_cost "
                            f"${request.max_cost}",
                            "cost",
                        )
                    )
                    continue
            eligible.append(route)

        ordered = self.strategy.order(eligible)
        suggestions = tuple(self._suggest(request, excluded, by_provider)) if not ordered else ()
        plan = RoutePlan(
            request=request,
            candidates=tuple(ordered),
            excluded=tuple(excluded),
            strategy=self.strategy.name,
            output_seconds=output_seconds,
            suggestions=suggestions,
        )
        if not ordered:
            known = sorted({r.model.id for rs in by_provider.values() for r in rs})
            head = (
                f"no provider serves model {model_id!r} (known models: {', '.join(known)})"
                if all(e.kind in ("model", "pinned") for e in excluded)
                else f"no route can serve this {request.model!r} request"
            )
            raise NoRouteError(
                head,
                reasons={e.route: e.reason for e in excluded},
                suggestions=suggestions,
                exclusions=excluded,
                fix=_fix(excluded),
            )
        return plan

    def _suggest(
        self, request: LipsyncRequest, excluded: list[Exclusion], by_provider: Mapping[str, list[Route]]
    ) -> list[str]:
        """Say which option blocks the request and where it would be honoured."""
        out: list[str] = []
        for exclusion in excluded:
            if exclusion.kind == "option" and exclusion.missing_options:
                dropped = ", ".join(sorted(o.value for o in exclusion.missing_options))
                out.append(f"without {dropped}: {exclusion.route}")
        for option in sorted(request.options(), key=lambda o: o.value):
            honouring = [
                r.id
                for routes in by_provider.values()
                for r in routes
                if r.model.honours(option)
                and self.settings.enabled(r.provider.id)
                and option is not Option.SYNC_MODE
            ]
            blocked = any(option in e.missing_options for e in excluded)
            if blocked and honouring:
                out.append(f"{option.value} is honoured by {', '.join(honouring)}")
        return out


def _needs_hosting(cls: type[Provider], kinds: set[MediaKind]) -> bool:
    """Inputs the provider cannot fetch or upload itself: they must go through a configured storage."""
    if cls.uploads_local_files:
        return False
    hosted = {MediaKind.PATH, MediaKind.BYTES} | (set() if cls.accepts_data_uris else {MediaKind.DATA_URI})
    return bool(kinds & hosted)


def _fix(excluded: list[Exclusion]) -> str | None:
    """The one change most likely to open a route: a missing key is the commonest."""
    missing = sorted(
        {e.reason.split("(", 1)[1].split(" ", 1)[0] for e in excluded if e.kind == "credentials"}
    )
    if missing:
        return f"set {' or '.join(missing)}"
    if any(e.kind == "storage" for e in excluded):
        return "set `storage` (e.g. 'fal-cdn') or pass URLs"
    if excluded and all(e.kind in ("model", "pinned") for e in excluded):
        return "use a model an installed provider serves (`lipsyncer providers` lists them)"
    if any(e.kind == "cost" for e in excluded):
        return "raise max_cost, pick a cheaper model, or use local files so the cost can be estimated"
    return None

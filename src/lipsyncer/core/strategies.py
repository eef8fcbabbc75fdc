"""Routing strategies: each a small class that only orders routes the router already found eligible."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol

from .errors import ConfigError

if TYPE_CHECKING:
    from .router import Route

__all__ = ["CostStrategy", "PriorityStrategy", "Strategy", "strategy_named"]


class Strategy(Protocol):
    name: ClassVar[str]

    def order(self, routes: Sequence[Route]) -> list[Route]: ...


class PriorityStrategy:
    """Config order first (``only``, then ``priority``), price to break ties: predictable for operators."""

    name: ClassVar[str] = "priority"

    def order(self, routes: Sequence[Route]) -> list[Route]:
        return sorted(routes, key=lambda r: (r.priority, r.price_per_second, r.id))

    def describe(self, route: Route) -> str:
        return f"priority {route.priority}"


class CostStrategy:
    """Cheapest first. Every route renders the same output length, so price per second decides."""

    name: ClassVar[str] = "cost"

    def order(self, routes: Sequence[Route]) -> list[Route]:
        return sorted(routes, key=lambda r: (r.price_per_second, r.priority, r.id))

    def describe(self, route: Route) -> str:
        return f"${route.price_per_second}/s"


_BUILT_IN: dict[str, type[PriorityStrategy] | type[CostStrategy]] = {
    PriorityStrategy.name: PriorityStrategy,
    CostStrategy.name: CostStrategy,
}


def strategy_named(name: str) -> PriorityStrategy | CostStrategy:
    try:
        return _BUILT_IN[name]()
    except KeyError:
        raise ConfigError(
            f"unknown routing strategy {name!r}", fix=f"use one of: {', '.join(sorted(_BUILT_IN))}"
        ) from None

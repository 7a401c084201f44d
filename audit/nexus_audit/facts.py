"""What the audit log needs to know from the policy in force: tenants and legal holds.

The audit package imports nothing of the control plane; the host hands it a
`PolicyFacts`. `ConfigFacts` reads them from the compiled config in force
(``data.nexus.config``: ``tenants`` and ``retention``), which the control
plane provides when the audit service runs inside it. Without a policy in
force, no tenant is known.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ConfigFacts", "NoFacts", "PolicyFacts", "StaticFacts"]


class PolicyFacts(Protocol):
    def known_tenants(self) -> frozenset[str]:
        """Tenant ids of the policy in force (empty when there is none)."""
        ...

    def legal_holds(self, tenant: str) -> tuple[str, ...]:
        """The data classes of ``tenant`` under legal hold (the ``*`` defaults included)."""
        ...

    def known_tools(self) -> frozenset[str]:
        """Tool ids of the policy's catalog, kept in leaf paths: an author's word, no one's data."""
        ...


class NoFacts:
    """No policy in force: no tenant is known, nothing is held."""

    def known_tenants(self) -> frozenset[str]:
        return frozenset()

    def legal_holds(self, tenant: str) -> tuple[str, ...]:
        return ()

    def known_tools(self) -> frozenset[str]:
        return frozenset()


@dataclass(frozen=True)
class StaticFacts:
    """Fixed facts (the CLI with a ``data.json``, and tests)."""

    tenants: frozenset[str]
    holds: Mapping[str, tuple[str, ...]]
    tools: frozenset[str] = frozenset()

    def known_tenants(self) -> frozenset[str]:
        return self.tenants

    def known_tools(self) -> frozenset[str]:
        return self.tools

    def legal_holds(self, tenant: str) -> tuple[str, ...]:
        return tuple(self.holds.get(tenant, ())) + tuple(self.holds.get("*", ()))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StaticFacts:
        tenants = config.get("tenants")
        retention = config.get("retention")
        holds: dict[str, tuple[str, ...]] = {}
        if isinstance(retention, Mapping):
            for scope, classes in retention.items():
                if isinstance(classes, Mapping):
                    held = tuple(
                        sorted(
                            name
                            for name, rule in classes.items()
                            if isinstance(rule, Mapping) and rule.get("legal_hold")
                        )
                    )
                    if held:
                        holds[str(scope)] = held
        names = frozenset(str(t) for t in tenants) if isinstance(tenants, Mapping) else frozenset()
        catalog = config.get("tools")
        tools = frozenset(str(t) for t in catalog) if isinstance(catalog, Mapping) else frozenset()
        return cls(names, holds, tools)


class ConfigFacts:
    """Facts read from ``config_in_force()`` each time (the host caches compiled configs)."""

    def __init__(self, config_in_force: Callable[[], Mapping[str, Any] | None]) -> None:
        self._config_in_force = config_in_force
        self._last: tuple[int, StaticFacts] | None = None

    def _facts(self) -> StaticFacts:
        config = self._config_in_force()
        if config is None:
            return StaticFacts(frozenset(), {})
        last = self._last
        if last is not None and last[0] == id(config):
            return last[1]
        facts = StaticFacts.from_config(config)
        self._last = (id(config), facts)
        return facts

    def known_tenants(self) -> frozenset[str]:
        return self._facts().known_tenants()

    def legal_holds(self, tenant: str) -> tuple[str, ...]:
        return self._facts().legal_holds(tenant)

    def known_tools(self) -> frozenset[str]:
        return self._facts().known_tools()

"""Regions and their fleets, as operators configure them (``deploy/fleet.yaml``).

Each region has a jurisdiction, a rollout wave (0 is the canary) and the ids
of the enforcers declared in it (operators may register more through the
API; no other enforcer is heard). The rollout engine reads this; a
region missing here receives no bundle. Loaded with the same strict,
position-keeping loader as the specs, so a mistake is reported as
``file:line:column: message``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from nexus_control.authoring.loader import Problem, SpecError, load_document
from nexus_control.authoring.spec import Identifier, _Strict
from nexus_control.replay.gates import ReplayGates, ShadowGates

__all__ = [
    "DEFAULT_ACTIVATION_DEADLINE_S",
    "DEFAULT_SOAK_S",
    "DEFAULT_STALE_AFTER_S",
    "Fleet",
    "FleetSpec",
    "RegionConfig",
    "fleet_yaml",
    "load_fleet",
]

DEFAULT_SOAK_S = 30
DEFAULT_ACTIVATION_DEADLINE_S = 120
DEFAULT_STALE_AFTER_S = 30
_PACKAGE = r"^nexus(\.[a-z_][a-z0-9_]*)+$"


class RegionConfig(_Strict):
    id: Identifier
    jurisdiction: Identifier
    wave: Annotated[int, Field(ge=0, le=100)]
    enforcers: list[Identifier] = Field(default_factory=list)
    """Enforcer ids declared in the region (with those operators register, all it expects)."""


class FleetSpec(_Strict):
    api_version: Literal["policy.nexus.ai/v1"]
    kind: Literal["Fleet"]
    regions: list[RegionConfig] = Field(min_length=1)
    soak_seconds: Annotated[int, Field(ge=0, le=86_400)] = DEFAULT_SOAK_S
    """How long every enforcer of a wave must run a revision error-free before the next wave."""
    activation_deadline_seconds: Annotated[int, Field(ge=1, le=86_400)] = (
        DEFAULT_ACTIVATION_DEADLINE_S
    )
    """How long live enforcers have to activate a revision before the wave is rolled back."""
    stale_after_seconds: Annotated[int, Field(ge=1, le=3_600)] = DEFAULT_STALE_AFTER_S
    """An enforcer not seen for this long is down: it blocks promotion but is no failure."""
    second_approver: Literal["widening", "always"] = "widening"
    """Which publications need an approver other than the author."""
    second_approver_exempt_packages: list[Annotated[str, Field(pattern=_PACKAGE)]] = Field(
        default_factory=list
    )
    """Rego packages whose code changes need no second approver (widening data still does;
    ``system.*`` can never be exempted)."""
    replay_gates: ReplayGates | None = None
    """Limits on what a candidate does to recorded decisions (``nexus-policy replay``)."""
    shadow_gates: ShadowGates | None = None
    """The same limits on the next wave's shadow outcomes, judged before promotion into it."""


@dataclass(frozen=True)
class Fleet:
    regions: tuple[RegionConfig, ...]
    soak_s: int
    activation_deadline_s: int
    stale_after_s: int
    second_approver: str
    exempt_packages: frozenset[str] = frozenset()
    replay_gates: ReplayGates | None = None
    shadow_gates: ShadowGates | None = None

    @property
    def waves(self) -> list[int]:
        return sorted({r.wave for r in self.regions})

    def wave(self, number: int) -> list[RegionConfig]:
        return [r for r in self.regions if r.wave == number]

    @property
    def declared(self) -> dict[str, str]:
        """The fleet file's enforcer ids, each with its region."""
        return {e: r.id for r in self.regions for e in r.enforcers}

    def region(self, region_id: str) -> RegionConfig | None:
        return next((r for r in self.regions if r.id == region_id), None)

    @classmethod
    def single(cls, region_ids: list[str], *, soak_s: int = 0) -> Fleet:
        """A fleet of one wave holding ``region_ids`` (the embedded default)."""
        return cls(
            tuple(RegionConfig(id=r, jurisdiction="any", wave=0) for r in region_ids),
            soak_s,
            DEFAULT_ACTIVATION_DEADLINE_S,
            DEFAULT_STALE_AFTER_S,
            "widening",
        )


def fleet_yaml(
    regions: list[tuple[str, str, int, list[str]]],
    *,
    soak_s: int,
    activation_deadline_s: int = DEFAULT_ACTIVATION_DEADLINE_S,
    stale_after_s: int = DEFAULT_STALE_AFTER_S,
) -> str:
    """A fleet file's text for (region, jurisdiction, wave, enforcer ids) rows."""
    lines = [
        "apiVersion: policy.nexus.ai/v1",
        "kind: Fleet",
        f"soakSeconds: {soak_s}",
        f"activationDeadlineSeconds: {activation_deadline_s}",
        f"staleAfterSeconds: {stale_after_s}",
        "regions:",
    ]
    for region, jurisdiction, wave, enforcers in regions:
        lines += [
            f"  - id: {region}",
            f"    jurisdiction: {jurisdiction}",
            f"    wave: {wave}",
            f"    enforcers: [{', '.join(enforcers)}]",
        ]
    return "\n".join(lines) + "\n"


def load_fleet(path: Path) -> Fleet:
    """Load and check a fleet file; raise SpecError listing every problem."""
    doc = load_document(path, {"Fleet": FleetSpec})
    spec = doc.spec
    assert isinstance(spec, FleetSpec)
    problems: list[Problem] = []
    seen_regions: dict[str, int] = {}
    seen_enforcers: dict[str, str] = {}
    for i, region in enumerate(spec.regions):
        if region.id in seen_regions:
            problems.append(doc.problem(f"region {region.id!r} listed twice", "regions", i, "id"))
        seen_regions[region.id] = i
        for j, enforcer in enumerate(region.enforcers):
            if enforcer in seen_enforcers:
                problems.append(
                    doc.problem(
                        f"enforcer {enforcer!r} is already in region {seen_enforcers[enforcer]!r}",
                        "regions",
                        i,
                        "enforcers",
                        j,
                    )
                )
            seen_enforcers[enforcer] = region.id
    if 0 not in {r.wave for r in spec.regions}:
        problems.append(doc.problem("no region is in wave 0 (the canary)", "regions"))
    if problems:
        raise SpecError(problems)
    return Fleet(
        tuple(spec.regions),
        spec.soak_seconds,
        spec.activation_deadline_seconds,
        spec.stale_after_seconds,
        spec.second_approver,
        frozenset(spec.second_approver_exempt_packages),
        spec.replay_gates,
        spec.shadow_gates,
    )

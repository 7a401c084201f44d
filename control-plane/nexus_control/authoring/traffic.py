"""What a bundle routes traffic to, where each route is written, and its quality demands.

A route receives traffic exactly as ``rego/nexus/rollout.rego`` resolves a
request (the Prompts and Rollouts specs compile into what it reads):

- a flag with its kill switch on serves its baseline to everyone, and nothing else;
- otherwise a variant of weight > 0 is served inside a canary of more than 0 %, an
  override's variant to its tenant, and the baseline to everyone outside the canary
  (so not at 100 %);
- a prompt no flag routes serves its ``defaultVersion``.

A version the caller pins (``x-nexus-prompt: id@version``) is the caller's
choice, not the rollout's, and a model asked for by its own id bypasses every
flag: neither is a route here. Every prompt with a ``quality`` block, and every
model flag with one, demands a passing evaluation of each subject it routes
to (`QualityDemand`); `judge` turns the unmet ones into problems placed at the
route in the YAML.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from nexus_control.authoring.config import CompiledConfig, QualityGateConfig
from nexus_control.authoring.loader import BundleSources, Problem, SpecDocument
from nexus_control.authoring.quality import Measured, Quality, Subject, shortfalls
from nexus_control.authoring.spec import Flag, PromptsSpec, RolloutsSpec

__all__ = [
    "QualityDemand",
    "check_quality",
    "compile_quality",
    "demands_in",
    "judge",
    "quality_demands",
]


@dataclass(frozen=True)
class QualityDemand:
    """``subject`` receives traffic through ``route`` (written at file:line:column), and its
    latest evaluation must meet ``quality``."""

    subject: Subject
    quality: Quality
    route: str
    file: str
    line: int
    column: int
    block: str = ""
    """The ``quality`` block's key in the compiled config: ``prompt:<id>`` or ``flag:<id>``."""

    def problem(self, message: str) -> Problem:
        return Problem(self.file, self.line, self.column, f"{self.route}: {message}")


def check_quality(sources: BundleSources, problems: list[Problem]) -> None:
    """A prompt flag's versions are gated by its prompt's ``quality``, never by the flag's."""
    for doc, spec in sources.of_kind(RolloutsSpec):
        for i, flag in enumerate(spec.flags):
            if flag.quality is not None and flag.target == "prompt":
                problems.append(
                    doc.problem(
                        f"flag {flag.id!r}: a prompt's quality thresholds are declared on the "
                        f"prompt in its Prompts spec (prompt {flag.key!r}), not on its flag",
                        "flags",
                        i,
                        "quality",
                    )
                )


def quality_demands(sources: BundleSources) -> tuple[QualityDemand, ...]:
    """Every subject each ``quality`` block gates, once per block, at its first route.

    A model two flags route to is demanded by each, with each flag's thresholds.

    ``sources`` are resolved (`nexus_control.authoring.policyset.resolve`): each
    prompt has at most one flag, and every name a flag routes to exists.
    """
    flags: dict[str, tuple[SpecDocument, int, Flag]] = {}
    for doc, spec in sources.of_kind(RolloutsSpec):
        for i, flag in enumerate(spec.flags):
            if flag.target == "prompt":
                flags.setdefault(flag.key, (doc, i, flag))
    demands: dict[tuple[str, Subject], QualityDemand] = {}

    def add(
        block: str, subject: Subject, quality: Quality, route: str, at: tuple[str, int, int]
    ) -> None:
        if (block, subject) not in demands:
            demands[block, subject] = QualityDemand(subject, quality, route, *at, block=block)

    for doc, prompts in sources.of_kind(PromptsSpec):
        for i, prompt in enumerate(prompts.prompts):
            if prompt.quality is None:
                continue
            routed = flags.get(prompt.id)
            if routed is None:
                subject = Subject("prompt", prompt.id, prompt.default_version)
                route = f"prompt {prompt.id!r} defaultVersion"
                add(
                    f"prompt:{prompt.id}",
                    subject,
                    prompt.quality,
                    route,
                    doc.at("prompts", i, "defaultVersion"),
                )
                continue
            flag_doc, j, flag = routed
            for name, key, route in _routes(flag):
                subject = Subject("prompt", prompt.id, name)
                at = flag_doc.at("flags", j, *key)
                add(f"prompt:{prompt.id}", subject, prompt.quality, route, at)
    for doc, rollouts in sources.of_kind(RolloutsSpec):
        for j, flag in enumerate(rollouts.flags):
            if flag.target != "model" or flag.quality is None:
                continue
            for name, key, route in _routes(flag):
                at = doc.at("flags", j, *key)
                add(f"flag:{flag.id}", Subject("model", name), flag.quality, route, at)
    return tuple(demands.values())


def compile_quality(demands: tuple[QualityDemand, ...]) -> dict[str, QualityGateConfig]:
    """The compiled ``quality`` section: each block's thresholds and the routes it gates.

    Positions are left out (a comment moved in a YAML file must not change the revision).
    """
    gates: dict[str, QualityGateConfig] = {}
    for demand in demands:
        gate = gates.get(demand.block)
        if gate is None:
            thresholds = demand.quality.model_dump(by_alias=True, exclude_none=True)
            block_id = demand.block.partition(":")[2]
            gate = QualityGateConfig(
                kind=demand.subject.kind, id=block_id, thresholds=thresholds, routes={}
            )
            gates[demand.block] = gate
        routed = demand.subject.version if demand.subject.kind == "prompt" else demand.subject.id
        gate["routes"][routed or ""] = demand.route
    return dict(sorted(gates.items()))


def demands_in(config: CompiledConfig, where: str) -> tuple[QualityDemand, ...]:
    """The demands a compiled (signed) config carries, placed at ``where`` (no positions)."""
    demands: list[QualityDemand] = []
    for block, gate in sorted(config.get("quality", {}).items()):
        quality = Quality.model_validate(gate["thresholds"])
        for routed, route in sorted(gate["routes"].items()):
            if gate["kind"] == "prompt":
                subject = Subject("prompt", gate["id"], routed)
            else:
                subject = Subject("model", routed)
            demands.append(QualityDemand(subject, quality, route, where, 0, 0, block=block))
    return tuple(demands)


def _routes(flag: Flag) -> Iterator[tuple[str, tuple[str | int, ...], str]]:
    """(name served, key of where it is written, how) for each route of ``flag``."""
    named = f"flag {flag.id!r}"
    if flag.kill_switch:
        yield flag.baseline, ("baseline",), f"{named} baseline (kill switch on)"
        return
    if flag.canary_percent > 0:
        for j, variant in enumerate(flag.variants):
            if variant.weight > 0:
                how = f"{named} variant {variant.name!r} ({variant.weight} % of its canary)"
                yield variant.name, ("variants", j, "name"), how
    for j, override in enumerate(flag.overrides):
        how = f"{named} override for tenant {override.tenant!r}"
        yield override.variant, ("overrides", j, "variant"), how
    if flag.canary_percent < 100:
        yield flag.baseline, ("baseline",), f"{named} baseline"


def judge(
    demands: tuple[QualityDemand, ...], latest: Callable[[Subject], Measured | None]
) -> list[Problem]:
    """A problem for each demand whose subject's latest evaluation is missing or fails."""
    problems: list[Problem] = []
    for demand in demands:
        measured = latest(demand.subject)
        if measured is None:
            problems.append(
                demand.problem(
                    f"routes traffic to {demand.subject}, which has no evaluation; its quality "
                    "thresholds need a passing one (an evaluator posts it: POST /v1/evaluations)"
                )
            )
            continue
        failed = shortfalls(demand.quality, measured)
        if failed:
            when = measured.evaluated_at.isoformat()
            problems.append(
                demand.problem(
                    f"routes traffic to {demand.subject}, whose latest evaluation (dataset "
                    f"{measured.dataset_id!r}, {when}) fails " + "; ".join(failed)
                )
            )
    return problems

"""Semantic changes to fallbacks, providers' Envoy guards and region priorities.

Widening here means more places a request can end up, or weaker guards: a fallback
added (a degraded model's traffic may now reach another model), a region added to a
jurisdiction's priority list, outlier detection or circuit breakers loosened. Kept
apart from `nexus_control.authoring.diff` so that module stays one concern per differ.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from nexus_control.authoring.diff import Change, Effect

__all__ = ["failover_changes"]

_STRICTER_WHEN_LOWER = frozenset(
    {
        "consecutive_5xx",
        "interval_ms",
        "max_connections",
        "max_pending_requests",
        "max_requests",
        "max_retries",
    }
)
"""Guards that trip sooner, or let less through, when their number is lower."""


def failover_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[Change]:
    yield from _fallbacks(old, new)
    yield from _priorities(old, new)
    yield from _providers(old, new)


def _section(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    return value if isinstance(value, dict) else {}


def _fallbacks(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[Change]:
    before, after = _section(old, "models"), _section(new, "models")
    for mid in sorted(before.keys() & after.keys()):
        yield from _ordered(
            "fallback",
            mid,
            list(before[mid].get("fallbacks", [])),
            list(after[mid].get("fallbacks", [])),
            ("may fall back to", "no longer falls back to"),
        )


def _priorities(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[Change]:
    before, after = _section(old, "failover"), _section(new, "failover")
    for jurisdiction in sorted(before.keys() | after.keys()):
        yield from _ordered(
            "failover",
            jurisdiction,
            list(before.get(jurisdiction, [])),
            list(after.get(jurisdiction, [])),
            ("may fail over to", "no longer fails over to"),
        )


def _ordered(
    area: str, subject: str, a: list[Any], b: list[Any], words: tuple[str, str]
) -> Iterator[Change]:
    """An ordered list of places traffic may go: one added widens, one removed narrows, a
    new order alone is neutral."""
    if a == b:
        return
    added = [x for x in b if x not in a]
    removed = [x for x in a if x not in b]
    if added:
        yield Change(
            area=area,
            subject=subject,
            detail=f"{words[0]} {', '.join(added)}",
            effect=Effect.WIDENS,
        )
    if removed:
        yield Change(
            area=area,
            subject=subject,
            detail=f"{words[1]} {', '.join(removed)}",
            effect=Effect.NARROWS,
        )
    if not added and not removed:
        yield Change(area=area, subject=subject, detail=f"order {a} → {b}", effect=Effect.NEUTRAL)


def _providers(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[Change]:
    before, after = _section(old, "providers"), _section(new, "providers")
    for pid in sorted(after.keys() - before.keys()):
        yield Change(area="provider", subject=pid, detail="added", effect=Effect.WIDENS)
    for pid in sorted(before.keys() - after.keys()):
        # Its endpoints and guards leave the rendered Envoy config with it.
        yield Change(area="provider", subject=pid, detail="removed", effect=Effect.WIDENS)
    for pid in sorted(before.keys() & after.keys()):
        ra = {(e["region"], e["host"], e["port"]) for e in before[pid].get("endpoints", [])}
        rb = {(e["region"], e["host"], e["port"]) for e in after[pid].get("endpoints", [])}
        for region, host, port in sorted(rb - ra):
            yield Change(
                area="provider",
                subject=pid,
                detail=f"endpoint {host}:{port} in {region} added",
                effect=Effect.WIDENS,
            )
        for region, host, port in sorted(ra - rb):
            yield Change(
                area="provider",
                subject=pid,
                detail=f"endpoint {host}:{port} in {region} removed",
                effect=Effect.NARROWS,
            )
        yield from _transport(pid, before[pid], after[pid])
        for guard in ("outlier_detection", "circuit_breakers"):
            ga, gb = before[pid].get(guard, {}), after[pid].get(guard, {})
            for field in sorted(ga.keys() | gb.keys()):
                va, vb = ga.get(field), gb.get(field)
                if va == vb:
                    continue
                if va is None or vb is None:
                    loosens = vb is None
                else:
                    lower = vb < va
                    loosens = lower != (field in _STRICTER_WHEN_LOWER)
                yield Change(
                    area="provider",
                    subject=pid,
                    detail=f"{guard}.{field} {va} → {vb}",
                    effect=Effect.WIDENS if loosens else Effect.NARROWS,
                )


def _transport(pid: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> Iterator[Change]:
    """An endpoint kept at the same place whose TLS is turned off sends prompts in the clear:
    that widens; turned on, it narrows."""
    tls_a = {
        (e["region"], e["host"], e["port"]): e.get("tls", True) for e in before.get("endpoints", [])
    }
    tls_b = {
        (e["region"], e["host"], e["port"]): e.get("tls", True) for e in after.get("endpoints", [])
    }
    for (region, host, port), was in sorted(tls_a.items()):
        now = tls_b.get((region, host, port), was)
        if now != was:
            yield Change(
                area="provider",
                subject=pid,
                detail=f"endpoint {host}:{port} in {region}: TLS turned {'on' if now else 'off'}",
                effect=Effect.NARROWS if now else Effect.WIDENS,
            )

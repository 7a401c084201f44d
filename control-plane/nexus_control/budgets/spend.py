"""Spend counters per tenant and month: Redis in production, in-process for the demo.

Recording is atomic and idempotent on the gateway's request id: a usage
report delivered twice counts once. Counters are keyed by tenant and period
(``YYYY-MM``, UTC), so a new month starts from zero with nothing to reset.
Each report also adds to its day's counters (``YYYY-MM-DD``), per tenant and
for all tenants, by model, feature and endpoint: the console's spend charts.
"""

from __future__ import annotations

import calendar
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import redis

__all__ = [
    "ALL_TENANTS",
    "REQUEST_ID_TTL_S",
    "InProcessSpendStore",
    "RedisSpendStore",
    "SpendStore",
    "SpendTotals",
    "Usage",
    "day_of",
    "make_spend_store",
    "period_of",
]

REQUEST_ID_TTL_S = 62 * 24 * 3600
"""How long a request id is remembered: longer than any budget period."""


def period_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m")


def day_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Usage:
    request_id: str
    tenant: str
    model: str
    feature: str | None
    tokens: int
    cost_usd: float
    period: str
    day: str = ""
    """``YYYY-MM-DD`` (UTC) of the request; empty: the period's first day."""
    endpoint: str | None = None

    @property
    def day_or_first(self) -> str:
        return self.day or f"{self.period}-01"


@dataclass
class SpendTotals:
    """Spend in one period or day, overall and by model, feature and endpoint (USD)."""

    total: float = 0.0
    models: dict[str, float] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)
    endpoints: dict[str, float] = field(default_factory=dict)

    def add(self, usage: Usage) -> None:
        self.total += usage.cost_usd
        self.models[usage.model] = self.models.get(usage.model, 0.0) + usage.cost_usd
        if usage.feature:
            self.features[usage.feature] = self.features.get(usage.feature, 0.0) + usage.cost_usd
        if usage.endpoint:
            self.endpoints[usage.endpoint] = (
                self.endpoints.get(usage.endpoint, 0.0) + usage.cost_usd
            )

    def copy(self) -> SpendTotals:
        return SpendTotals(self.total, dict(self.models), dict(self.features), dict(self.endpoints))


ALL_TENANTS = "*"
"""The ``tenant`` of `SpendStore.daily` that sums every tenant."""


class SpendStore(Protocol):
    def record(self, usage: Usage) -> SpendTotals | None:
        """Add ``usage``; return the tenant's new totals, or None if already counted."""
        ...

    def totals(self, period: str) -> dict[str, SpendTotals]:
        """Every tenant's totals for ``period``."""
        ...

    def spent(self, period: str) -> dict[str, float]:
        """Every tenant's total spend in ``period``: what ranking tenants needs, nothing more."""
        ...

    def totals_of(self, period: str, tenants: list[str]) -> dict[str, SpendTotals]:
        """The totals of ``tenants`` in ``period`` (those that spent nothing are absent)."""
        ...

    def daily(self, period: str, tenant: str = ALL_TENANTS) -> dict[str, SpendTotals]:
        """Totals per day of ``period`` (``YYYY-MM-DD`` → totals) of one tenant, or of all."""
        ...

    def ping(self) -> bool: ...


class InProcessSpendStore:
    """Counters in this process's memory: the embedded default, lost on restart."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._totals: dict[tuple[str, str], SpendTotals] = {}
        self._days: dict[str, dict[str, SpendTotals]] = {}
        """Scope (a tenant, or ALL_TENANTS) → day → totals: one scope's days without a scan."""

    def record(self, usage: Usage) -> SpendTotals | None:
        with self._lock:
            if usage.request_id in self._seen:
                return None
            self._seen.add(usage.request_id)
            totals = self._totals.setdefault((usage.period, usage.tenant), SpendTotals())
            totals.add(usage)
            for scope in (usage.tenant, ALL_TENANTS):
                days = self._days.setdefault(scope, {})
                days.setdefault(usage.day_or_first, SpendTotals()).add(usage)
            return totals.copy()

    def totals(self, period: str) -> dict[str, SpendTotals]:
        with self._lock:
            return {tenant: t.copy() for (p, tenant), t in self._totals.items() if p == period}

    def spent(self, period: str) -> dict[str, float]:
        with self._lock:
            return {tenant: t.total for (p, tenant), t in self._totals.items() if p == period}

    def totals_of(self, period: str, tenants: list[str]) -> dict[str, SpendTotals]:
        with self._lock:
            found = ((tenant, self._totals.get((period, tenant))) for tenant in tenants)
            return {tenant: t.copy() for tenant, t in found if t is not None}

    def daily(self, period: str, tenant: str = ALL_TENANTS) -> dict[str, SpendTotals]:
        with self._lock:
            return {
                day: t.copy()
                for day, t in sorted(self._days.get(tenant, {}).items())
                if day.startswith(f"{period}-")
            }

    def ping(self) -> bool:
        return True


# KEYS[1] request-id marker, KEYS[2] the tenant's hash for the period, KEYS[3] the
# period's tenant set, KEYS[4] the tenant's hash for the day, KEYS[5] all tenants' hash
# for the day. ARGV: ttl, cost, model field, feature field ("" for none), tenant,
# endpoint field ("" for none).
_RECORD = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) == false then
  return nil
end
for i = 2, 5 do
  if i ~= 3 then
    redis.call('HINCRBYFLOAT', KEYS[i], 'total', ARGV[2])
    redis.call('HINCRBYFLOAT', KEYS[i], ARGV[3], ARGV[2])
    if ARGV[4] ~= '' then
      redis.call('HINCRBYFLOAT', KEYS[i], ARGV[4], ARGV[2])
    end
    if ARGV[6] ~= '' then
      redis.call('HINCRBYFLOAT', KEYS[i], ARGV[6], ARGV[2])
    end
  end
end
redis.call('SADD', KEYS[3], ARGV[5])
return redis.call('HGETALL', KEYS[2])
"""


class RedisSpendStore:
    """Counters in Redis: one hash per tenant and period, updated by one Lua script."""

    def __init__(self, url: str, *, prefix: str = "nexus:spend") -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._prefix = prefix
        self._record = self._redis.register_script(_RECORD)

    def record(self, usage: Usage) -> SpendTotals | None:
        keys = [
            f"{self._prefix}:req:{usage.request_id}",
            f"{self._prefix}:{usage.period}:tenant:{usage.tenant}",
            f"{self._prefix}:{usage.period}:tenants",
            self._day_key(usage.day_or_first, usage.tenant),
            self._day_key(usage.day_or_first, ALL_TENANTS),
        ]
        args: list[str | int] = [
            REQUEST_ID_TTL_S,
            repr(float(usage.cost_usd)),
            f"model:{usage.model}",
            f"feature:{usage.feature}" if usage.feature else "",
            usage.tenant,
            f"endpoint:{usage.endpoint}" if usage.endpoint else "",
        ]
        raw = self._record(keys=keys, args=args)
        if raw is None:
            return None
        return _totals_from_hash(dict(zip(raw[::2], raw[1::2], strict=True)))

    def totals(self, period: str) -> dict[str, SpendTotals]:
        tenants = self._tenants(period)
        raws = self._hashes(period, tenants)
        return {tenant: _totals_from_hash(raw) for tenant, raw in zip(tenants, raws, strict=True)}

    def _tenants(self, period: str) -> list[str]:
        return sorted(
            t.decode()
            for t in self._redis.smembers(f"{self._prefix}:{period}:tenants")  # type: ignore[union-attr]
        )

    def spent(self, period: str) -> dict[str, float]:
        tenants = self._tenants(period)
        pipe = self._redis.pipeline(transaction=False)
        for tenant in tenants:
            pipe.hget(f"{self._prefix}:{period}:tenant:{tenant}", "total")
        return {
            tenant: float(raw)
            for tenant, raw in zip(tenants, pipe.execute(), strict=True)
            if raw is not None
        }

    def totals_of(self, period: str, tenants: list[str]) -> dict[str, SpendTotals]:
        raws = self._hashes(period, tenants)
        return {
            tenant: _totals_from_hash(raw) for tenant, raw in zip(tenants, raws, strict=True) if raw
        }

    def _hashes(self, period: str, tenants: list[str]) -> list[dict[bytes, bytes]]:
        pipe = self._redis.pipeline(transaction=False)
        for tenant in tenants:
            pipe.hgetall(f"{self._prefix}:{period}:tenant:{tenant}")
        raws: list[dict[bytes, bytes]] = pipe.execute()
        return raws

    def _day_key(self, day: str, tenant: str) -> str:
        return f"{self._prefix}:day:{day}:tenant:{tenant}"

    def daily(self, period: str, tenant: str = ALL_TENANTS) -> dict[str, SpendTotals]:
        year, month = (int(part) for part in period.split("-"))
        days = [f"{period}-{day:02d}" for day in range(1, calendar.monthrange(year, month)[1] + 1)]
        pipe = self._redis.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(self._day_key(day, tenant))
        return {
            day: _totals_from_hash(raw)
            for day, raw in zip(days, pipe.execute(), strict=True)
            if raw
        }

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False


def _totals_from_hash(raw: dict[bytes, bytes]) -> SpendTotals:
    totals = SpendTotals()
    for key, value in raw.items():
        name, amount = key.decode(), float(value)
        if name == "total":
            totals.total = amount
        elif name.startswith("model:"):
            totals.models[name.removeprefix("model:")] = amount
        elif name.startswith("feature:"):
            totals.features[name.removeprefix("feature:")] = amount
        elif name.startswith("endpoint:"):
            totals.endpoints[name.removeprefix("endpoint:")] = amount
    return totals


def make_spend_store(redis_url: str | None) -> SpendStore:
    return RedisSpendStore(redis_url) if redis_url else InProcessSpendStore()

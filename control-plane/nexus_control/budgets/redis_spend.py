"""Spend counters in Redis: one Lua script adds a report to every counter it belongs to.

Counters are integers (HINCRBY, micro-dollars) under ``<prefix>:micro:…``. The
float counters of earlier versions (HINCRBYFLOAT under ``<prefix>:<period>:…``
and ``<prefix>:day:…``) are read beside them and added, rounded to the
micro-dollar, during the transition: a control plane of the earlier version
still writing them during a rolling upgrade loses nothing, and once the months
they hold no longer matter they can be deleted (README, "Cost API"). Request ids
are shared by both, so a report is never counted by both.

Every key but a month's tenant set expires at its bucket's end plus its
retention (`nexus_control.budgets.cells`), so memory is bounded.

A tenant's budget window has a hash of its own (``<prefix>:micro:window:<key>:…``), which
is what the caps read. The version before windows had none: a window keyed like the UTC
month it falls in is seeded from that month's hash when its first report arrives, and read
from it until then, so an upgrade mid-month keeps what each tenant spent so far.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime

import redis

from nexus_control.budgets.cells import (
    DAYS_KEPT,
    Cell,
    Granularity,
    combo_field,
    expires_at,
    parse_combo_field,
)
from nexus_control.budgets.money import to_micros
from nexus_control.budgets.spend import (
    ALL_TENANTS,
    REQUEST_ID_TTL_S,
    SpendTotals,
    Usage,
    month_end,
)

__all__ = ["RedisSpendStore"]

# KEYS: 1 request-id marker, 2 the tenant's month hash, 3 the month's tenant set, 4 the
# tenant's day hash, 5 all tenants' day hash, 6 the tenant's day cells, 7 its hour cells,
# 8 the day's tenant set, 9 the tenant's legacy (float) month hash, 10 its window hash, 11
# the window's tenant set.
# ARGV: 1 request-id ttl, 2 micro-dollars, 3 model field, 4 feature field ("" for none),
# 5 tenant, 6 endpoint field ("" for none), 7 cell field, 8 day-cell expiry, 9 hour-cell
# expiry, 10 month and day hashes' expiry, 11 window hash's expiry (Unix seconds), 12 "1"
# when a new window hash starts from the month hash (the window is keyed like the month).
_RECORD = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) == false then
  return nil
end
if ARGV[12] == '1' and redis.call('EXISTS', KEYS[10]) == 0 then
  local month = redis.call('HGETALL', KEYS[2])
  if #month > 0 then
    redis.call('HSET', KEYS[10], unpack(month))
  end
end
for _, i in ipairs({2, 4, 5, 10}) do
  redis.call('HINCRBY', KEYS[i], 'total', ARGV[2])
  redis.call('HINCRBY', KEYS[i], ARGV[3], ARGV[2])
  if ARGV[4] ~= '' then
    redis.call('HINCRBY', KEYS[i], ARGV[4], ARGV[2])
  end
  if ARGV[6] ~= '' then
    redis.call('HINCRBY', KEYS[i], ARGV[6], ARGV[2])
  end
  redis.call('EXPIREAT', KEYS[i], i == 10 and ARGV[11] or ARGV[10])
end
redis.call('SADD', KEYS[3], ARGV[5])
redis.call('HINCRBY', KEYS[6], ARGV[7], ARGV[2])
redis.call('EXPIREAT', KEYS[6], ARGV[8])
redis.call('HINCRBY', KEYS[7], ARGV[7], ARGV[2])
redis.call('EXPIREAT', KEYS[7], ARGV[9])
redis.call('SADD', KEYS[8], ARGV[5])
redis.call('EXPIREAT', KEYS[8], ARGV[8])
redis.call('SADD', KEYS[11], ARGV[5])
redis.call('EXPIREAT', KEYS[11], ARGV[11])
if ARGV[12] == '1' then
  return {redis.call('HGETALL', KEYS[10]), redis.call('HGETALL', KEYS[9])}
end
return {redis.call('HGETALL', KEYS[10]), {}}
"""

_Hash = dict[bytes, bytes]
_MONTH_KEY = re.compile(r"\d{4}-\d{2}")


class RedisSpendStore:
    """Counters in Redis: hashes per tenant and period, day and cell bucket."""

    def __init__(self, url: str, *, prefix: str = "nexus:spend") -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._prefix = prefix
        self._micro = f"{prefix}:micro"
        self._record = self._redis.register_script(_RECORD)

    def record(self, usage: Usage) -> SpendTotals | None:
        day = usage.day_or_first
        keys = [
            f"{self._prefix}:req:{usage.request_id}",
            self._month_key(usage.period, usage.tenant),
            self._tenants_key(usage.period),
            self._day_key(day, usage.tenant),
            self._day_key(day, ALL_TENANTS),
            self._cell_key(Granularity.DAY, day, usage.tenant),
            self._cell_key(Granularity.HOUR, usage.hour_bucket, usage.tenant),
            self._cell_tenants_key(day),
            self._legacy_month_key(usage.period, usage.tenant),
            self._window_key(usage.window_key, usage.tenant),
            self._window_tenants_key(usage.window_key),
        ]
        args: list[str | int] = [
            REQUEST_ID_TTL_S,
            usage.cost_micros,
            f"model:{usage.model}",
            f"feature:{usage.feature}" if usage.feature else "",
            usage.tenant,
            f"endpoint:{usage.endpoint}" if usage.endpoint else "",
            combo_field(usage.combo),
            _unix(expires_at(Granularity.DAY, day)),
            _unix(expires_at(Granularity.HOUR, usage.hour_bucket)),
            _unix(month_end(usage.period) + DAYS_KEPT),
            _unix(usage.window_expiry),
            "1" if usage.window_key == usage.period else "0",
        ]
        raw = self._record(keys=keys, args=args)
        if raw is None:
            return None
        window, legacy = (_pairs(part) for part in raw)
        return _micro_totals(window).merge(_legacy_totals(legacy))

    def window_totals(self, windows: Mapping[str, str]) -> dict[str, SpendTotals]:
        tenants = self._with_spend(windows)
        pipe = self._redis.pipeline(transaction=False)
        for tenant in tenants:
            key = windows[tenant]
            pipe.hgetall(self._window_key(key, tenant))
            if _MONTH_KEY.fullmatch(key):
                # Until its first report, a window keyed like a month reads that month's
                # hash; an earlier version's float counters of that month count in it too.
                pipe.hgetall(self._month_key(key, tenant))
                pipe.hgetall(self._legacy_month_key(key, tenant))
        raws: Iterator[_Hash] = iter(pipe.execute())
        out: dict[str, SpendTotals] = {}
        for tenant in tenants:
            window = next(raws)
            month, legacy = (
                (next(raws), next(raws)) if _MONTH_KEY.fullmatch(windows[tenant]) else ({}, {})
            )
            totals = _micro_totals(window or month).merge(_legacy_totals(legacy))
            if _any_spend(totals):
                out[tenant] = totals
        return out

    def _month_key(self, period: str, tenant: str) -> str:
        return f"{self._micro}:{period}:tenant:{tenant}"

    def _window_key(self, window: str, tenant: str) -> str:
        return f"{self._micro}:window:{window}:tenant:{tenant}"

    def _window_tenants_key(self, window: str) -> str:
        return f"{self._micro}:window:{window}:tenants"

    def _with_spend(self, windows: Mapping[str, str]) -> list[str]:
        """The tenants of ``windows`` that may have spent in theirs: members of the window's
        tenant set (or, for a window keyed like a month, of that month's), so a rebuild reads
        no hash of a tenant that has not spent."""
        keys = sorted(set(windows.values()))
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.smembers(self._window_tenants_key(key))
            if _MONTH_KEY.fullmatch(key):
                pipe.smembers(self._tenants_key(key))
        raws: Iterator[set[bytes]] = iter(pipe.execute())
        spent: dict[str, set[str]] = {}
        for key in keys:
            members = set(next(raws))
            if _MONTH_KEY.fullmatch(key):
                members |= next(raws)
            spent[key] = {t.decode() for t in members}
        return [tenant for tenant, key in windows.items() if tenant in spent[key]]

    def _legacy_month_key(self, period: str, tenant: str) -> str:
        return f"{self._prefix}:{period}:tenant:{tenant}"

    def _tenants_key(self, period: str) -> str:
        return f"{self._prefix}:{period}:tenants"

    def _day_key(self, day: str, tenant: str) -> str:
        return f"{self._micro}:day:{day}:tenant:{tenant}"

    def _legacy_day_key(self, day: str, tenant: str) -> str:
        return f"{self._prefix}:day:{day}:tenant:{tenant}"

    def _cell_key(self, granularity: Granularity, bucket: str, tenant: str) -> str:
        return f"{self._micro}:cell:{granularity.value}:{bucket}:tenant:{tenant}"

    def _cell_tenants_key(self, day: str) -> str:
        return f"{self._micro}:cell:day:{day}:tenants"

    def _tenants(self, period: str) -> list[str]:
        members: set[bytes] = self._redis.smembers(self._tenants_key(period))  # type: ignore[assignment]
        return sorted(t.decode() for t in members)

    def _both(self, keys: Sequence[tuple[str, str]]) -> list[SpendTotals]:
        """For each (micro key, legacy key): the two hashes' totals, added."""
        pipe = self._redis.pipeline(transaction=False)
        for micro, legacy in keys:
            pipe.hgetall(micro)
            pipe.hgetall(legacy)
        raws: list[_Hash] = pipe.execute()
        return [
            _micro_totals(micro).merge(_legacy_totals(legacy))
            for micro, legacy in zip(raws[::2], raws[1::2], strict=True)
        ]

    def _month_pairs(self, period: str, tenants: Sequence[str]) -> list[tuple[str, str]]:
        return [(self._month_key(period, t), self._legacy_month_key(period, t)) for t in tenants]

    def totals(self, period: str) -> dict[str, SpendTotals]:
        tenants = self._tenants(period)
        found = self._both(self._month_pairs(period, tenants))
        return dict(zip(tenants, found, strict=True))

    def spent(self, period: str) -> dict[str, float]:
        tenants = self._tenants(period)
        pipe = self._redis.pipeline(transaction=False)
        for micro_key, legacy_key in self._month_pairs(period, tenants):
            pipe.hget(micro_key, "total")
            pipe.hget(legacy_key, "total")
        raws: list[bytes | None] = pipe.execute()
        out: dict[str, float] = {}
        for tenant, micro, legacy in zip(tenants, raws[::2], raws[1::2], strict=True):
            if micro is None and legacy is None:
                continue
            micros = int(micro or 0) + (to_micros(float(legacy)) if legacy is not None else 0)
            out[tenant] = SpendTotals(micros).total
        return out

    def totals_of(self, period: str, tenants: list[str]) -> dict[str, SpendTotals]:
        found = self._both(self._month_pairs(period, tenants))
        return {tenant: t for tenant, t in zip(tenants, found, strict=True) if _any_spend(t)}

    def daily(self, period: str, tenant: str = ALL_TENANTS) -> dict[str, SpendTotals]:
        year, month = (int(part) for part in period.split("-"))
        days = [f"{period}-{day:02d}" for day in range(1, calendar.monthrange(year, month)[1] + 1)]
        pairs = [(self._day_key(d, tenant), self._legacy_day_key(d, tenant)) for d in days]
        found = self._both(pairs)
        return {day: t for day, t in zip(days, found, strict=True) if _any_spend(t)}

    def cells(
        self, granularity: Granularity, buckets: Sequence[str], tenants: Sequence[str]
    ) -> list[Cell]:
        pairs = [(bucket, tenant) for bucket in buckets for tenant in tenants]
        pipe = self._redis.pipeline(transaction=False)
        for bucket, tenant in pairs:
            pipe.hgetall(self._cell_key(granularity, bucket, tenant))
        raws: list[_Hash] = pipe.execute()
        return [
            Cell(tenant, bucket, parse_combo_field(name.decode()), int(micros))
            for (bucket, tenant), raw in zip(pairs, raws, strict=True)
            for name, micros in sorted(raw.items())
        ]

    def tenants_on(self, days: Sequence[str]) -> set[str]:
        if not days:
            return set()
        members: set[bytes] = self._redis.sunion([self._cell_tenants_key(d) for d in days])  # type: ignore[assignment]
        return {t.decode() for t in members}

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def _pairs(flat: list[bytes]) -> _Hash:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _any_spend(totals: SpendTotals) -> bool:
    return bool(totals.total_micros or totals.model_micros)


def _fill(totals: SpendTotals, raw: _Hash, *, legacy: bool) -> SpendTotals:
    for key, value in raw.items():
        name = key.decode()
        amount = to_micros(float(value)) if legacy else int(value)
        if name == "total":
            totals.total_micros = amount
        elif name.startswith("model:"):
            totals.model_micros[name.removeprefix("model:")] = amount
        elif name.startswith("feature:"):
            totals.feature_micros[name.removeprefix("feature:")] = amount
        elif name.startswith("endpoint:"):
            totals.endpoint_micros[name.removeprefix("endpoint:")] = amount
    return totals


def _micro_totals(raw: _Hash) -> SpendTotals:
    return _fill(SpendTotals(), raw, legacy=False)


def _legacy_totals(raw: _Hash) -> SpendTotals:
    """An earlier version's float hash, each amount rounded to the micro-dollar."""
    return _fill(SpendTotals(), raw, legacy=True)

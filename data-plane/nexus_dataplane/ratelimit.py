"""Rate limits at the enforcer: Envoy's two rate limit filters, and the real ratelimit service.

The policy names, for every allowed request, the bucket each applicable limit
counts it against (ext_authz dynamic metadata ``ratelimit``: {limit id:
bucket}); nothing a client sends chooses a bucket. From the compiled limits
(``data.nexus.config.rate_limits``) this module renders:

- for ``scope: region`` limits, Envoy's local rate limit filter: one token
  bucket per (limit, bucket) in each Envoy (``burst`` tokens, ``rate`` added
  each ``unit``);
- for ``scope: shared`` limits, the descriptors Envoy's global rate limit
  filter sends to envoyproxy/ratelimit (Redis-backed, one
  counter per (limit, bucket) for every enforcer that shares the Redis), and
  that service's config (a fixed window of ``rate`` per ``unit``);
- for ``counts: tokens`` limits, a check-only descriptor on the request (over
  the limit already: refused) and, once the response is done, the tokens the
  gateway reports in ``x-nexus-usage-tokens`` added to the same counter.

A refusal is Envoy's local reply: 429, ``retry-after`` and ``x-ratelimit-*``
headers, a JSON body naming the rule and its control IDs, and one access log
line (``ratelimit-refusals.jsonl``) carrying the decision id, which joins the
refusal to the decision OPA logged for the same request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from nexus_contract.wire import (
    DECISION_ID_METADATA_KEY,
    EXT_AUTHZ_METADATA_NAMESPACE,
    RATELIMIT_DOMAIN,
    RATELIMIT_METADATA_KEY,
    USAGE_TOKENS_HEADER,
)
from nexus_dataplane.process import ManagedProcess, free_port, http_ok, wait_for_port

__all__ = [
    "RATELIMIT_CONTROLS",
    "RATELIMIT_RULE",
    "REFUSAL_LOG",
    "RateLimitBackend",
    "RateLimitConfigError",
    "RateLimitPlan",
    "RateLimitRule",
    "RateLimitService",
    "RedisProcess",
    "global_ratelimit_filter",
    "local_ratelimit_filter",
    "ratelimit_service_config",
    "read_refusals",
    "refusal_access_log",
    "refusal_reply_config",
    "shared_rate_limits",
]

UNIT_SECONDS: dict[str, int] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
RATELIMIT_TIMEOUT_S = 0.25
MAX_DYNAMIC_BUCKETS = 20_000
"""Local buckets per Envoy (LRU beyond): one per (limit, tenant or credential) seen."""
REFUSAL_LOG = "ratelimit-refusals.jsonl"
RATELIMIT_RULE = "nexus.ratelimit.exceeded"
RATELIMIT_CONTROLS = ("SOC2:A1.1", "SOC2:CC6.1", "ISO27001:A.8.6")
"""What a rate limit refusal evidences: capacity protection (A1.1, A.8.6) and access control."""
READY_TIMEOUT_S = 30.0

LOCAL_RATELIMIT_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
)
GLOBAL_RATELIMIT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
FILE_ACCESS_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
RATELIMIT_CLUSTER = "ratelimit"
_LIMIT_KEY = "limit"
_BUCKET_KEY = "bucket"
_ALWAYS = {"numerator": 100, "denominator": "HUNDRED"}


class RateLimitConfigError(ValueError):
    """A compiled ``rate_limits`` entry does not have the shape the compiler writes."""


@dataclass(frozen=True)
class RateLimitRule:
    """One compiled limit, as Envoy and the ratelimit service need it."""

    id: str
    scope: Literal["shared", "region"]
    counts: Literal["requests", "tokens"]
    unit: Literal["second", "minute", "hour", "day"]
    rate: int
    burst: int

    @property
    def unit_seconds(self) -> int:
        return UNIT_SECONDS[self.unit]


@dataclass(frozen=True)
class RateLimitPlan:
    """Every limit of a bundle, by id order."""

    rules: tuple[RateLimitRule, ...]

    @classmethod
    def from_config(cls, rate_limits: Mapping[str, Any]) -> RateLimitPlan:
        """From ``data.nexus.config.rate_limits`` of a built bundle."""
        rules = []
        for limit_id, entry in sorted(rate_limits.items()):
            try:
                rule = RateLimitRule(
                    id=str(limit_id),
                    scope=entry["scope"],
                    counts=entry["counts"],
                    unit=entry["unit"],
                    rate=int(entry["rate"]),
                    burst=int(entry["burst"]),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise RateLimitConfigError(f"rate_limits.{limit_id}: {exc}") from exc
            if rule.scope not in {"shared", "region"} or rule.unit not in UNIT_SECONDS:
                raise RateLimitConfigError(f"rate_limits.{limit_id}: unknown scope or unit")
            rules.append(rule)
        return cls(tuple(rules))

    @classmethod
    def from_compiled(cls, config: Mapping[str, Any]) -> RateLimitPlan:
        """From the policy bundle's ``nexus/config/data.json`` (no limits: an empty plan)."""
        return cls.from_config(config.get("rate_limits", {}))

    @property
    def shared(self) -> tuple[RateLimitRule, ...]:
        return tuple(r for r in self.rules if r.scope == "shared")

    @property
    def local(self) -> tuple[RateLimitRule, ...]:
        return tuple(r for r in self.rules if r.scope == "region")


def _actions(rule: RateLimitRule) -> list[dict[str, Any]]:
    """(limit: id), (bucket: the policy's bucket for it); no bucket, no descriptor."""
    return [
        {"generic_key": {"descriptor_key": _LIMIT_KEY, "descriptor_value": rule.id}},
        {
            "metadata": {
                "descriptor_key": _BUCKET_KEY,
                "metadata_key": {
                    "key": EXT_AUTHZ_METADATA_NAMESPACE,
                    "path": [{"key": RATELIMIT_METADATA_KEY}, {"key": rule.id}],
                },
                "source": "DYNAMIC",
                "skip_if_absent": True,
            }
        },
    ]


def shared_rate_limits(plan: RateLimitPlan) -> list[dict[str, Any]]:
    """The global filter's ``rate_limits``: what it asks the ratelimit service."""
    out: list[dict[str, Any]] = []
    for rule in plan.shared:
        if rule.counts == "requests":
            out.append({"actions": _actions(rule)})
            continue
        # Check only (hits 0) before the call; the used tokens once the response is done.
        out.append({"actions": _actions(rule), "hits_addend": {"number": 0}})
        out.append(
            {
                "actions": _actions(rule),
                "hits_addend": {"format": f"%RESP({USAGE_TOKENS_HEADER})%"},
                "apply_on_stream_done": True,
            }
        )
    return out


def local_ratelimit_filter(plan: RateLimitPlan) -> dict[str, Any]:
    """Envoy's local rate limit filter: a token bucket per (region limit, bucket)."""
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": LOCAL_RATELIMIT_TYPE,
            "stat_prefix": "nexus_local_ratelimit",
            "filter_enabled": {"runtime_key": "nexus_local_ratelimit", "default_value": _ALWAYS},
            "filter_enforced": {"runtime_key": "nexus_local_ratelimit", "default_value": _ALWAYS},
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
            "max_dynamic_descriptors": MAX_DYNAMIC_BUCKETS,
            "rate_limits": [{"actions": _actions(rule)} for rule in plan.local],
            "descriptors": [
                {
                    # A key without a value: one bucket per distinct value (per tenant, say).
                    "entries": [{"key": _LIMIT_KEY, "value": rule.id}, {"key": _BUCKET_KEY}],
                    "token_bucket": {
                        "max_tokens": rule.burst,
                        "tokens_per_fill": rule.rate,
                        "fill_interval": f"{rule.unit_seconds}s",
                    },
                }
                for rule in plan.local
            ],
        },
    }


def global_ratelimit_filter(plan: RateLimitPlan) -> dict[str, Any]:
    """Envoy's global rate limit filter, failing closed when the service cannot answer."""
    return {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": GLOBAL_RATELIMIT_TYPE,
            "domain": RATELIMIT_DOMAIN,
            "rate_limits": shared_rate_limits(plan),
            "failure_mode_deny": True,
            "status_on_error": {"code": 503},
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
            "rate_limit_service": {
                "transport_api_version": "V3",
                "grpc_service": {
                    "envoy_grpc": {"cluster_name": RATELIMIT_CLUSTER},
                    "timeout": f"{RATELIMIT_TIMEOUT_S}s",
                },
            },
        },
    }


_DECISION_ID = f"%DYNAMIC_METADATA({EXT_AUTHZ_METADATA_NAMESPACE}:{DECISION_ID_METADATA_KEY})%"
_BUCKETS = f"%DYNAMIC_METADATA({EXT_AUTHZ_METADATA_NAMESPACE}:{RATELIMIT_METADATA_KEY})%"
_RATE_LIMITED = {"response_flag_filter": {"flags": ["RL"]}}
_NO_KEY = "nexus_unset"


def _refusal_mapper(filter_: dict[str, Any], retry_after: str) -> dict[str, Any]:
    return {
        "filter": filter_,
        "headers_to_add": [
            {
                "header": {"key": "retry-after", "value": retry_after},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
        "body_format_override": {
            "json_format": {
                "error": "rate_limited",
                "decision_id": _DECISION_ID,
                "reasons": [
                    {
                        "rule": RATELIMIT_RULE,
                        "message": "the caller's rate limit is exhausted; retry after the "
                        "number of seconds in retry-after",
                        "controls": list(RATELIMIT_CONTROLS),
                    }
                ],
            },
            "content_type": "application/json",
        },
    }


def refusal_reply_config(plan: RateLimitPlan) -> dict[str, Any]:
    """The HCM's local reply for a rate limited request (either filter): 429 as JSON.

    Mappers are tried in order. The policy's own refusals (a spend cap's 429
    among them) keep their answer: a mapper without changes leaves a reply as
    it is. The global filter flags its refusal (RL) before replying and has
    already set ``x-ratelimit-reset``, the seconds until its window resets,
    which ``retry-after`` repeats. The local filter flags and adds its headers
    only after the reply is rewritten, so its 429 is matched by status, and
    ``retry-after`` is the soonest any local bucket refills
    (``x-ratelimit-reset`` still gives that bucket's own figure).
    """
    mappers: list[dict[str, Any]] = [
        {"filter": {"response_flag_filter": {"flags": ["UAEX"]}}},
        _refusal_mapper(_RATE_LIMITED, "%RESP(x-ratelimit-reset)%"),
    ]
    if plan.local:
        soonest = min(rule.unit_seconds for rule in plan.local)
        too_many = {
            "status_code_filter": {
                "comparison": {
                    "op": "EQ",
                    "value": {"default_value": 429, "runtime_key": _NO_KEY},
                }
            }
        }
        mappers.append(_refusal_mapper(too_many, str(soonest)))
    return {"mappers": mappers}


def refusal_access_log(workdir: Path) -> dict[str, Any]:
    """One JSON line per rate limited request: the decision id joins it to OPA's log."""
    return {
        "name": "envoy.access_loggers.file",
        "filter": _RATE_LIMITED,
        "typed_config": {
            "@type": FILE_ACCESS_LOG_TYPE,
            "path": str(workdir.resolve() / REFUSAL_LOG),
            "log_format": {
                "json_format": {
                    "time": "%START_TIME%",
                    "decision_id": _DECISION_ID,
                    "rule": RATELIMIT_RULE,
                    "controls": ",".join(RATELIMIT_CONTROLS),
                    "status": "%RESPONSE_CODE%",
                    "details": "%RESPONSE_CODE_DETAILS%",
                    "buckets": _BUCKETS,
                    "method": "%REQ(:METHOD)%",
                    "path": "%REQ(:PATH)%",
                }
            },
        },
    }


def ratelimit_service_config(plan: RateLimitPlan) -> dict[str, Any]:
    """envoyproxy/ratelimit's config: per shared limit, a counter per bucket value."""
    return {
        "domain": RATELIMIT_DOMAIN,
        "descriptors": [
            {
                "key": _LIMIT_KEY,
                "value": rule.id,
                "descriptors": [
                    {
                        "key": _BUCKET_KEY,
                        "rate_limit": {"unit": rule.unit, "requests_per_unit": rule.rate},
                    }
                ],
            }
            for rule in plan.shared
        ],
    }


def read_refusals(workdir: Path) -> list[dict[str, Any]]:
    """The refusal log lines Envoy wrote in ``workdir`` (none yet: empty)."""
    path = workdir.resolve() / REFUSAL_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RedisProcess(ManagedProcess):
    """A throwaway redis-server on a free loopback port (no persistence) for the counters."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.port = free_port()
        argv = [str(binary), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(workdir.resolve())]
        super().__init__("redis", argv, workdir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start_and_wait(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        self.start()
        self.wait_ready(lambda: _listening(self.port), timeout_s)


def _listening(port: int) -> bool:
    return wait_for_port("127.0.0.1", port, 0.2)


class RateLimitBackend:
    """What shared limits need beside Envoy: Redis (``redis_url``, or one started here) and
    the ratelimit service reading it. Nothing starts for a plan without shared limits."""

    def __init__(
        self, plan: RateLimitPlan, workdir: Path, *, ratelimit_bin: Path, redis_bin: Path | None,
        redis_url: str | None,
    ) -> None:  # fmt: skip
        self.plan = plan
        self.redis = (
            RedisProcess(redis_bin, workdir / "redis")
            if redis_url is None and redis_bin is not None and plan.shared
            else None
        )
        url = redis_url or (self.redis.url if self.redis else "")
        self.service = (
            RateLimitService(ratelimit_bin, workdir / "ratelimit", plan, url)
            if plan.shared
            else None
        )

    @property
    def grpc_port(self) -> int | None:
        return self.service.grpc_port if self.service else None

    def start(self) -> None:
        if self.redis is not None:
            self.redis.start_and_wait()
        if self.service is not None:
            self.service.start_and_wait()

    def stop(self) -> None:
        for process in (self.service, self.redis):
            if process is not None:
                process.stop()


class RateLimitService(ManagedProcess):
    """envoyproxy/ratelimit on free loopback ports, its config rendered from ``plan``."""

    def __init__(self, binary: Path, workdir: Path, plan: RateLimitPlan, redis_url: str) -> None:
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.debug_port = free_port()
        self.runtime_root = workdir.resolve() / "runtime"
        self.plan = plan
        env = {
            "USE_STATSD": "false",
            # Without statsd its stats go to a logging sink that floods the log every second.
            "DISABLE_STATS": "true",
            "REDIS_SOCKET_TYPE": "tcp",
            "REDIS_URL": redis_url.removeprefix("redis://").split("/")[0],
            "RUNTIME_ROOT": str(self.runtime_root),
            "RUNTIME_SUBDIRECTORY": "ratelimit",
            "RUNTIME_WATCH_ROOT": "false",
            "RUNTIME_IGNOREDOTFILES": "true",
            "HOST": "127.0.0.1",
            "PORT": str(self.http_port),
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": str(self.grpc_port),
            "DEBUG_HOST": "127.0.0.1",
            "DEBUG_PORT": str(self.debug_port),
            "LOG_LEVEL": "warn",
            "LOG_FORMAT": "json",
        }
        super().__init__("ratelimit", [str(binary)], workdir, env=env)

    def start(self) -> None:
        config_dir = self.runtime_root / "ratelimit" / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / f"{RATELIMIT_DOMAIN}.yaml").write_text(
            yaml.safe_dump(ratelimit_service_config(self.plan), sort_keys=False)
        )
        super().start()

    def start_and_wait(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        self.start()
        self.wait_ready(
            lambda: http_ok(f"http://127.0.0.1:{self.http_port}/healthcheck"), timeout_s
        )

"""A region's enforcers on this machine: N pairs of real OPA + Envoy and one upstream.

Used by ``nexus-policy dataplane up``, the demo and the end-to-end tests. Each
enforcer has a stable id (``<region>-<n>``), its own ports, persistence
directory and logs under the stack's working directory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nexus_dataplane.envoy import EnvoyProxy, envoy_config, validate_envoy_config
from nexus_dataplane.opa import (
    OPA_API_TOKEN_FILE,
    OPA_AUTHZ_FILE,
    OpaServer,
    admin_policy,
    new_api_token,
    opa_config,
    validate_opa_config,
)
from nexus_dataplane.process import free_port, http_ok
from nexus_dataplane.providers import ProviderRoutes
from nexus_dataplane.ratelimit import RateLimitPlan
from nexus_dataplane.spec import DEFAULT_BODY_LIMITS, EnforcerSpec, TracingSpec
from nexus_dataplane.upstream import Upstream
from nexus_runtime.secretfile import write_secret

__all__ = ["Enforcer", "EnforcerHealth", "EnforcerStack", "StackOptions", "enforcer_spec", "render"]


@dataclass(frozen=True)
class StackOptions:
    region: str
    control_plane_url: str
    token: str
    key_id: str
    verification_key_pem: str
    workdir: Path
    opa_bin: Path
    envoy_bin: Path
    audit_url: str | None = None
    audit_token: str | None = None
    with_envoy: bool = True
    long_poll_timeout_s: int = 30
    body_limits: tuple[tuple[str, int], ...] = DEFAULT_BODY_LIMITS
    key_algorithm: str = "RS256"
    extra_keys: tuple[tuple[str, str, str], ...] = ()
    """More trusted bundle keys (key id, algorithm, PEM), e.g. during a key rotation."""
    rate_limits: RateLimitPlan | None = None
    """The bundle's rate limits, enforced by every Envoy of the stack."""
    ratelimit_port: int | None = None
    """gRPC port of the ratelimit service the shared limits go through."""
    providers: ProviderRoutes | None = None
    """The region's provider clusters: each Envoy sends chats to the routed model's provider."""
    tracing: TracingSpec | None = None
    metric_tenants: tuple[str, ...] = ()
    shadow_sample_percent: float = 0.0
    """Tenants the enforcers count on their own (nexus_tenant_decisions_total)."""
    """Send Envoy's, OPA's and the upstream's spans to this OTLP collector."""
    credentials: Callable[[str], str] | None = None
    """The token of an enforcer id, minted as the stack adds it: each enforcer speaks with its
    own credential, bound to its id and region. Without it, every enforcer uses ``token``."""
    budget_reservations: bool = True
    """Each enforcer holds allowed priced chats' worst cases until the state counts them."""

    def token_of(self, enforcer_id: str) -> str:
        return self.credentials(enforcer_id) if self.credentials is not None else self.token


@dataclass
class Enforcer:
    spec: EnforcerSpec
    opa: OpaServer
    envoy: EnvoyProxy | None = None

    @property
    def id(self) -> str:
        return self.spec.enforcer_id

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.spec.envoy_port}"

    @property
    def opa_url(self) -> str:
        return self.opa.url

    @property
    def envoy_admin_url(self) -> str:
        """Envoy's admin API on loopback (``/ready``, ``/stats/prometheus``); no token."""
        return f"http://127.0.0.1:{self.spec.envoy_admin_port}"

    @property
    def opa_headers(self) -> dict[str, str]:
        """The bearer header OPA's REST API asks of this enforcer's own callers."""
        return self.opa.api_headers


@dataclass(frozen=True)
class EnforcerHealth:
    id: str
    opa: bool
    bundles: bool
    envoy: bool | None


def enforcer_spec(options: StackOptions, enforcer_id: str, upstream_port: int) -> EnforcerSpec:
    return EnforcerSpec(
        region=options.region,
        enforcer_id=enforcer_id,
        control_plane_url=options.control_plane_url,
        token=options.token_of(enforcer_id),
        key_id=options.key_id,
        verification_key_pem=options.verification_key_pem,
        persistence_dir=(options.workdir / enforcer_id / "persist").resolve(),
        grpc_port=free_port(),
        opa_port=free_port(),
        envoy_port=free_port(),
        envoy_admin_port=free_port(),
        upstream_host="127.0.0.1",
        upstream_port=upstream_port,
        audit_url=options.audit_url,
        audit_token=options.audit_token,
        long_poll_timeout_s=options.long_poll_timeout_s,
        body_limits=options.body_limits,
        key_algorithm=options.key_algorithm,
        extra_keys=options.extra_keys,
        rate_limits=options.rate_limits,
        ratelimit_port=options.ratelimit_port,
        providers=options.providers,
        refusal_log_dir=(options.workdir / enforcer_id).resolve(),
        tracing=options.tracing,
        metric_tenants=options.metric_tenants,
        shadow_sample_percent=options.shadow_sample_percent,
        budget_reservations=options.budget_reservations,
    )


def render(spec: EnforcerSpec, out: Path, *, opa_bin: Path, envoy_bin: Path) -> tuple[Path, Path]:
    """Write and validate one enforcer's OPA and Envoy configs in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    opa_path = out / "opa-config.yaml"
    envoy_path = out / "envoy.yaml"
    opa_doc = opa_config(spec)
    write_secret(opa_path, yaml.safe_dump(opa_doc, sort_keys=False).encode())
    # OPA's REST API answers only to this token (run OPA with --authentication=token
    # --authorization=basic and the policy file); a token rendered before is kept.
    token_path = out / OPA_API_TOKEN_FILE
    api_token = token_path.read_text().strip() if token_path.exists() else new_api_token()
    write_secret(token_path, (api_token + "\n").encode())
    write_secret(out / OPA_AUTHZ_FILE, admin_policy(api_token).encode())
    if spec.rate_limits is not None:
        # Envoy opens its refusal log at start (and when validating): the directory must exist.
        (spec.refusal_log_dir or spec.persistence_dir).mkdir(parents=True, exist_ok=True)
    envoy_path.write_text(yaml.safe_dump(envoy_config(spec), sort_keys=False))
    validate_envoy_config(envoy_bin, envoy_path)
    validate_opa_config(opa_bin, opa_doc, out / ".validate")
    return opa_path, envoy_path


@dataclass
class EnforcerStack:
    options: StackOptions
    count: int
    first_index: int = 1
    upstream: Upstream | None = None
    enforcers: list[Enforcer] = field(default_factory=list)
    _own_upstream: bool = False

    def start(self, *, wait_for_bundles: bool = True, timeout_s: float = 60.0) -> None:
        """Start the upstream (unless shared), then every OPA and Envoy; wait until ready."""
        if self.upstream is None and self.options.with_envoy:
            tracing = self.options.tracing
            self.upstream = Upstream(
                self.options.workdir / "upstream",
                otlp_endpoint=tracing.http_endpoint if tracing else None,
            )
            self.upstream.start_and_wait()
            self._own_upstream = True
        try:
            for n in range(self.first_index, self.first_index + self.count):
                self.add(f"{self.options.region}-{n}")
            for enforcer in self.enforcers:
                self._start(enforcer, wait_for_bundles=wait_for_bundles, timeout_s=timeout_s)
        except Exception:
            self.stop()
            raise

    def add(self, enforcer_id: str) -> Enforcer:
        # Without Envoy there is no upstream to forward to; the port is unused.
        upstream_port = self.upstream.port if self.upstream is not None else 0
        spec = enforcer_spec(self.options, enforcer_id, upstream_port)
        workdir = self.options.workdir / enforcer_id
        opa = OpaServer(
            self.options.opa_bin,
            workdir,
            config=opa_config(spec),
            port=spec.opa_port,
            name="opa",
            api_token=new_api_token(),
        )
        envoy = None
        if self.options.with_envoy:
            envoy = EnvoyProxy(
                self.options.envoy_bin,
                workdir,
                envoy_config(spec),
                admin_port=spec.envoy_admin_port,
            )
        enforcer = Enforcer(spec, opa, envoy)
        self.enforcers.append(enforcer)
        return enforcer

    def _start(self, enforcer: Enforcer, *, wait_for_bundles: bool, timeout_s: float) -> None:
        enforcer.opa.start_and_wait(bundles=wait_for_bundles, timeout_s=timeout_s)
        if enforcer.envoy is not None:
            enforcer.envoy.start_and_wait()

    def restart_opa(
        self, enforcer: Enforcer, *, wait_for_bundles: bool, timeout_s: float = 60.0
    ) -> None:
        enforcer.opa.stop()
        enforcer.opa = OpaServer(
            self.options.opa_bin,
            enforcer.opa.workdir,
            config=opa_config(enforcer.spec),
            port=enforcer.spec.opa_port,
            name="opa",
            api_token=enforcer.opa.api_token,
        )
        enforcer.opa.start_and_wait(bundles=wait_for_bundles, timeout_s=timeout_s)

    def health(self) -> list[EnforcerHealth]:
        out = []
        for e in self.enforcers:
            envoy_ok = None
            if e.envoy is not None:
                envoy_ok = e.envoy.alive() and http_ok(
                    f"http://127.0.0.1:{e.spec.envoy_admin_port}/ready"
                )
            out.append(
                EnforcerHealth(
                    e.id,
                    e.opa.alive() and http_ok(f"{e.opa.url}/health"),
                    e.opa.alive() and http_ok(f"{e.opa.url}/health?bundles"),
                    envoy_ok,
                )
            )
        return out

    def stop(self) -> None:
        for enforcer in self.enforcers:
            if enforcer.envoy is not None:
                with contextlib.suppress(Exception):
                    enforcer.envoy.stop()
            with contextlib.suppress(Exception):
                enforcer.opa.stop()
        if self._own_upstream and self.upstream is not None:
            self.upstream.stop()

    def __enter__(self) -> EnforcerStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

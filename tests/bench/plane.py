"""The control plane the enforcement benchmarks run against, built from the e2e harness.

:class:`BenchPlane` is the harness's :class:`~tests.fixtures.environment.Environment`
(control plane on a thread over SQLite or PostgreSQL, tokens per role,
publishing with approval when a change needs it) with three differences:
it publishes a bundle the benchmark built (a generated one) instead of the
example, it starts no enforcers of its own (each benchmark starts the ones
it measures), and it keeps the product's default state debounce rather than
the tests' shorter one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexus_cli.client import ControlPlaneClient
from nexus_control.access.signing_keys import load_signing_key, public_pem
from nexus_control.authoring.bundle import BuiltBundle
from nexus_control.settings import ControlSettings
from nexus_dataplane.enforcer import StackOptions
from nexus_dataplane.process import ManagedProcess
from nexus_dataplane.upstream import Upstream
from nexus_runtime.toolchain import find_envoy
from tests.bench.common import Context
from tests.bench.upstream import FastUpstream
from tests.fixtures.environment import KEY_ID, Environment

DEFAULT_DEBOUNCE_S = float(ControlSettings.model_fields["state_debounce_s"].default)


@dataclass
class BenchPlane(Environment):
    first: BuiltBundle | None = None
    """The bundle published when the control plane starts."""
    _client: ControlPlaneClient | None = field(default=None, repr=False)

    @property
    def settings(self) -> ControlSettings:
        return super().settings.model_copy(update={"state_debounce_s": DEFAULT_DEBOUNCE_S})

    def build(self, overlay: Path | None = None, **files: str) -> BuiltBundle:  # type: ignore[override]
        """What the harness publishes at start: the benchmark's bundle."""
        if self.first is None:
            raise RuntimeError("BenchPlane needs the bundle to publish first")
        return self.first

    def stack_options(self, workdir: Path, *, with_envoy: bool) -> StackOptions:
        """Options for enforcers of this plane's region, as the harness renders them."""
        return StackOptions(
            region=self.region,
            control_plane_url=self.url,
            token="",
            credentials=self.enrol,
            key_id=KEY_ID,
            verification_key_pem=public_pem(load_signing_key(self.keys.signing)),
            workdir=workdir,
            opa_bin=self.opa.binary,
            envoy_bin=find_envoy(),
            with_envoy=with_envoy,
        )

    def stack_upstream(self) -> Upstream:
        """The data plane's stand-in upstream the harness's (enforcer-less) stack started."""
        if self.stack is None or self.stack.upstream is None:
            raise RuntimeError("the control plane is not started")
        return self.stack.upstream

    def fleet_view(self) -> list[dict[str, Any]]:
        """The fleet view (/v1/fleet) of this region, over one kept-alive connection."""
        if self._client is None:
            self._client = ControlPlaneClient(self.url, self.tokens["operator"])
        enforcers: list[dict[str, Any]] = self._client.fleet(self.region)["enforcers"]
        return enforcers

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        super().stop()


@contextlib.contextmanager
def bench_database(ctx: Context, workdir: Path) -> Iterator[str | None]:
    """A PostgreSQL URL with ``--postgres`` (a throwaway server), else None for SQLite."""
    if not ctx.postgres:
        yield None
        return
    from tests.fixtures.servers import PostgresServer

    postgres = PostgresServer()
    postgres.start()
    try:
        yield postgres.url
    finally:
        postgres.stop()


@contextlib.contextmanager
def running_plane(ctx: Context, name: str, first: BuiltBundle) -> Iterator[BenchPlane]:
    """A started control plane (enforcers: none) that has published ``first``."""
    workdir = ctx.workdir / name
    workdir.mkdir(parents=True, exist_ok=True)
    with bench_database(ctx, workdir) as postgres_url:
        plane = BenchPlane(
            workdir=workdir,
            keys=ctx.keys,
            opa=ctx.opa,
            database_url=postgres_url or f"sqlite:///{workdir / 'control.db'}",
            plain={},
            enforcers=0,
            first=first,
        )
        try:
            plane.start()
            yield plane
        finally:
            plane.stop()


def bench_upstream(
    ctx: Context, plane: BenchPlane, workdir: Path, started: list[ManagedProcess]
) -> Upstream:
    """The upstream behind Envoy: the fast stand-in, or the product's with --upstream stock."""
    if ctx.upstream == "stock":
        return plane.stack_upstream()
    upstream = FastUpstream(workdir / "upstream")
    started.append(upstream)
    upstream.start_and_wait()
    return upstream

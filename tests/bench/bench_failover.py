"""Failover: a health change -> every enforcer of the region routes to the fallback.

Set-up: the control plane (on a thread, the e2e environment's, over SQLite, state
debounce 0.05 s) with the example bundle, and three enforcers of eu-west-1 (real OPA
+ real Envoy with ext_authz) in front of the echo upstream; a probe token bound to
eu-west-1.

Each trial flips gpt-4o's health in eu-west-1 (degraded, then healthy, alternately);
the clock starts (``perf_counter``) before ``POST /v1/health/models``, and each enforcer
is sent one of acme's chats every 10 ms until the model Envoy forwarded
(``x-nexus-route-model``) is the one the new health calls for (claude-sonnet-4 while
gpt-4o is degraded, gpt-4o once healthy). A trial's figure is the time until the last
enforcer of the region switched.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx

from nexus_control.access.tokens import Role, create_token
from tests.bench.common import Context, Figure, figure, percentile, report
from tests.fixtures.environment import Environment, credentials_overlay

NAME = "failover"
TITLE = "Health change -> every enforcer of the region routes to the fallback"

TRIALS, QUICK_TRIALS = 30, 6
ENFORCERS = 3
PROBE_S = 0.01
SWITCH_TIMEOUT_S = 15.0
TARGET_S = 2.0
PRIMARY, FALLBACK = "gpt-4o", "claude-sonnet-4"


def run(ctx: Context) -> list[Figure]:
    trials_wanted = QUICK_TRIALS if ctx.quick else TRIALS
    switched: list[float] = []
    missed = 0
    with _environment(ctx) as env, httpx.Client(timeout=10) as client:
        for n in range(trials_wanted):
            degraded = n % 2 == 0
            took = _trial(env, client, degraded)
            if took is None:
                missed += 1
            else:
                switched.append(took)
            ctx.console.print(
                f"  {'degraded' if degraded else 'healthy '}: every enforcer switched after "
                + (f"{took:.3f} s" if took is not None else "never")
            )
    worst = max(switched) if switched and not missed else float("inf")
    figures = [
        figure(
            NAME,
            "change -> region on fallback: p50",
            percentile(switched, 50),
            "s",
            note=f"{len(switched) + missed} changes, {ENFORCERS} enforcers (OPA + Envoy)",
        ),
        figure(
            NAME,
            "change -> region on fallback: p99",
            percentile(switched, 99) if not missed else float("inf"),
            "s",
            target=("<", TARGET_S),
            note="nearest rank (with < 100 changes, the max); the last enforcer to switch",
        ),
        figure(NAME, "change -> region on fallback: max", worst, "s"),
    ]
    report(ctx.console, TITLE, figures)
    return figures


@contextlib.contextmanager
def _environment(ctx: Context) -> Iterator[Environment]:
    workdir = ctx.workdir / NAME
    workdir.mkdir(parents=True, exist_ok=True)
    env = Environment(
        workdir=workdir,
        keys=ctx.keys,
        opa=ctx.opa,
        database_url=f"sqlite:///{workdir / 'control.db'}",
        plain=credentials_overlay(workdir / "credentials"),
        enforcers=ENFORCERS,
    )
    try:
        env.start()
        assert env.plane is not None
        with env.plane.db.session() as session:
            env.tokens["probe"], _ = create_token(
                session, name="bench-probe", role=Role.PROBE, region=env.region
            )
        yield env
    finally:
        env.stop()


def _routed(env: Environment, client: httpx.Client, enforcer: int) -> str | None:
    response = client.post(
        env.gateway(enforcer) + "/v1/chat/completions",
        headers={
            "authorization": f"Bearer {env.plain['acme-chat']}",
            "x-nexus-tenant": "acme",
            "x-nexus-model": PRIMARY,
        },
    )
    if response.status_code != httpx.codes.OK:
        return None
    model = response.json()["headers"].get("x-nexus-route-model")
    return model if isinstance(model, str) else None


def _trial(env: Environment, client: httpx.Client, degraded: bool) -> float | None:
    want = FALLBACK if degraded else PRIMARY
    start = time.perf_counter()
    answer = client.post(
        f"{env.url}/v1/health/models",
        headers={"authorization": f"Bearer {env.tokens['probe']}"},
        json={
            "model": PRIMARY,
            "region": env.region,
            "status": "degraded" if degraded else "healthy",
            "reason": "bench: 5xx rate" if degraded else "bench: recovered",
            "observed_at": datetime.now(UTC).isoformat(),
        },
    )
    if answer.status_code != httpx.codes.ACCEPTED:
        raise RuntimeError(f"health report refused: {answer.status_code} {answer.text}")
    waiting = set(range(ENFORCERS))
    while waiting and time.perf_counter() - start < SWITCH_TIMEOUT_S:
        for enforcer in sorted(waiting):
            if _routed(env, client, enforcer) == want:
                waiting.discard(enforcer)
        if waiting:
            time.sleep(PROBE_S)
    return None if waiting else time.perf_counter() - start

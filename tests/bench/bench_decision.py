"""Decision benchmark alone: ``opa bench --e2e`` of the gateway decision on the 10k-tenant bundle.

The same measurement ``build`` ends with (``bench_build.decision_figures``:
p50/p99 from OPA's evaluation timer, allocations per evaluation), without
the build sizes before it, so a policy or compiler change can be judged in
a minute: ``make bench BENCH_ARGS="--only decision"``.
"""

from __future__ import annotations

from tests.bench.bench_build import decision_figures
from tests.bench.common import Context, Figure, report

NAME = "decision"
TITLE = "Gateway decision cost (opa bench --e2e, 10k-tenant bundle)"


def run(ctx: Context) -> list[Figure]:
    main = ctx.main_tenants
    figures = decision_figures(ctx, ctx.generated(main), ctx.built(main).path)
    report(ctx.console, TITLE, figures)
    return figures

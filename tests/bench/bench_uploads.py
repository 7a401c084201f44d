"""Memory of the control plane under a burst of big unauthenticated uploads.

The real ``nexus-policy serve`` process (SQLite, co-located audit log); 20
clients at once each push a 64 MiB body to ``POST /v1/bundles`` with no token,
then with an unknown one, then chunked with no length. The figure is the
server's peak resident memory (``VmHWM`` from ``/proc``) over the whole run,
against the target of 300 MB; its idle peak is printed beside it.

A fourth round sends the same 20 bodies with a valid author token: at most
`MAX_LARGE_UPLOADS` stream at once (the rest get 503), each cut at the 64 MiB
sources limit, so what the server may hold is bounded by design; that figure
has no target (it is what authenticated authors can cost).
"""

from __future__ import annotations

import threading
from collections import Counter

from nexus_contract.wire import SOURCES_CONTENT_TYPE
from nexus_runtime.admission import MAX_LARGE_UPLOADS
from tests.bench.common import Context, Figure, figure, report
from tests.fixtures.plane_process import ServeProcess, push_body, rss_high_water_bytes

NAME = "uploads"
TITLE = "Unauthenticated uploads: server memory high-water mark"
CLIENTS = 20
BODY_BYTES = 64 * 1024 * 1024
TARGET_MB = 300.0
MB = 1_000_000


def _burst(
    server: ServeProcess, headers: dict[str, str], *, chunked: bool, clients: int
) -> Counter[int]:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def one() -> None:
        try:
            status, _ = push_body(
                server,
                "/v1/bundles",
                {**headers, "content-type": SOURCES_CONTENT_TYPE},
                BODY_BYTES,
                chunked=chunked,
            )
        except (OSError, AssertionError):
            status = 0
        with lock:
            statuses[status] += 1

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def _statuses(counts: Counter[int]) -> str:
    return ", ".join(f"{n}x {status or 'reset'}" for status, n in sorted(counts.items()))


def run(ctx: Context) -> list[Figure]:
    clients = 5 if ctx.quick else CLIENTS
    server = ServeProcess(ctx.workdir / NAME)
    server.start_and_wait()
    figures: list[Figure] = []
    try:
        assert server.pid is not None
        idle = rss_high_water_bytes(server.pid) / MB
        figures.append(figure(NAME, "idle peak RSS", idle, "MB"))
        rounds: tuple[tuple[str, dict[str, str], bool], ...] = (
            ("no token", {}, False),
            ("unknown token", {"authorization": "Bearer not-a-token"}, False),
            ("no token, chunked", {}, True),
        )
        notes = []
        for label, headers, chunked in rounds:
            counts = _burst(server, headers, chunked=chunked, clients=clients)
            notes.append(f"{label}: {_statuses(counts)}")
        peak = rss_high_water_bytes(server.pid) / MB
        figures.append(
            figure(
                NAME,
                f"peak RSS, {clients} x 64 MiB unauthenticated x 3 rounds",
                peak,
                "MB",
                target=("<", TARGET_MB),
                note="; ".join(notes),
            )
        )
        author = {"authorization": f"Bearer {server.tokens['author']}"}
        counts = _burst(server, author, chunked=True, clients=clients)
        figures.append(
            figure(
                NAME,
                f"peak RSS after {clients} x 64 MiB authenticated (chunked)",
                rss_high_water_bytes(server.pid) / MB,
                "MB",
                note=f"{_statuses(counts)}; at most {MAX_LARGE_UPLOADS} stream at once",
            )
        )
    finally:
        server.stop()
    report(ctx.console, TITLE, figures)
    return figures

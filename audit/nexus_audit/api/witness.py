"""The witness's HTTP interface (C2SP tlog-witness): ``POST /add-checkpoint``.

Submissions are not authenticated beyond the log's signature on the
checkpoint (as the protocol says); the body is bounded (16 KiB). Answers:
200 with cosignature lines, 400, 403, 404, 409 (``text/x.tlog.size`` with
the witness's size when ``old`` is stale), 422.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from nexus_audit.witness.protocol import (
    MAX_BODY_BYTES,
    SIZE_MEDIA_TYPE,
    AddCheckpoint,
    WitnessProtocolError,
)
from nexus_audit.witness.service import StaleSizeError, Witness, WitnessRefusedError

__all__ = ["create_witness_app"]


def create_witness_app(witness: Witness) -> FastAPI:
    app = FastAPI(title="NexusAI audit witness (C2SP tlog-witness)")

    @app.post("/add-checkpoint", response_class=PlainTextResponse)
    async def add_checkpoint(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return PlainTextResponse("the body is too large\n", status_code=400)
        try:
            parsed = AddCheckpoint.parse(bytes(body))
        except WitnessProtocolError as exc:
            return PlainTextResponse(f"{exc}\n", status_code=400)
        try:
            lines = await asyncio.to_thread(witness.add_checkpoint, parsed)
        except StaleSizeError as exc:
            # Exactly text/x.tlog.size: no charset parameter, as the protocol says.
            return Response(
                f"{exc.size}\n".encode(), status_code=409, headers={"content-type": SIZE_MEDIA_TYPE}
            )
        except WitnessRefusedError as exc:
            return PlainTextResponse(f"{exc}\n", status_code=exc.status)
        return PlainTextResponse(lines)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    return app

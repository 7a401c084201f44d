"""The real OPA, run as a server over one signed bundle, evaluating recorded inputs in batches.

One ``opa run --server`` per revision, with the bundle's signature verified
by OPA itself (``--verification-key``), on a loopback port. A small module
outside the bundle's roots (`REPLAY_MODULE`) evaluates a whole batch in one
request, each input with its recorded ``time.now_ns`` and its region (as
``opa.runtime()``'s label) fed back through ``with``; results come back
keyed by position, so an undefined decision is seen as such rather than
shifting the others. A batch that fails as a whole (one input's runtime
error) is evaluated again one input at a time, so only the input at fault is
an error.

Timing: OPA's own ``timer_rego_query_eval_ns`` per batch, divided by the
batch size, is each decision's evaluation time (both sides run the same
batches on the same machine in the same run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import orjson

from nexus_contract.errors import NexusError
from nexus_contract.wire import DECISION_QUERY
from nexus_runtime.toolchain import environ_with_tools

__all__ = [
    "BATCH_SIZE",
    "REPLAY_MODULE",
    "STARTUP_TIMEOUT_S",
    "Evaluation",
    "EvaluatorError",
    "OpaEvaluator",
]

BATCH_SIZE = 256
STARTUP_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 120.0
_REPLAY_PACKAGE = "nexus_replay"

REPLAY_STATE: dict[str, object] = {
    "period": "replay",
    "spend": {},
    "disabled": {},
    "approvals": {"used": {}},
}
"""The state document both sides are replayed under: no spend, no disabled tenant, no spent
approval. Decisions record no state, so a budget or replay refusal is not reproduced by the
baseline and is counted as not replayable, never as a difference; without a state at all
every metered route would fail closed and hide what the policy change does."""

REPLAY_MODULE = f"""package {_REPLAY_PACKAGE}

one(b) := d if {{
	d := {DECISION_QUERY} with input as b.input
		with time.now_ns as b.now
		with opa.runtime as {{"config": {{"labels": {{"region": b.region}}}}}}
}}

results := {{i: one(b) | some i, b in input.batch}}
"""


class EvaluatorError(NexusError):
    """OPA refused the bundle or could not evaluate; the message carries OPA's words."""


@dataclass(frozen=True)
class Evaluation:
    """One decision's result (None: undefined or failed, ``error`` says which)."""

    result: dict[str, Any] | None
    error: str | None
    eval_ns: int


@dataclass(frozen=True)
class _Verification:
    public_pem: str
    kid: str
    algorithm: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OpaEvaluator:
    """``opa run --server`` over ``archive``, verified with ``public_pem`` as ``kid``."""

    def __init__(
        self, binary: Path, archive: bytes, *, public_pem: str, kid: str, algorithm: str
    ) -> None:
        self._binary = binary
        self._archive = archive
        self._verification = _Verification(public_pem, kid, algorithm)
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None

    def __enter__(self) -> OpaEvaluator:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="nexus-replay-"))
        os.chmod(workdir, 0o700)
        self._dir = workdir
        bundle = workdir / "bundle.tar.gz"
        bundle.write_bytes(self._archive)
        key = workdir / "verification.pem"
        key.write_text(self._verification.public_pem)
        port = _free_port()
        log = (workdir / "opa.log").open("wb")
        self._process = subprocess.Popen(
            [
                str(self._binary), "run", "--server", "--disable-telemetry",
                "--addr", f"127.0.0.1:{port}", "--log-level", "error",
                "--verification-key", str(key),
                "--verification-key-id", self._verification.kid,
                "--signing-alg", self._verification.algorithm,
                "--bundle", str(bundle),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environ_with_tools(),
        )  # fmt: skip
        log.close()
        self._client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT_S)
        self._wait_ready(workdir / "opa.log")
        put = self._client.put(f"/v1/policies/{_REPLAY_PACKAGE}", content=REPLAY_MODULE.encode())
        if put.status_code != 200:
            self.stop()
            raise EvaluatorError(f"OPA refused the replay module: {put.text[:500]}")
        state = self._client.put("/v1/data/nexus_state", json=REPLAY_STATE)
        if state.status_code != 204:
            self.stop()
            raise EvaluatorError(f"OPA refused the replay state: {state.text[:500]}")

    def _wait_ready(self, log: Path) -> None:
        assert self._process is not None
        assert self._client is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                output = log.read_text(errors="replace").strip()
                self.stop()
                raise EvaluatorError(f"OPA refused the bundle: {output[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if self._client.get("/health", params={"bundles": "true"}).status_code == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise EvaluatorError(f"OPA did not load the bundle in {STARTUP_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def evaluate(self, items: Sequence[tuple[Any, int, str]]) -> list[Evaluation]:
        """Each ``(input, now_ns, region)`` evaluated; in order, one `Evaluation` each."""
        out: list[Evaluation] = []
        for start in range(0, len(items), BATCH_SIZE):
            out.extend(self._batch(items[start : start + BATCH_SIZE]))
        return out

    def _batch(self, items: Sequence[tuple[Any, int, str]]) -> list[Evaluation]:
        status, body = self._post(items)
        if status != 200:
            if len(items) == 1:
                return [Evaluation(None, _opa_error(body), 0)]
            return [one for item in items for one in self._batch([item])]
        results = body.get("result")
        results = results if isinstance(results, dict) else {}
        metrics = body.get("metrics") or {}
        per_decision = int(metrics.get("timer_rego_query_eval_ns", 0)) // max(len(items), 1)
        evaluations = []
        for position in range(len(items)):
            result = results.get(str(position))
            if isinstance(result, dict):
                evaluations.append(Evaluation(result, None, per_decision))
            else:
                evaluations.append(Evaluation(None, "undefined_decision", per_decision))
        return evaluations

    def _post(self, items: Sequence[tuple[Any, int, str]]) -> tuple[int, dict[str, Any]]:
        if self._client is None:
            raise EvaluatorError("the evaluator is not started")
        body = orjson.dumps(
            {"input": {"batch": [{"input": i, "now": n, "region": r} for i, n, r in items]}}
        )
        try:
            response = self._client.post(
                f"/v1/data/{_REPLAY_PACKAGE}/results",
                params={"metrics": "true"},
                content=body,
                headers={"content-type": "application/json"},
            )
        except httpx.TransportError as exc:
            raise EvaluatorError(f"OPA stopped answering: {exc}") from None
        try:
            parsed = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            parsed = {}
        return response.status_code, parsed if isinstance(parsed, dict) else {}


def _opa_error(body: dict[str, Any]) -> str:
    code = body.get("code")
    return str(code) if isinstance(code, str) and code else "evaluation_error"

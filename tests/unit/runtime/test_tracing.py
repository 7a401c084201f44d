"""Tracing off costs nothing: no SDK imported, no instrumentation, no ids in logs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from nexus_runtime.tracing import TracingSettings

_OFF = """
import json, logging, os, sys
os.environ.pop("NEXUS_OTLP_ENDPOINT", None)
from nexus_runtime import tracing
from nexus_runtime.logs import JsonFormatter
from nexus_runtime.server import instrument_app
from fastapi import FastAPI
assert tracing.configure_tracing("test") is False
app = FastAPI()
instrument_app(app)
line = json.loads(JsonFormatter().format(logging.makeLogRecord({"msg": "m"})))
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk")
                or m.startswith("opentelemetry.instrumentation"))
print(json.dumps({"loaded": loaded, "keys": sorted(line), "middleware": len(app.user_middleware)}))
"""


def test_with_no_endpoint_no_sdk_is_loaded_and_logs_carry_no_trace_ids() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _OFF], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(out.stdout)
    assert seen["loaded"] == []
    assert seen["middleware"] == 0
    assert "trace_id" not in seen["keys"]
    assert "span_id" not in seen["keys"]


def test_a_sample_percent_outside_0_to_100_is_refused() -> None:
    with pytest.raises(ValidationError, match="trace_sample_percent"):
        TracingSettings(otlp_endpoint="http://127.0.0.1:4318", trace_sample_percent=150)

"""What the real OPA makes of a signed bundle, given the keys it is configured to trust."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nexus_dataplane.opa import OpaServer
from nexus_dataplane.process import http_ok
from tests.fixtures.bundle_server import BundleFiles

VERDICT_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Verdict:
    activated: bool
    log: str


def opa_verdict(
    opa_bin: Path,
    workdir: Path,
    trusted: Mapping[str, tuple[str, str]],
    archive: bytes,
    *,
    roots_probe: str = "/v1/data",
) -> Verdict:
    """Start a real OPA trusting ``trusted`` (kid → (algorithm, PEM)), serve it ``archive``.

    Activated: OPA reports the bundle loaded (``/health?bundles``). Refused:
    its log says the bundle failed to load. Nothing else counts as either.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    with BundleFiles() as files:
        files.files["bundle.tar.gz"] = archive
        config = {
            "services": {"s": {"url": files.url}},
            "keys": {kid: {"algorithm": alg, "key": pem} for kid, (alg, pem) in trusted.items()},
            "bundles": {
                "b": {
                    "service": "s",
                    "resource": "bundle.tar.gz",
                    "signing": {},
                    "polling": {"min_delay_seconds": 1, "max_delay_seconds": 2},
                }
            },
        }
        server = OpaServer(opa_bin, workdir, config=config, name="opa-verdict")
        server.start_and_wait(bundles=False)
        try:
            deadline = time.monotonic() + VERDICT_TIMEOUT_S
            while time.monotonic() < deadline:
                if http_ok(f"{server.url}/health?bundles"):
                    return Verdict(True, server.log_tail(80))
                log = server.log_tail(80)
                if "Bundle load failed" in log:
                    return Verdict(False, log)
                time.sleep(0.1)
            raise AssertionError(
                f"OPA neither activated nor refused the bundle:\n{server.log_tail()}"
            )
        finally:
            server.stop()

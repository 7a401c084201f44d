"""HIPAA, PCI DSS, EU AI Act and ISO 42001: coverage and evidence exports per framework.

The controls come from the Rego library's own METADATA: first read from the
source onto logged decisions, then end to end, from decisions a real OPA made
on the built gateway bundle and shipped to the audit intake as decision logs.
"""

from __future__ import annotations

import json
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from nexus_audit.catalog import Catalogs
from nexus_audit.coverage import coverage
from nexus_audit.evidence import export_archive, verify_archive
from nexus_audit.metadata import rego_annotations
from nexus_audit.oscal import NEXUS_NAMESPACE, control_token
from nexus_audit.service import AuditLog
from nexus_control.access.approvals import issue_approval
from nexus_control.access.signing_keys import KeyPaths, load_approval_key, load_signing_key
from nexus_control.authoring.bundle import BuildOptions, build_bundle
from nexus_control.authoring.opa import Opa
from nexus_control.budgets.state import build_state_bundle
from nexus_dataplane.opa import OpaServer
from nexus_dataplane.process import free_port
from nexus_dataplane.request import GatewayRequest
from nexus_runtime.server import ServerThread
from tests.conftest import GATEWAY, REGO, TEST_KEY_ID
from tests.fixtures.environment import credentials_overlay
from tests.unit.audit.audit_app import create_app
from tests.unit.audit.conftest import LogFactory
from tests.unit.audit.harness import LOG_KEY
from tests.unit.audit.opa_events import T0, decision_event, gzip_batch
from tests.unit.audit.oscal_schema import assessment_results_validator

KEY = str(LOG_KEY.verifier)
DECISION_URL = "/v1/data/nexus/envoy/authz/decision"
LAND_TIMEOUT_S = 25.0

EXPORTS = [
    ("euaiact", "Art.12", "EUAIACT", "Art.12"),
    ("hipaa", "164.312(b)", "HIPAA", "hipaa-164.312.b"),
    ("pci", "10.2.1", "PCI", "pci-10.2.1"),
    ("iso42001", "A.6.2.8", "ISO42001", "A.6.2.8"),
]


def _metadata_controls(name: str) -> tuple[str, ...]:
    """The controls METADATA gives ``name`` (a custom.id, or a package for its labels)."""
    found = [a for a in rego_annotations(REGO) if a.name == name and a.controls]
    assert len(found) == 1, f"expected one annotated {name} in {REGO}"
    return tuple(control for control, _ in found[0].controls)


GATEWAY_CONTROLS = _metadata_controls("nexus.envoy.authz")
APPROVAL_REQUIRED_CONTROLS = _metadata_controls("nexus.tools.approval_required")


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def _props(node: dict[str, object]) -> dict[str, str]:
    props = node.get("props", [])
    assert isinstance(props, list)
    return {p["name"]: p["value"] for p in props if p["ns"] == NEXUS_NAMESPACE}


def _check_oscal(archive: Path, framework_key: str, token: str, satisfied: bool) -> None:
    document = json.loads(_members(archive)["assessment-results.json"])
    errors = sorted(
        assessment_results_validator().iter_errors(document), key=lambda e: list(e.absolute_path)
    )
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])
    results = document["assessment-results"]
    assert _props(results["metadata"])["framework"] == framework_key
    result = results["results"][0]
    assert _props(result)["framework"] == framework_key
    selected = result["reviewed-controls"]["control-selections"][0]["include-controls"]
    assert selected == [{"control-id": token}]
    finding = result["findings"][0]
    assert finding["target"]["target-id"] == token
    assert finding["target"]["status"]["state"] == ("satisfied" if satisfied else "not-satisfied")


# --- controls read from the METADATA onto logged decisions ---------------------


def test_the_gateway_package_labels_every_decision_with_the_logging_controls() -> None:
    assert {
        "EUAIACT:Art.12",
        "HIPAA:164.312(b)",
        "PCI:10.2.1",
        "ISO42001:A.6.2.8",
    } <= set(GATEWAY_CONTROLS)
    assert {"EUAIACT:Art.14", "HIPAA:164.312(b)", "ISO42001:A.9.2"} <= set(
        APPROVAL_REQUIRED_CONTROLS
    )


@pytest.fixture
def logged(audit_log: AuditLog) -> AuditLog:
    """Three allowed decisions and one tool call refused for want of an approval."""
    allowed = [
        decision_event(time=T0 + timedelta(minutes=n), allowed=True, rule_labels=GATEWAY_CONTROLS)
        for n in range(3)
    ]
    refused = decision_event(
        time=T0 + timedelta(minutes=5),
        controls=APPROVAL_REQUIRED_CONTROLS,
        rule_labels=GATEWAY_CONTROLS,
    )
    audit_log.ingest_upload(gzip_batch([*allowed, refused]), "gzip")
    return audit_log


@pytest.mark.parametrize(
    ("name", "control", "decisions"),
    [
        ("euaiact", "Art.12", 4),
        ("euaiact", "Art.14", 1),
        ("hipaa", "164.312(b)", 4),
        ("pci", "10.2.1", 4),
        ("pci", "7.2.3", 1),
        ("iso42001", "A.6.2.8", 4),
        ("iso42001", "A.9.2", 1),
    ],
)
def test_coverage_of_each_new_framework_counts_the_decisions_that_evidence_it(
    logged: AuditLog, name: str, control: str, decisions: int
) -> None:
    report = coverage(logged, name, T0, T0 + timedelta(days=1))
    assert len(report.controls) == len(logged.catalogs.framework(name.upper()).controls)
    row = next(r for r in report.controls if r.control.id == control)
    assert row.decisions == decisions
    assert report.as_dict()["framework"]["key"] == name.upper()


@pytest.mark.parametrize(("name", "control", "key", "token"), EXPORTS)
def test_an_export_per_new_framework_verifies_offline_and_its_oscal_names_the_framework(
    logged: AuditLog, tmp_path: Path, name: str, control: str, key: str, token: str
) -> None:
    out = tmp_path / f"evidence-{name}.tar.gz"
    summary = export_archive(
        logged,
        framework=name,
        control=control,
        since=T0,
        until=T0 + timedelta(days=1),
        out=out,
        actor="auditor",
    )
    assert (summary.framework, summary.control, summary.records) == (key, control, 4)
    verified = verify_archive(out, KEY)
    assert (verified.framework, verified.control, verified.records) == (key, control, 4)
    _check_oscal(out, key, token, satisfied=True)


@pytest.mark.parametrize(
    ("qualified_id", "token"),
    [
        ("SOC2:CC6.1", "CC6.1"),
        ("ISO27001:A.5.15", "A.5.15"),
        ("GDPR:Art.17", "Art.17"),
        ("HIPAA:164.312(a)(2)(i)", "hipaa-164.312.a.2.i"),
        ("HIPAA:164.308(a)(1)(ii)(D)", "hipaa-164.308.a.1.ii.D"),
        ("PCI:7.2.5.1", "pci-7.2.5.1"),
        ("EUAIACT:Art.14", "Art.14"),
        ("ISO42001:A.10.4", "A.10.4"),
    ],
)
def test_every_control_has_an_oscal_token(
    catalogs: Catalogs, qualified_id: str, token: str
) -> None:
    assert control_token(catalogs.control(qualified_id)) == token


def test_oscal_tokens_are_unique_within_each_framework(catalogs: Catalogs) -> None:
    for framework in catalogs.frameworks.values():
        tokens = [control_token(c) for c in framework.controls.values()]
        assert len(set(tokens)) == len(tokens), framework.key


# --- end to end: a real OPA decides on the gateway bundle ---------------------


@dataclass(frozen=True)
class Stack:
    log: AuditLog
    opa: OpaServer
    plain: dict[str, str]


@pytest.fixture
def stack(
    make_log: LogFactory,
    opa: Opa,
    session_keys: KeyPaths,
    signing_public_pem: Path,
    tmp_path: Path,
) -> Iterator[Stack]:
    """OPA on the gateway bundle, shipping its decision logs to an audit intake on SQLite."""
    plain = credentials_overlay(tmp_path / "credentials")
    built = build_bundle(
        GATEWAY,
        opa,
        BuildOptions(
            session_keys.signing, TEST_KEY_ID, session_keys.approval_jwks, tmp_path / "dist"
        ),
        overlays=[tmp_path / "credentials"],
    )
    # The state bundle: without it the enforcer cannot tell a used approval
    # from a fresh one, and honours none; and metered routes fail closed.
    state = build_state_bundle(
        {"period": "2026-12", "spend": {}, "disabled": {}, "approvals": {"used": {}}},
        key=load_signing_key(session_keys.signing),
        key_id=TEST_KEY_ID,
    )
    state_path = tmp_path / "state.tar.gz"
    state_path.write_bytes(state.archive)
    log = make_log()
    server = ServerThread(create_app(log), "127.0.0.1", free_port())
    server.start()
    enforcer = OpaServer(
        opa.binary,
        tmp_path / "opa",
        config={
            "services": {
                "audit": {
                    "url": f"{server.url}/v1/opa",
                    "credentials": {"bearer": {"token": "enforcer-token"}},
                    "headers": {"x-nexus-enforcer": "eu-west-1-a"},
                }
            },
            "decision_logs": {
                "service": "audit",
                "reporting": {"min_delay_seconds": 1, "max_delay_seconds": 1},
            },
            "labels": {"region": "eu-west-1", "enforcer": "eu-west-1-a"},
        },
        args=[
            "--bundle", str(built.path),
            "--bundle", str(state_path),
            "--verification-key", str(signing_public_pem),
            "--verification-key-id", TEST_KEY_ID,
        ],
    )  # fmt: skip
    try:
        enforcer.start_and_wait(bundles=False, timeout_s=30)
        yield Stack(log, enforcer, plain)
    finally:
        enforcer.stop()
        server.stop()


def _decide(stack: Stack, requests: list[GatewayRequest]) -> list[str]:
    with httpx.Client(base_url=stack.opa.url, timeout=10) as client:
        ids = []
        for request in requests:
            response = client.post(DECISION_URL, json={"input": request.to_opa_input()})
            response.raise_for_status()
            ids.append(response.json()["decision_id"])
        return ids


def _wait_until_logged(log: AuditLog, count: int) -> None:
    deadline = time.monotonic() + LAND_TIMEOUT_S
    while log.size() < count:
        if time.monotonic() > deadline:
            pytest.fail(f"only {log.size()} of {count} decisions reached the audit log")
        time.sleep(0.2)


@pytest.mark.opa
def test_real_decisions_evidence_the_new_frameworks_and_export_for_art_12_verifies(
    stack: Stack, session_keys: KeyPaths, tmp_path: Path
) -> None:
    arguments = {"language": "python", "source": "print(1)"}
    approval = issue_approval(
        load_approval_key(session_keys.approval),
        tenant="acme",
        tool="code-exec",
        arguments=arguments,
        approver="carol@acme.example",
        subject="apikey:acme-agent",
        max_ttl_s=900,
    )

    def call(
        credential: str | None,
        path: str,
        headers: dict[str, str] | None = None,
        body: dict[str, object] | None = None,
    ) -> GatewayRequest:
        sent = {"x-nexus-tenant": "acme", **(headers or {})}
        if credential is not None:
            sent["authorization"] = f"Bearer {stack.plain[credential]}"
        return GatewayRequest("POST", path, sent, body)

    chat = {"x-nexus-model": "gpt-4o"}
    tool = "/v1/tools/code-exec:invoke"
    started = datetime.now(UTC)
    _decide(
        stack,
        [
            call("acme-chat", "/v1/chat/completions", headers=chat, body={}),
            call(None, "/v1/chat/completions", headers=chat, body={}),
            call("acme-agent", tool, body={"arguments": arguments}),
            call(
                "acme-agent",
                tool,
                headers={"x-nexus-approval": approval.token},
                body={"arguments": arguments},
            ),
        ],
    )
    _wait_until_logged(stack.log, 4)
    since, until = started - timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=1)

    def decisions(name: str, control: str) -> tuple[int, int]:
        report = coverage(stack.log, name, since, until)
        row = next(r for r in report.controls if r.control.id == control)
        return row.allowed, row.denied

    assert decisions("euaiact", "Art.12") == (2, 2), "every decision is a record"
    assert decisions("euaiact", "Art.14") == (1, 1), "the approved and the unapproved tool call"
    assert decisions("hipaa", "164.312(b)") == (2, 2)
    assert decisions("hipaa", "164.312(d)") == (2, 2), "authenticated, or refused at it"
    assert decisions("pci", "10.2.1") == (2, 2)
    assert decisions("pci", "10.2.1.4") == (0, 1), "the invalid access attempt"
    assert decisions("pci", "7.2.3") == (1, 1)
    assert decisions("iso42001", "A.6.2.8") == (2, 2)
    assert decisions("iso42001", "A.9.2") == (1, 1)

    out = tmp_path / "evidence-euaiact-Art.12.tar.gz"
    export_archive(
        stack.log,
        framework="euaiact",
        control="EUAIACT:Art.12",
        since=since,
        until=until,
        out=out,
        actor="auditor",
    )
    verified = verify_archive(out, KEY)
    assert (verified.framework, verified.control, verified.records) == ("EUAIACT", "Art.12", 4)
    _check_oscal(out, "EUAIACT", "Art.12", satisfied=True)

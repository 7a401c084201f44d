"""Same decisions as another revision: ``python -m tests.bench.differential [REV]``.

A change meant to make the gateway decision cheaper must not change what is
decided. This evaluates ``data.nexus.envoy.authz.decision`` for thousands of
generated requests on the generated 10k-tenant bundle twice, once with the
working tree's ``rego/`` and once with ``REV``'s (default ``main``), on the
same compiled data and the same state document, and fails on the first
decision that differs (the whole decision: allowed, status, headers, body,
reasons). Requests mix every gateway route and unknown ones, methods, known
and unknown API keys, JWT-shaped tokens, missing credentials, other
tenants' headers, every model and prompt form (aliases, pinned, retired,
malformed), subjects and tools; the state has tenants over their caps, per
model and per feature, and disabled tenants. One ``opa eval`` per side
evaluates all requests (``with input as`` inside a comprehension).
"""

from __future__ import annotations

import argparse
import io
import random
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import orjson

from nexus_control.access.signing_keys import init_keys
from nexus_control.authoring.bundle import BuildOptions, build_bundle
from nexus_control.authoring.opa import Opa
from nexus_dataplane.request import GatewayRequest
from nexus_runtime.toolchain import find_opa
from tests.bench.generate import GeneratedBundle, generate
from tests.fixtures.environment import KEY_ID

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[2]
TENANTS, CASES, SEED = 10_000, 3_000, 11
REGION = "eu-west-1"
TOOLS = ("calculator", "code-exec", "payment-refund", "send-email", "web-search", "nope")
MODELS = ("chat-default", "chat-fast", "gpt-4o", "gpt-4.1", "llama-3.1-70b", "nope", None)
PROMPTS = (
    "support-agent",
    "support-agent@4",
    "support-agent@1",
    "support-agent@2",
    "sales-assistant@1",
    "code-reviewer@2",
    "a@b@c",
    "@3",
    "nope",
    None,
)
ROUTES = (
    *[("POST", "/v1/chat/completions")] * 6,
    *[("POST", "/v1/tools/{tool}:invoke")] * 3,
    ("GET", "/v1/chats/c-1"),
    ("DELETE", "/v1/chats/c-1"),
    ("DELETE", "/v1/subjects/s-1"),
    ("PUT", "/v1/admin"),
    ("GET", "/v1/chat/completions"),
    ("POST", "/v1/chat/completions/"),
)
QUERY_MODULE = f"""package nexus_differential

results := [d |
\tsome x in data.nexus_differential_cases
\td := data.nexus.envoy.authz.decision with input as x
\t\twith opa.runtime as {{"config": {{"labels": {{"region": "{REGION}"}}}}}}
]
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.differential")
    parser.add_argument("rev", nargs="?", default="main", help="git revision to compare with")
    parser.add_argument("--cases", type=int, default=CASES)
    parser.add_argument("--tenants", type=int, default=TENANTS)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    opa = Opa(find_opa())
    with tempfile.TemporaryDirectory(prefix="nexus-differential-") as tmp:
        work = Path(tmp)
        bundle = generate(work / "sources", args.tenants)
        keys = init_keys(work / "keys")
        built = build_bundle(
            bundle.path,
            opa,
            BuildOptions(
                signing_key=keys.signing,
                key_id=KEY_ID,
                approval_jwks=keys.approval_jwks,
                dist_dir=work / "dist",
            ),
        )
        data = _data_only(built.path, work / "data")
        (work / "cases.json").write_bytes(
            orjson.dumps({"nexus_differential_cases": _cases(bundle, args.cases, args.seed)})
        )
        (work / "state.json").write_bytes(orjson.dumps({"nexus_state": _state(bundle)}))
        (work / "query.rego").write_text(QUERY_MODULE)
        ours = _decide(opa, work, data, ROOT / "rego")
        theirs = _decide(opa, work, data, _policy_at(args.rev, work / "theirs"))
    for index, (mine, other) in enumerate(zip(ours, theirs, strict=True)):
        if mine != other:
            print(f"request {index} decided differently:\n  {args.rev}: {other}\n  here: {mine}")
            return 1
    allowed = sum(1 for d in ours if d["allowed"])
    rules = {r["rule"] for d in ours for r in d["reasons"]}
    print(
        f"{len(ours):,} decisions identical to {args.rev}'s policy "
        f"({allowed:,} allowed; {len(rules)} distinct refusal rules: {', '.join(sorted(rules))})"
    )
    return 0


def _data_only(archive: Path, target: Path) -> Path:
    """The archive's compiled data document alone (the policies come from each side)."""
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.lstrip("/") == "nexus/config/data.json")
        extracted = tar.extractfile(member)
        assert extracted is not None
        config = orjson.loads(extracted.read())
    target.mkdir(parents=True)
    path = target / "data.json"
    path.write_bytes(orjson.dumps({"nexus": {"config": config}}))
    return path


def _policy_at(rev: str, target: Path) -> Path:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "rego"], capture_output=True, check=True
    )
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target / "rego"


def _decide(opa: Opa, work: Path, data: Path, rego: Path) -> list[dict[str, Any]]:
    argv = ["eval", "--format", "json", "-d", str(data), "-d", str(work / "state.json")]
    argv += ["-d", str(work / "cases.json"), "-d", str(work / "query.rego")]
    for module in sorted(rego.rglob("*.rego")):
        if not module.name.endswith("_test.rego"):
            argv += ["-d", str(module)]
    out = opa.run(*argv, "data.nexus_differential.results")
    if out.returncode != 0:
        raise RuntimeError(f"opa eval failed: {(out.stderr or out.stdout)[-2000:]}")
    value: list[dict[str, Any]] = orjson.loads(out.stdout)["result"][0]["expressions"][0]["value"]
    return value


def _cases(bundle: GeneratedBundle, count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    creds = bundle.credentials
    cases = []
    for _ in range(count):
        cred, other = rng.choice(creds), rng.choice(creds)
        method, path = rng.choice(ROUTES)
        path = path.replace("{tool}", rng.choice(TOOLS))
        headers: dict[str, str] = {}
        draw = rng.random()
        if draw < 0.85:
            headers["authorization"] = f"Bearer {cred.plain}"
        elif draw < 0.92:
            headers["authorization"] = "Bearer nx-not-a-key"
        elif draw < 0.96:
            headers["authorization"] = "Bearer a.b.c"
        draw = rng.random()
        headers["x-nexus-tenant"] = cred.tenant if draw < 0.9 else other.tenant
        for name, choices in (("x-nexus-model", MODELS), ("x-nexus-prompt", PROMPTS)):
            picked = rng.choice(choices)
            if picked is not None:
                headers[name] = picked
        if rng.random() < 0.3:
            headers["x-nexus-subject"] = f"u-{rng.randint(1, 50)}"
        if rng.random() < 0.05:
            headers.pop("x-nexus-tenant")
        body: dict[str, Any] = (
            {"messages": [{"role": "user", "content": "hi"}]}
            if "chat" in path
            else {"arguments": {"query": "q"} if rng.random() < 0.7 else {"n": 1}}
        )
        cases.append(GatewayRequest(method, path, headers, body).to_opa_input())
    return cases


def _state(bundle: GeneratedBundle) -> dict[str, Any]:
    """Spend from 0 to 119 % of the cap, some per model and feature, a few tenants disabled."""
    spend = {}
    for n in range(1, bundle.tenants + 1):
        entry: dict[str, Any] = {"ratio": (n % 120) / 100, "models": {}, "features": {}}
        if n % 7 == 0:
            entry["models"]["gpt-4o"] = (n % 13) / 10
        if n % 11 == 0:
            entry["features"]["support-chat"] = (n % 17) / 10
        spend[f"t{n:06d}"] = entry
    disabled = {
        f"t{n:06d}": {"reason": "budget exhausted", "since": "2026-11-20"}
        for n in range(97, bundle.tenants + 1, 97)
    }
    return {"period": "2026-11", "spend": spend, "disabled": disabled, "approvals": {"used": {}}}


if __name__ == "__main__":
    sys.exit(main())

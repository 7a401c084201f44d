"""The OPA capabilities every bundle is checked, tested and built against.

OPA's own capability list (``opa capabilities --current`` of the binary we
run) minus the built-ins a policy must not call, so a module that calls one
is refused by ``opa check`` with its file, line and column, before it can
reach an enforcer. A policy decides from its input, its bundle's data and
the state bundle: never from the network, the host, or chance.

Each exclusion and why:

==================================  ===========================================================
``http.send``                       network egress: a rule could send inputs (credentials,
                                    prompts) anywhere, or decide on whatever a server answers
``net.*``                           ``net.lookup_ip_addr`` is DNS egress (data leaves in the
                                    name) and depends on the resolver; the CIDR helpers are
                                    pure but unused, and one rule ("no ``net.*``") is easier
                                    to review than a list
``rand.intn``, ``uuid.rfc4122``     non-deterministic: the same input would not give the same
                                    decision, so decisions could not be replayed or audited
``io.jwt.encode_sign``,             minting tokens needs a private key inside the bundle;
``io.jwt.encode_sign_raw``          a policy only ever verifies (``io.jwt.decode_verify``)
``crypto.parse_private_keys``,      private keys have no place in a bundle
``crypto.x509.parse_rsa_private_key``,
``crypto.x509.parse_keypair``
``providers.aws.sign_req``          signs requests for ``http.send`` with cloud credentials
==================================  ===========================================================

Tests (``*_test.rego``, a bundle's ``tests/``) never reach an enforcer, so
they are checked against the same list plus :data:`TEST_ONLY_BUILTINS`: they
mint tokens to prove that verification works.

Not covered here: ``print`` (and ``trace``) are not gated by capabilities;
OPA's compiler drops the calls when printing is off and keeps them when it is
on, so ``opa check`` cannot refuse them. The second approver on every code
change is what stands between a ``print`` and an enforcer's log.

Kept although OPA marks them non-deterministic, because the library needs
them and they reach nothing outside the evaluation: ``time.now_ns`` (expiry,
retention), ``io.jwt.decode_verify`` (approvals, JWT credentials; it reads
the clock), ``json.match_schema`` and ``json.verify_schema`` (tool arguments;
``allow_net`` is empty, so a schema cannot fetch a remote ``$ref``) and
``opa.runtime`` (residency reads the enforcer's ``labels.region``). The last
one also shows the enforcer's environment to a rule: that is why every change
to policy code needs a second approver, and why ``system.log.mask`` drops its
value from the decision log's built-in cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from nexus_control.authoring.opa import Opa, OpaError
from nexus_runtime.toolchain import cache_dir

__all__ = [
    "EXCLUDED_BUILTINS",
    "EXCLUDED_PREFIXES",
    "KEPT_NONDETERMINISTIC",
    "TEST_ONLY_BUILTINS",
    "capabilities_file",
    "restrict",
]

EXCLUDED_BUILTINS = frozenset(
    {
        "http.send",
        "rand.intn",
        "uuid.rfc4122",
        "io.jwt.encode_sign",
        "io.jwt.encode_sign_raw",
        "crypto.parse_private_keys",
        "crypto.x509.parse_rsa_private_key",
        "crypto.x509.parse_keypair",
        "providers.aws.sign_req",
    }
)
EXCLUDED_PREFIXES = ("net.",)
KEPT_NONDETERMINISTIC = frozenset(
    {
        "time.now_ns",
        "io.jwt.decode_verify",
        "json.match_schema",
        "json.verify_schema",
        "opa.runtime",
    }
)
"""Non-deterministic built-ins the library needs; every other one is excluded too."""
TEST_ONLY_BUILTINS = frozenset({"io.jwt.encode_sign", "io.jwt.encode_sign_raw"})

_lock = threading.Lock()
_files: dict[tuple[Path, bool], Path] = {}


def _excluded(builtin: dict[str, object], *, for_tests: bool) -> bool:
    name = str(builtin.get("name", ""))
    if for_tests and name in TEST_ONLY_BUILTINS:
        return False
    if name in EXCLUDED_BUILTINS or name.startswith(EXCLUDED_PREFIXES):
        return True
    return bool(builtin.get("nondeterministic")) and name not in KEPT_NONDETERMINISTIC


def restrict(capabilities: dict[str, object], *, for_tests: bool = False) -> dict[str, object]:
    """``capabilities`` without the excluded built-ins, and with no network allowed."""
    builtins = capabilities.get("builtins")
    if not isinstance(builtins, list):
        raise OpaError("opa capabilities printed no built-ins", [])
    restricted = dict(capabilities)
    restricted["builtins"] = [
        b for b in builtins if isinstance(b, dict) and not _excluded(b, for_tests=for_tests)
    ]
    restricted["allow_net"] = []
    return restricted


def capabilities_file(opa: Opa, *, for_tests: bool = False) -> Path:
    """The restricted capabilities of ``opa``'s binary, written once into the cache."""
    with _lock:
        known = _files.get((opa.binary, for_tests))
        if known is not None and known.exists():
            return known
        out = opa.run("capabilities", "--current")
        if out.returncode != 0:
            raise OpaError("opa capabilities --current failed", [], out.stderr)
        try:
            current = json.loads(out.stdout)
        except ValueError:
            raise OpaError("opa capabilities printed no JSON", [], out.stdout[:200]) from None
        restricted = restrict(current, for_tests=for_tests)
        text = json.dumps(restricted, sort_keys=True, indent=1).encode()
        digest = hashlib.sha256(text).hexdigest()[:16]
        kind = "tests" if for_tests else "bundle"
        path = cache_dir() / "capabilities" / f"{kind}-{digest}.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
            partial.write_bytes(text)
            os.replace(partial, path)
        _files[(opa.binary, for_tests)] = path
        return path

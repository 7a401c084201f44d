"""Bundle signatures written by the control plane, judged by the real OPA.

The private key stays in its provider (a SoftHSM2 token here), so the
control plane writes OPA's ``.signatures.json`` itself; these tests prove
OPA accepts exactly what it should: the file hashes equal OPA's own for
awkward JSON, every algorithm the token signs verifies, and a key OPA was
not told to trust (or no longer trusts) is refused.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from nexus_control.authoring.archive import read_archive, write_archive
from nexus_control.authoring.signatures import (
    BundleSignatureError,
    file_hash,
    sign_bundle_files,
    verify_bundle_files,
)
from nexus_runtime.keys.algorithms import (
    BUNDLE_ALGORITHMS,
    Algorithm,
    SignatureError,
    public_pem,
    verify,
)
from nexus_runtime.keys.files import FileKeyProvider
from nexus_runtime.keys.pkcs11 import Pkcs11KeyProvider
from tests.fixtures.softhsm import SoftHsm
from tests.security.opa_verdict import opa_verdict

pytestmark = [pytest.mark.opa]

AWKWARD_DATA = (
    '{"html":"<script>&amp;</script>","uni":"é ü 漢字 😀 \\u2028 \\u2029",'
    '"esc":"\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f",'
    '"nums":[0,-0,1.0,1e3,1E-7,12345678901234567890,-2.5e+10,0.1],'
    '"nested":{"z":{"b":[{"y":null,"x":true}],"a":false},"":"empty key","é":1,"Z":2,"a":[]}}'
)
"""Escapes OPA's encoder treats specially, numbers kept as written, keys in byte order."""


def awkward_bundle() -> dict[str, bytes]:
    manifest = {
        "revision": "r-<&>",
        "roots": ["nexus", "system/log"],
        "rego_version": 1,
        "metadata": {"note": "ü <b>"},
    }
    return {
        ".manifest": json.dumps(manifest, ensure_ascii=False).encode(),
        "data.json": b'{"nexus":' + AWKWARD_DATA.encode() + b"}",
        "nexus/x.rego": b"package nexus.x\n\nallow := true\n",
        "system/log/mask.rego": b'package system.log\n\nmask contains "/input/x"\n',
    }


def opa_hashes(opa_bin: Path, workdir: Path, files: dict[str, bytes]) -> dict[str, str]:
    """The hashes ``opa build --signing-key`` puts in its own .signatures.json for ``files``."""
    stage = workdir / "stage"
    for name, content in files.items():
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        (stage / name).write_bytes(content)
    FileKeyProvider(workdir).generate("k.pem", Algorithm.RS256)
    out = workdir / "opa.tar.gz"
    subprocess.run(
        [str(opa_bin), "build", "--bundle", ".", "-o", str(out), "--signing-key", "../k.pem"],
        cwd=stage,
        check=True,
        capture_output=True,
    )
    built = read_archive(out.read_bytes(), "opa's archive")
    token = json.loads(built[".signatures.json"])["signatures"][0]
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return {entry["name"]: entry["hash"] for entry in payload["files"]}


def test_file_hashes_equal_opas_for_awkward_json(opa_bin: Path, tmp_path: Path) -> None:
    """A known answer from OPA itself: it rewrites the JSON it builds (escapes ``<>&``,
    re-encodes strings), so equal hashes mean our canonical form is OPA's."""
    files = awkward_bundle()
    theirs = opa_hashes(opa_bin, tmp_path, files)
    assert set(theirs) == set(files)
    for name, content in files.items():
        assert file_hash(name, content) == theirs[name], name
    # Whitespace and escaping do not change a structured file's hash; any value does.
    spaced = AWKWARD_DATA.replace(",", " ,\n ").replace("<", "\\u003c")
    assert file_hash("data.json", f'{{ "nexus" : {spaced} }}'.encode()) == theirs["data.json"]
    other = AWKWARD_DATA.replace("1.0", "1")
    assert file_hash("data.json", f'{{"nexus":{other}}}'.encode()) != theirs["data.json"]


def test_opa_accepts_the_bundle_we_sign_for_awkward_json(opa_bin: Path, tmp_path: Path) -> None:
    key = FileKeyProvider(tmp_path).generate("k.pem", Algorithm.RS256)
    files = awkward_bundle()
    files[".signatures.json"] = sign_bundle_files(files, key, "kid-1")
    verdict = opa_verdict(
        opa_bin,
        tmp_path / "opa",
        {"kid-1": ("RS256", public_pem(key.public_key()))},
        write_archive(files),
    )
    assert verdict.activated, verdict.log


def test_tampered_file_fails_our_verifier_like_opas(tmp_path: Path) -> None:
    key = FileKeyProvider(tmp_path).generate("k.pem", Algorithm.ES256)
    files = awkward_bundle()
    files[".signatures.json"] = sign_bundle_files(files, key, "kid-1")
    trusted = {"kid-1": (Algorithm.ES256, key.public_key())}
    assert verify_bundle_files(files, trusted) == "kid-1"
    files["nexus/x.rego"] = b"package nexus.x\n\nallow := false\n"
    with pytest.raises(BundleSignatureError, match="digest mismatch"):
        verify_bundle_files(files, trusted)


@pytest.mark.softhsm
@pytest.mark.parametrize("algorithm", sorted(BUNDLE_ALGORITHMS))
def test_every_algorithm_the_token_signs_is_verified_by_opa(
    softhsm: SoftHsm, opa_bin: Path, tmp_path: Path, algorithm: Algorithm
) -> None:
    provider = Pkcs11KeyProvider(softhsm.module, softhsm.token_label, softhsm.pin)
    if not provider.supports(algorithm):
        pytest.fail(f"SoftHSM2 lists no mechanism for {algorithm}")
    key = provider.generate(f"verify-{algorithm.value}-{uuid.uuid4().hex[:8]}", algorithm)
    files = awkward_bundle()
    files[".signatures.json"] = sign_bundle_files(files, key, "token-key")
    verdict = opa_verdict(
        opa_bin,
        tmp_path / "opa",
        {"token-key": (algorithm.value, public_pem(key.public_key()))},
        write_archive(files),
    )
    assert verdict.activated, verdict.log


@pytest.mark.softhsm
def test_ed25519_on_the_token_signs_what_its_public_key_verifies(softhsm: SoftHsm) -> None:
    """EdDSA is for signed notes (checkpoints): OPA's bundle ``keys`` do not take it."""
    provider = Pkcs11KeyProvider(softhsm.module, softhsm.token_label, softhsm.pin)
    assert provider.supports(Algorithm.EDDSA)
    key = provider.generate(f"ed25519-{uuid.uuid4().hex[:8]}", Algorithm.EDDSA)
    message = b"nexus.local/audit\n42\n"
    verify(key.public_key(), Algorithm.EDDSA, message, key.sign(message))
    with pytest.raises(SignatureError):
        verify(key.public_key(), Algorithm.EDDSA, message + b"x", key.sign(message))
    assert Algorithm.EDDSA not in BUNDLE_ALGORITHMS


@pytest.mark.softhsm
def test_signing_key_never_leaves_the_token(softhsm: SoftHsm) -> None:
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    provider = Pkcs11KeyProvider(softhsm.module, softhsm.token_label, softhsm.pin)
    label = f"never-leaves-{uuid.uuid4().hex[:8]}"
    provider.generate(label, Algorithm.RS256)
    token = pkcs11.lib(str(softhsm.module)).get_token(token_label=softhsm.token_label)
    with token.open() as session:  # the process is logged in already (by the provider)
        (private,) = session.get_objects(
            {Attribute.LABEL: label, Attribute.CLASS: ObjectClass.PRIVATE_KEY}
        )
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        for secret in (Attribute.PRIVATE_EXPONENT, Attribute.PRIME_1, Attribute.PRIME_2):
            with pytest.raises(pkcs11.exceptions.AttributeSensitive):
                private[secret]
        wrapping = session.generate_key(pkcs11.KeyType.AES, 256, template={Attribute.WRAP: True})
        with pytest.raises(pkcs11.exceptions.PKCS11Error):
            wrapping.wrap_key(private)

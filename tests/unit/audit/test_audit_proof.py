"""C2SP tlog-proof: encoding, strict parsing and end-to-end verification."""

from __future__ import annotations

import base64

import pytest

from nexus_audit import merkle
from nexus_audit.checkpoint import Checkpoint, OriginMismatchError
from nexus_audit.merkle import MerkleError, ProofLengthError, RootMismatchError
from nexus_audit.note import InvalidSignatureError, Signer, UnverifiedNoteError
from nexus_audit.proof import HEADER, MalformedProofError, TlogProof

_ORIGIN = "audit.nexus.example/log"
_LOG = Signer(_ORIGIN, bytes(range(32)))
_ENTRIES = [b"decision %d" % i for i in range(11)]
_TREE = merkle.InMemoryTree.from_entries(_ENTRIES)
_CHECKPOINT = Checkpoint(_ORIGIN, _TREE.size, merkle.root_hash(_TREE.size, _TREE.subtree_hash))
_NOTE = _CHECKPOINT.sign(_LOG)


def _proof(index: int, extra: bytes = b"") -> TlogProof:
    hashes = merkle.inclusion_proof(index, _TREE.size, _TREE.subtree_hash)
    return TlogProof(index, hashes, _NOTE, extra)


_TEXT = _proof(6).encode()
_LINES = _TEXT.split("\n")

_SPEC_EXAMPLE = """\
c2sp.org/tlog-proof@v1
extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ
index 73894
gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=
B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=
EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=
RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=
AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=

example.com/fancylog
109482
sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=

\u2014 example.com/fancylog hI2DJw[...]1roloI=
"""


def test_encoded_proof_has_header_index_hashes_blank_line_then_checkpoint() -> None:
    proof = _proof(6)

    assert _LINES[:2] == [HEADER, "index 6"]
    assert _LINES[2 : 2 + len(proof.hashes)] == [
        base64.b64encode(value).decode() for value in proof.hashes
    ]
    assert _TEXT.endswith("\n\n" + _NOTE)


@pytest.mark.parametrize("extra", [b"", b"\x00opaque context\xff"], ids=["no-extra", "extra"])
def test_encoded_proof_parses_back_to_the_same_proof(extra: bytes) -> None:
    proof = _proof(10, extra)

    assert TlogProof.parse(proof.encode()) == proof
    assert TlogProof.parse(proof.encode().encode()) == proof


def test_spec_example_parses() -> None:
    proof = TlogProof.parse(_SPEC_EXAMPLE)

    assert proof.index == 73894
    assert proof.extra.startswith(b"age-v1.2.1-darwin-arm64.tar.gz")
    assert len(proof.hashes) == 5
    assert proof.checkpoint.startswith("example.com/fancylog\n109482\n")
    assert proof.encode() == _SPEC_EXAMPLE


@pytest.mark.parametrize("index", range(_TREE.size))
def test_proof_verifies_for_its_leaf_and_returns_the_checkpoint(index: int) -> None:
    proof = TlogProof.parse(_proof(index, b"ctx").encode())

    assert proof.verify(_LOG.verifier, leaf=_ENTRIES[index]) == _CHECKPOINT
    assert proof.verify(_LOG.verifier, leaf_hash=merkle.leaf_hash(_ENTRIES[index])) == _CHECKPOINT


def test_proof_for_another_leaf_fails_verification() -> None:
    with pytest.raises(RootMismatchError, match="leaf 6 in tree size 11"):
        TlogProof.parse(_TEXT).verify(_LOG.verifier, leaf=_ENTRIES[5])


def test_altered_proof_hash_fails_verification() -> None:
    value = bytearray(base64.b64decode(_LINES[3]))
    value[0] ^= 1
    altered = _TEXT.replace(_LINES[3], base64.b64encode(value).decode())

    with pytest.raises(RootMismatchError):
        TlogProof.parse(altered).verify(_LOG.verifier, leaf=_ENTRIES[6])


def test_altered_index_fails_verification() -> None:
    with pytest.raises(MerkleError):
        TlogProof.parse(_TEXT.replace("index 6", "index 7")).verify(_LOG.verifier, leaf=_ENTRIES[6])


def test_dropped_proof_hash_fails_verification() -> None:
    shortened = _TEXT.replace(_LINES[2] + "\n", "", 1)

    with pytest.raises(ProofLengthError):
        TlogProof.parse(shortened).verify(_LOG.verifier, leaf=_ENTRIES[6])


def test_proof_under_a_checkpoint_by_an_unknown_key_fails_verification() -> None:
    stranger = Signer(_ORIGIN, bytes(range(1, 33)))

    with pytest.raises(UnverifiedNoteError):
        TlogProof.parse(_TEXT).verify(stranger.verifier, leaf=_ENTRIES[6])


def test_proof_for_another_log_fails_verification() -> None:
    with pytest.raises(OriginMismatchError):
        TlogProof.parse(_TEXT).verify(_LOG.verifier, leaf=_ENTRIES[6], origin="other.example")


def test_checkpoint_errors_name_the_line_within_the_proof() -> None:
    proof = _proof(6, b"ctx")
    text = proof.encode()
    size_line = text.split("\n").index(str(_TREE.size)) + 1
    signature_line = size_line + 3
    tampered = text.replace(f"\n{_TREE.size}\n", f"\n{_TREE.size + 1}\n")

    with pytest.raises(InvalidSignatureError, match=f"line {signature_line}: "):
        TlogProof.parse(tampered).verify(_LOG.verifier, leaf=_ENTRIES[6])


@pytest.mark.parametrize(
    ("leaf", "leaf_hash"), [(None, None), (b"x", bytes(32))], ids=["neither", "both"]
)
def test_verify_needs_exactly_one_of_leaf_and_leaf_hash(
    leaf: bytes | None, leaf_hash: bytes | None
) -> None:
    with pytest.raises(TypeError, match="exactly one"):
        TlogProof.parse(_TEXT).verify(_LOG.verifier, leaf=leaf, leaf_hash=leaf_hash)


def _with_line(number: int, line: str) -> str:
    lines = list(_LINES)
    lines[number - 1] = line
    return "\n".join(lines)


_HASH_LINE = 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: expected 'c2sp.org/tlog-proof@v1'"),
        (_with_line(1, "c2sp.org/tlog-proof@v2"), "line 1: expected"),
        (HEADER, "line 2: the proof ends too early"),
        (_TEXT.replace("index 6", "extra \nindex 6"), "line 2: extra data"),
        (_TEXT.replace("index 6", "extra aGk\nindex 6"), "line 2: extra data"),
        (_with_line(2, "index 06"), "line 2: expected 'index <n>'"),
        (_with_line(2, "index -6"), "line 2: expected 'index <n>'"),
        (_with_line(2, "index  6"), "line 2: expected 'index <n>'"),
        (_with_line(2, "Index 6"), "line 2: expected 'index <n>'"),
        (_with_line(2, "index " + "9" * 21), "line 2: expected 'index <n>'"),
        (_with_line(2, f"index {2**64}"), "line 2: index 18446744073709551616 exceeds"),
        (_with_line(_HASH_LINE, _LINES[_HASH_LINE - 1][:-1]), "line 3: proof hash"),
        (_with_line(_HASH_LINE, base64.b64encode(bytes(31)).decode()), "line 3: proof hash"),
        (_with_line(_HASH_LINE, _LINES[_HASH_LINE - 1] + "\r"), "line 3: proof hash"),
        ("\n".join(_LINES[:4]), "line 5: the proof ends too early"),
        ("\n".join(_LINES[: _LINES.index("") + 1]), "line 8: expected a signed checkpoint"),
        (_TEXT[:-1], "expected a signed checkpoint ending with a newline"),
        (
            "\n".join([HEADER, "index 0", *[_LINES[2]] * 65, "", _NOTE]),
            "line 67: more than 64 proof hashes",
        ),
    ],
    ids=[
        "empty",
        "wrong-version",
        "header-only",
        "empty-extra",
        "extra-unpadded",
        "index-leading-zero",
        "index-negative",
        "index-double-space",
        "index-capitalised",
        "index-21-digits",
        "index-above-uint64",
        "hash-truncated",
        "hash-31-bytes",
        "carriage-return",
        "no-blank-line",
        "no-checkpoint",
        "checkpoint-without-final-newline",
        "too-many-hashes",
    ],
)
def test_malformed_proof_is_refused_with_its_line(text: str, message: str) -> None:
    with pytest.raises(MalformedProofError, match=message):
        TlogProof.parse(text)


def test_proof_that_is_not_utf8_is_refused_with_its_line() -> None:
    with pytest.raises(MalformedProofError, match="line 2: proof is not valid UTF-8"):
        TlogProof.parse(HEADER.encode() + b"\nindex \xff\n")


@pytest.mark.parametrize(
    ("index", "hashes", "checkpoint", "message"),
    [
        (-1, (), _NOTE, "leaf index -1"),
        (0, (bytes(31),), _NOTE, "proof hash 0 is 31 bytes"),
        (0, (bytes(32),) * 65, _NOTE, "65 proof hashes"),
        (0, (), _NOTE[:-1], "end with a newline"),
    ],
    ids=["negative-index", "short-hash", "too-many-hashes", "checkpoint-newline"],
)
def test_proof_refuses_values_it_cannot_represent(
    index: int, hashes: tuple[bytes, ...], checkpoint: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TlogProof(index, hashes, checkpoint)

"""C2SP signed notes: keys, signing, multi-signature verification and strict parsing."""

from __future__ import annotations

import base64

import pytest

from nexus_audit.note import (
    MAX_SIGNATURES,
    AmbiguousVerifierError,
    InvalidSignatureError,
    KeyIdMismatchError,
    MalformedKeyError,
    MalformedNoteError,
    NoteError,
    Signer,
    UnsupportedKeyTypeError,
    UnverifiedNoteError,
    Verifier,
    open_note,
    sign_note,
)

_TEXT = "first line\n\nthird line, after an empty one\n"
_LOG = Signer(name="example.com/log", seed=bytes(range(32)))
_WITNESS = Signer(name="witness.example", seed=bytes(range(32, 64)))


def _signature_line(name: str, key_id: bytes, signature: bytes) -> str:
    return f"\u2014 {name} {base64.b64encode(key_id + signature).decode()}\n"


def test_signed_note_opens_with_its_text_and_signature() -> None:
    note = sign_note(_TEXT, _LOG)

    opened = open_note(note, [_LOG.verifier])

    assert note.startswith(_TEXT + "\n\u2014 example.com/log ")
    assert opened.text == _TEXT
    assert [(s.name, s.key_id) for s in opened.signatures] == [(_LOG.name, _LOG.verifier.key_id)]


def test_note_signed_by_several_keys_verifies_with_any_one_known_key() -> None:
    note = sign_note(_TEXT, _LOG, _WITNESS)

    opened = open_note(note, [_WITNESS.verifier])

    assert [s.name for s in opened.signatures] == [_WITNESS.name]
    assert [s.name for s in opened.unverified] == [_LOG.name]
    assert [s.name for s in open_note(note, [_LOG.verifier, _WITNESS.verifier]).signatures] == [
        _LOG.name,
        _WITNESS.name,
    ]


def test_signatures_sharing_only_a_name_or_only_a_key_id_are_ignored() -> None:
    verifier = _LOG.verifier
    impostors = _signature_line(verifier.name, b"\x00\x00\x00\x00", bytes(64)) + _signature_line(
        "other.example", verifier.key_id, bytes(64)
    )
    note = sign_note(_TEXT, _LOG) + impostors

    opened = open_note(note, [verifier])

    assert len(opened.signatures) == 1
    assert {s.name for s in opened.unverified} == {verifier.name, "other.example"}


def test_note_signed_only_by_unknown_keys_is_refused() -> None:
    with pytest.raises(UnverifiedNoteError, match=r"only by unknown keys.*example\.com/log"):
        open_note(sign_note(_TEXT, _LOG), [_WITNESS.verifier])


def test_note_with_no_trusted_keys_is_refused() -> None:
    with pytest.raises(UnverifiedNoteError):
        open_note(sign_note(_TEXT, _LOG), [])


def test_altered_note_text_fails_verification() -> None:
    note = sign_note(_TEXT, _LOG).replace("first", "First")

    with pytest.raises(InvalidSignatureError, match=r"line 5: signature by key 'example\.com/log'"):
        open_note(note, [_LOG.verifier])


def test_bad_signature_by_a_known_key_refuses_the_note_even_if_another_verifies() -> None:
    forged = _signature_line(_WITNESS.name, _WITNESS.verifier.key_id, bytes(64))
    note = sign_note(_TEXT, _LOG) + forged

    with pytest.raises(InvalidSignatureError, match=r"line 6: .*witness\.example"):
        open_note(note, [_LOG.verifier, _WITNESS.verifier])


def test_known_key_signature_of_the_wrong_length_fails_verification() -> None:
    short = _signature_line(_LOG.name, _LOG.verifier.key_id, bytes(10))

    with pytest.raises(InvalidSignatureError, match="line 3"):
        open_note("text\n\n" + short, [_LOG.verifier])


def test_note_may_be_given_as_utf8_bytes() -> None:
    note = sign_note("caf\u00e9\n", _LOG)

    assert open_note(note.encode(), [_LOG.verifier]).text == "caf\u00e9\n"


_SIGNATURE = sign_note(_TEXT, _LOG)[len(_TEXT) + 1 :]
_ENCODED = _SIGNATURE.split(" ")[2].rstrip("\n")


@pytest.mark.parametrize(
    ("note", "message"),
    [
        ("text only\n", "line 1: no blank line"),
        ("text\n\n", "line 3: no signature lines"),
        ("text\n\n" + _SIGNATURE.rstrip("\n"), "line 3: the last signature line does not end"),
        ("text\n\n" + _SIGNATURE.replace("\u2014", "-"), "line 3: .*em dash"),
        ("text\n\n" + _SIGNATURE.replace(" ", "  ", 1), "line 3: signature line must be"),
        ("text\n\n" + _SIGNATURE + "\u2014 a+b " + _ENCODED + "\n", "line 4: key name 'a\\+b'"),
        ("text\n\n" + _SIGNATURE.replace(_ENCODED, _ENCODED[:-1]), "line 3: .*canonical base64"),
        ("text\n\n\u2014 k " + base64.b64encode(b"1234").decode() + "\n", "line 3: .*4-byte"),
        ("te\rxt\n\n" + _SIGNATURE, "line 1: control character '\\\\r'"),
        ("a\nb\tc\n\n" + _SIGNATURE, "line 2: control character '\\\\t'"),
    ],
    ids=[
        "no-blank-line",
        "no-signatures",
        "no-final-newline",
        "hyphen-not-em-dash",
        "double-space",
        "plus-in-name",
        "truncated-base64",
        "signature-without-bytes",
        "carriage-return",
        "tab",
    ],
)
def test_malformed_note_is_refused_with_its_line(note: str, message: str) -> None:
    with pytest.raises(MalformedNoteError, match=message):
        open_note(note, [_LOG.verifier])


def test_non_canonical_base64_signature_is_refused() -> None:
    raw = base64.b64decode(_ENCODED)
    assert len(raw) % 3 == 2
    last = _ENCODED[-2]
    sloppy = _ENCODED[:-2] + chr(ord(last) + 1) + "="
    assert base64.b64decode(sloppy) == raw

    with pytest.raises(MalformedNoteError, match="canonical base64"):
        open_note("text\n\n" + _SIGNATURE.replace(_ENCODED, sloppy), [_LOG.verifier])


def test_note_that_is_not_utf8_is_refused_with_its_line() -> None:
    with pytest.raises(MalformedNoteError, match="line 2: note is not valid UTF-8"):
        open_note(b"ok\n\xff\n\n" + _SIGNATURE.encode(), [_LOG.verifier])


def test_note_with_too_many_signatures_is_refused() -> None:
    note = sign_note(_TEXT, _LOG) + _SIGNATURE * MAX_SIGNATURES

    with pytest.raises(MalformedNoteError, match=f"{MAX_SIGNATURES + 1} signature lines"):
        open_note(note, [_LOG.verifier])


def test_first_line_offsets_line_numbers_in_errors() -> None:
    with pytest.raises(MalformedNoteError, match="line 13: "):
        open_note("text\n\n" + _SIGNATURE.replace("\u2014", "-"), [], first_line=11)


def test_verifier_key_string_round_trips() -> None:
    verifier = _LOG.verifier

    assert Verifier.parse(str(verifier)) == verifier
    assert str(verifier).startswith(f"example.com/log+{verifier.key_id.hex()}+")


def test_signer_key_string_round_trips() -> None:
    signer = Signer.generate("fresh.example/key")

    parsed = Signer.parse(signer.private_key_string())

    assert parsed == signer
    assert open_note(sign_note(_TEXT, parsed), [signer.verifier]).text == _TEXT


def test_signer_repr_does_not_reveal_the_private_key() -> None:
    assert _LOG.seed.hex() not in repr(_LOG)
    assert base64.b64encode(_LOG.seed).decode()[:10] not in str(_LOG)


def _vkey(name: str, hex_id: str, material: bytes) -> str:
    return f"{name}+{hex_id}+{base64.b64encode(material).decode()}"


_PUBLIC = _LOG.verifier.public_key
_HEX_ID = _LOG.verifier.key_id.hex()
_SKEY = _LOG.private_key_string()


@pytest.mark.parametrize(
    ("vkey", "error", "message"),
    [
        ("example.com/log", MalformedKeyError, "found 1 '\\+'-separated"),
        (_vkey(_LOG.name, "00000000", b"\x01" + _PUBLIC), KeyIdMismatchError, "carries key ID"),
        (_vkey(_LOG.name, _HEX_ID.upper(), b"\x01" + _PUBLIC), MalformedKeyError, "lowercase"),
        (_vkey(_LOG.name, _HEX_ID, b"\x02" + _PUBLIC), UnsupportedKeyTypeError, "type 0x02"),
        (
            _vkey(_LOG.name, _HEX_ID, b"\x01" + _PUBLIC[:31]),
            MalformedKeyError,
            "public key is 31 bytes",
        ),
        (_vkey("has space", _HEX_ID, b"\x01" + _PUBLIC), MalformedKeyError, "key name"),
        (f"{_LOG.name}+{_HEX_ID}+not base64!", MalformedKeyError, "canonical base64"),
    ],
    ids=["one-part", "wrong-id", "uppercase-id", "ecdsa-type", "short-key", "space", "base64"],
)
def test_malformed_verifier_key_is_refused(vkey: str, error: type[NoteError], message: str) -> None:
    with pytest.raises(error, match=message):
        Verifier.parse(vkey)


@pytest.mark.parametrize(
    ("skey", "error", "message"),
    [
        (_SKEY.removeprefix("PRIVATE+KEY+"), MalformedKeyError, r"PRIVATE\+KEY\+"),
        (_SKEY[:-1], MalformedKeyError, "base64"),
        (_SKEY.replace(_HEX_ID, "00000000"), KeyIdMismatchError, "carries key ID"),
        ("PRIVATE+KEY+name-only", MalformedKeyError, "found 1"),
    ],
    ids=["no-prefix", "truncated", "wrong-id", "one-part"],
)
def test_malformed_signer_key_is_refused(skey: str, error: type[NoteError], message: str) -> None:
    with pytest.raises(error, match=message):
        Signer.parse(skey)


def test_two_different_keys_with_one_name_and_key_id_are_ambiguous() -> None:
    class _CollidingVerifier(Verifier):
        @property
        def key_id(self) -> bytes:
            return b"\x00\x00\x00\x00"

    first = _CollidingVerifier("k.example", bytes(32))
    second = _CollidingVerifier("k.example", bytes(31) + b"\x01")

    with pytest.raises(AmbiguousVerifierError, match=r"'k\.example' with key ID 00000000"):
        open_note(sign_note(_TEXT, _LOG), [first, second])


@pytest.mark.parametrize(
    ("text", "signers", "message"),
    [
        ("no newline", (_LOG,), "end with a newline"),
        ("bell\a\n", (_LOG,), "control character"),
        ("text\n", (), "at least one signer"),
        ("text\n", (_LOG, _LOG), "twice"),
    ],
    ids=["no-newline", "control", "no-signer", "duplicate-signer"],
)
def test_signing_refuses_text_or_signers_the_format_cannot_carry(
    text: str, signers: tuple[Signer, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sign_note(text, *signers)

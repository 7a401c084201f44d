"""C2SP tlog-checkpoint: body format, signing and strict, verified opening."""

from __future__ import annotations

import base64

import pytest

from nexus_audit import merkle
from nexus_audit.checkpoint import Checkpoint, MalformedCheckpointError, OriginMismatchError
from nexus_audit.note import InvalidSignatureError, Signer, UnverifiedNoteError, sign_note

_ORIGIN = "audit.nexus.example/log"
_LOG = Signer(_ORIGIN, bytes(range(32)))
_WITNESS = Signer("witness.example", bytes(range(32, 64)))
_ROOT = merkle.root_hash(
    5, merkle.InMemoryTree.from_entries(b"%d" % i for i in range(5)).subtree_hash
)
_ROOT_B64 = base64.b64encode(_ROOT).decode()
_CHECKPOINT = Checkpoint(_ORIGIN, 5, _ROOT)


def test_checkpoint_text_is_origin_size_and_base64_root_lines() -> None:
    assert _CHECKPOINT.text == f"{_ORIGIN}\n5\n{_ROOT_B64}\n"
    assert Checkpoint(_ORIGIN, 5, _ROOT, ("ext one", "ext two")).text.endswith(
        f"{_ROOT_B64}\next one\next two\n"
    )


@pytest.mark.parametrize(
    "checkpoint",
    [_CHECKPOINT, Checkpoint(_ORIGIN, 0, merkle.EMPTY_ROOT), Checkpoint(_ORIGIN, 5, _ROOT, ("x",))],
    ids=["plain", "empty-tree", "extension"],
)
def test_signed_checkpoint_opens_to_the_same_checkpoint(checkpoint: Checkpoint) -> None:
    note = checkpoint.sign(_LOG)

    assert note.startswith(checkpoint.text + "\n\u2014 " + _ORIGIN + " ")
    assert Checkpoint.open(note, _LOG.verifier) == checkpoint


def test_witness_cosignatures_are_ignored_when_opening() -> None:
    note = sign_note(_CHECKPOINT.text, _LOG, _WITNESS)

    assert Checkpoint.open(note, _LOG.verifier) == _CHECKPOINT


def test_checkpoint_signed_by_another_key_is_refused() -> None:
    with pytest.raises(UnverifiedNoteError):
        Checkpoint.open(_CHECKPOINT.sign(_WITNESS), _LOG.verifier)


def test_checkpoint_with_altered_size_fails_verification() -> None:
    note = _CHECKPOINT.sign(_LOG).replace("\n5\n", "\n6\n")

    with pytest.raises(InvalidSignatureError, match="line 5"):
        Checkpoint.open(note, _LOG.verifier)


def test_checkpoint_for_another_log_is_refused() -> None:
    other_log = Checkpoint("other.example/log", 5, _ROOT)

    with pytest.raises(OriginMismatchError, match=r"'other\.example/log', expected 'audit"):
        Checkpoint.open(other_log.sign(_LOG), _LOG.verifier)


def test_checkpoint_origin_may_differ_from_the_key_name_when_expected_explicitly() -> None:
    other_log = Checkpoint("other.example/log", 5, _ROOT)
    note = other_log.sign(_LOG)

    assert Checkpoint.open(note, _LOG.verifier, origin="other.example/log") == other_log
    with pytest.raises(OriginMismatchError):
        Checkpoint.open(_CHECKPOINT.sign(_LOG), _LOG.verifier, origin="other.example/log")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{_ORIGIN}\n5\n", "line 3: a checkpoint needs origin, tree size and root hash"),
        (f"\n5\n{_ROOT_B64}\n", "line 1: checkpoint lines must not be empty"),
        (f"{_ORIGIN}\n05\n{_ROOT_B64}\n", "line 2: tree size '05'"),
        (f"{_ORIGIN}\n-5\n{_ROOT_B64}\n", "line 2: tree size '-5'"),
        (f"{_ORIGIN}\n+5\n{_ROOT_B64}\n", "line 2: tree size"),
        (f"{_ORIGIN}\n5 \n{_ROOT_B64}\n", "line 2: tree size"),
        (f"{_ORIGIN}\n\u0665\n{_ROOT_B64}\n", "line 2: tree size"),
        (f"{_ORIGIN}\n{2**64}\n{_ROOT_B64}\n", "line 2: tree size"),
        (f"{_ORIGIN}\n{'9' * 5000}\n{_ROOT_B64}\n", "line 2: tree size"),
        (f"{_ORIGIN}\n5\n{_ROOT.hex()}\n", "line 3: root hash"),
        (f"{_ORIGIN}\n5\n{base64.b64encode(_ROOT[:31]).decode()}\n", "line 3: root hash"),
        (f"{_ORIGIN}\n5\n{_ROOT_B64}\n\nextension\n", "line 4: checkpoint lines must not be empty"),
        (f"{_ORIGIN}\n0\n{_ROOT_B64}\n", "line 3: a checkpoint of size 0 must carry the empty"),
    ],
    ids=[
        "two-lines",
        "empty-origin",
        "leading-zero",
        "negative",
        "plus-sign",
        "trailing-space",
        "arabic-digit",
        "above-uint64",
        "huge",
        "hex-root",
        "short-root",
        "empty-extension",
        "empty-tree-wrong-root",
    ],
)
def test_signed_but_malformed_checkpoint_is_refused_with_its_line(text: str, message: str) -> None:
    with pytest.raises(MalformedCheckpointError, match=message):
        Checkpoint.open(sign_note(text, _LOG), _LOG.verifier)


def test_non_canonical_root_encoding_is_refused() -> None:
    sloppy = _ROOT_B64[:-2] + chr(ord(_ROOT_B64[-2]) + 1) + "="
    assert base64.b64decode(sloppy) == _ROOT

    with pytest.raises(MalformedCheckpointError, match="line 3: root hash"):
        Checkpoint.open(sign_note(f"{_ORIGIN}\n5\n{sloppy}\n", _LOG), _LOG.verifier)


@pytest.mark.parametrize(
    ("origin", "size", "root", "extensions", "message"),
    [
        ("", 5, _ROOT, (), "origin must be a non-empty line"),
        ("two\nlines", 5, _ROOT, (), "origin must be a non-empty line"),
        (_ORIGIN, -1, _ROOT, (), "tree size -1"),
        (_ORIGIN, 2**64, _ROOT, (), "tree size"),
        (_ORIGIN, 5, _ROOT[:16], (), "root hash is 16 bytes"),
        (_ORIGIN, 0, _ROOT, (), "size 0 must carry the empty-tree root"),
        (_ORIGIN, 5, _ROOT, ("",), "extension line 0"),
    ],
    ids=["empty-origin", "newline", "negative", "above-uint64", "short-root", "size-0", "ext"],
)
def test_checkpoint_refuses_values_it_cannot_represent(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Checkpoint(origin, size, root, extensions)

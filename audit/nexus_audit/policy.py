"""C2SP tlog-policy (https://c2sp.org/tlog-policy): which logs and witnesses, and the quorum.

A policy file is lines of

    log <vkey> [<url>]
    witness <name> <vkey> [<url>]          (vkey of type 0x04, a cosigner key)
    group <name> all|any|<k> <member>...
    quorum <name>|none

with ``#`` comments and blank lines ignored. Groups and the quorum only name
witnesses or groups defined on earlier lines, so definitions cannot cycle.
`TlogPolicy.verify` checks a checkpoint note offline: signed by one of the
logs, and cosigned by witnesses satisfying the quorum; it raises otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nexus_audit.checkpoint import Checkpoint, CheckpointError
from nexus_audit.cosignature import CosignatureError, CosignerKey, verified_cosignatures
from nexus_audit.note import NoteError, Verifier
from nexus_contract.errors import NexusError

__all__ = [
    "NONE",
    "Group",
    "PolicyError",
    "PolicyWitness",
    "QuorumNotMetError",
    "TlogPolicy",
]

NONE = "none"
"""The predefined quorum that requires no cosignature."""
_MAX_ENTRIES = 32
_WHITESPACE = re.compile(r"[ \t]+")
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class PolicyError(NexusError):
    """A policy file is malformed; the message names the line."""


class QuorumNotMetError(NexusError):
    """A checkpoint is not cosigned by enough witnesses for the policy's quorum."""


@dataclass(frozen=True)
class PolicyWitness:
    name: str
    key: CosignerKey
    url: str | None = None


@dataclass(frozen=True)
class Group:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class TlogPolicy:
    """Logs, witnesses, groups and the quorum; ``quorum`` names a witness, a group or `NONE`."""

    logs: tuple[tuple[Verifier, str | None], ...]
    witnesses: tuple[PolicyWitness, ...]
    groups: tuple[Group, ...]
    quorum: str

    @classmethod
    def parse(cls, text: str | bytes, *, source: str = "policy") -> TlogPolicy:
        """Parse a policy file; raise `PolicyError` as ``source:line: problem``."""
        raw = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
        logs: list[tuple[Verifier, str | None]] = []
        witnesses: dict[str, PolicyWitness] = {}
        groups: dict[str, Group] = {}
        quorum: str | None = None
        seen_keys: set[bytes] = set()
        for number, line in enumerate(raw.split("\n"), start=1):
            where = f"{source}:{number}"
            if _FORBIDDEN.search(line):
                raise PolicyError(f"{where}: control characters are not allowed")
            fields = [part for part in _WHITESPACE.split(line.strip()) if part]
            if not fields or fields[0].startswith("#"):
                continue
            keyword, args = fields[0], fields[1:]
            if keyword == "log":
                if len(args) not in (1, 2):
                    raise PolicyError(f"{where}: expected 'log <vkey> [<url>]'")
                try:
                    verifier = Verifier.parse(args[0])
                except NoteError as exc:
                    raise PolicyError(f"{where}: {exc}") from None
                if verifier.public_key in seen_keys:
                    raise PolicyError(f"{where}: this key is listed twice")
                seen_keys.add(verifier.public_key)
                logs.append((verifier, args[1] if len(args) == 2 else None))
            elif keyword == "witness":
                if len(args) not in (2, 3):
                    raise PolicyError(f"{where}: expected 'witness <name> <vkey> [<url>]'")
                name = args[0]
                cls._check_new_name(name, witnesses, groups, where)
                try:
                    key = CosignerKey.parse(args[1])
                except NoteError as exc:
                    raise PolicyError(f"{where}: {exc}") from None
                if key.public_key in seen_keys:
                    raise PolicyError(f"{where}: this key is listed twice")
                seen_keys.add(key.public_key)
                witnesses[name] = PolicyWitness(name, key, args[2] if len(args) == 3 else None)
            elif keyword == "group":
                if len(args) < 3:
                    raise PolicyError(f"{where}: expected 'group <name> all|any|<k> <member>...'")
                name, spec, members = args[0], args[1], tuple(args[2:])
                cls._check_new_name(name, witnesses, groups, where)
                if len(set(members)) != len(members):
                    raise PolicyError(f"{where}: a member is listed twice")
                for member in members:
                    if member == NONE or (member not in witnesses and member not in groups):
                        raise PolicyError(f"{where}: {member!r} is not defined on an earlier line")
                threshold = _threshold(spec, len(members), where)
                groups[name] = Group(name, threshold, members)
            elif keyword == "quorum":
                if len(args) != 1:
                    raise PolicyError(f"{where}: expected 'quorum <name>'")
                if quorum is not None:
                    raise PolicyError(f"{where}: a policy has exactly one quorum line")
                if args[0] != NONE and args[0] not in witnesses and args[0] not in groups:
                    raise PolicyError(f"{where}: {args[0]!r} is not defined on an earlier line")
                quorum = args[0]
            else:
                raise PolicyError(f"{where}: unknown keyword {keyword!r}")
            if len(logs) > _MAX_ENTRIES or len(witnesses) > _MAX_ENTRIES:
                raise PolicyError(f"{where}: more than {_MAX_ENTRIES} logs or witnesses")
        if quorum is None:
            raise PolicyError(f"{source}: the policy has no quorum line")
        return cls(tuple(logs), tuple(witnesses.values()), tuple(groups.values()), quorum)

    @staticmethod
    def _check_new_name(
        name: str, witnesses: Mapping[str, object], groups: Mapping[str, object], where: str
    ) -> None:
        if name == NONE or name in witnesses or name in groups:
            raise PolicyError(f"{where}: the name {name!r} is reserved or already defined")

    def encode(self) -> str:
        """The policy as a file; `parse` gives an equal policy back."""
        lines = [f"log {verifier}" + (f" {url}" if url else "") for verifier, url in self.logs]
        lines += [
            f"witness {w.name} {w.key}" + (f" {w.url}" if w.url else "") for w in self.witnesses
        ]
        lines += [f"group {g.name} {_spec(g)} {' '.join(g.members)}" for g in self.groups]
        lines.append(f"quorum {self.quorum}")
        return "\n".join(lines) + "\n"

    def satisfied_by(self, cosigned: Sequence[str] | set[str]) -> bool:
        """Whether witnesses named ``cosigned`` (policy names) meet the quorum."""
        names = set(cosigned)
        groups = {group.name: group for group in self.groups}

        def met(name: str) -> bool:
            if name == NONE:
                return True
            group = groups.get(name)
            if group is None:
                return name in names
            return sum(met(member) for member in group.members) >= group.threshold

        return met(self.quorum)

    def verify(self, note: str, *, origin: str | None = None) -> tuple[Checkpoint, set[str]]:
        """Check ``note`` is signed by a listed log and cosigned to the quorum.

        Returns the checkpoint and the names of the witnesses whose cosignature
        verified; raises `PolicyError`, `QuorumNotMetError`, a note, checkpoint
        or cosignature error.
        """
        checkpoint: Checkpoint | None = None
        failures = []
        for verifier, _ in self.logs:
            try:
                checkpoint = Checkpoint.open(note, verifier, origin=origin)
                break
            except (NoteError, CheckpointError) as exc:
                failures.append(str(exc))
        if checkpoint is None:
            raise PolicyError(
                "the checkpoint is not signed by any log of the policy"
                + (f": {'; '.join(failures)}" if failures else " (it lists none)")
            )
        by_key = {(w.key.name, w.key.key_id): w.name for w in self.witnesses}
        try:
            found = verified_cosignatures(note, [w.key for w in self.witnesses])
        except CosignatureError as exc:
            raise QuorumNotMetError(str(exc)) from None
        names = {by_key[(v.key.name, v.key.key_id)] for v in found.values()}
        if not self.satisfied_by(names):
            raise QuorumNotMetError(
                f"checkpoint of size {checkpoint.size} is cosigned by {sorted(names) or 'nobody'}"
                f", which does not meet the quorum {self.quorum!r} ({self.describe_quorum()})"
            )
        return checkpoint, names

    def describe_quorum(self) -> str:
        groups = {group.name: group for group in self.groups}
        group = groups.get(self.quorum)
        if group is None:
            return "no cosignature needed" if self.quorum == NONE else f"witness {self.quorum}"
        return f"{group.threshold} of {', '.join(group.members)}"


def _threshold(spec: str, members: int, where: str) -> int:
    if spec == "all":
        return members
    if spec == "any":
        return 1
    if not spec.isdigit() or spec != str(int(spec)):
        raise PolicyError(f"{where}: threshold {spec!r} is not all, any or a decimal")
    value = int(spec)
    if not 1 <= value <= members:
        raise PolicyError(f"{where}: threshold {value} is not between 1 and {members}")
    return value


def _spec(group: Group) -> str:
    if group.threshold == len(group.members) and len(group.members) > 1:
        return "all"
    return str(group.threshold)

"""Published sources are bounded and hold only specs and Rego, checked before any write."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from nexus_control.authoring.sources import SourcesError, pack_sources, unpack_sources
from tests.conftest import GATEWAY


def tarball(members: list[tarfile.TarInfo], contents: dict[str, bytes] | None = None) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for info in members:
            body = (contents or {}).get(info.name)
            tar.addfile(info, io.BytesIO(body) if body is not None else None)
    return gzip.compress(raw.getvalue())


def descriptor() -> tuple[tarfile.TarInfo, bytes]:
    body = b'{"format": 1, "overlays": 0}'
    info = tarfile.TarInfo("nexus-sources.json")
    info.size = len(body)
    return info, body


def test_sources_claiming_a_huge_member_are_refused_unread(tmp_path: Path) -> None:
    meta, body = descriptor()
    # A header that claims 2 GiB, with no bytes behind it: refused from the header.
    huge = tarfile.TarInfo("bundle/tenants.yaml")
    huge.size = 2 * 1024**3
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.addfile(meta, io.BytesIO(body))
        tar.addfile(huge)
    archive = gzip.compress(raw.getvalue())
    assert len(archive) < 10_000
    with pytest.raises(SourcesError, match="limit"):
        unpack_sources(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists(), "nothing is written before every member is checked"


def test_a_gzip_bomb_is_cut_at_the_limit(tmp_path: Path) -> None:
    raw = io.BytesIO()
    chunk = b"\0" * (1024 * 1024)
    with gzip.GzipFile(fileobj=raw, mode="wb") as out:
        for _ in range(300):  # 300 MiB of zeros, a few hundred KiB compressed
            out.write(chunk)
    bomb = raw.getvalue()
    with pytest.raises(SourcesError):
        unpack_sources(bomb, tmp_path / "out")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("../escape.yaml", tarfile.REGTYPE),
        ("/bundle/abs.yaml", tarfile.REGTYPE),
        ("bundle/link.yaml", tarfile.SYMTYPE),
        ("bundle/hard.yaml", tarfile.LNKTYPE),
        ("policy/x.sh", tarfile.REGTYPE),
        ("bundle/.signatures.json", tarfile.REGTYPE),
    ],
)
def test_author_cannot_unpack_outside_specs_and_rego(
    tmp_path: Path, name: str, kind: bytes
) -> None:
    meta, body = descriptor()
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = "/etc/passwd" if kind != tarfile.REGTYPE else ""
    member.size = 4 if kind == tarfile.REGTYPE else 0
    archive = tarball([meta, member], {meta.name: body, name: b"evil"})
    with pytest.raises(SourcesError):
        unpack_sources(archive, tmp_path / "out")
    assert not (tmp_path / "escape.yaml").exists()


def test_packed_sources_unpack_to_the_same_files(tmp_path: Path) -> None:
    unpacked = unpack_sources(pack_sources(GATEWAY), tmp_path / "src")
    assert (unpacked.bundle_dir / "bundle.yaml").read_bytes() == (
        GATEWAY / "bundle.yaml"
    ).read_bytes()
    assert (unpacked.policy_dir / "nexus" / "tools.rego").exists()
    assert pack_sources(GATEWAY) == pack_sources(GATEWAY), "deterministic"

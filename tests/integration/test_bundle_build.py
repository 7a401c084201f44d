"""`nexus-policy build` with the real OPA: reproducible, signed, and all-or-nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus_control.access.signing_keys import KeyPaths, SigningKeyError
from nexus_control.authoring.bundle import BuildError, BuildOptions, build_bundle, read_bundle
from nexus_control.authoring.loader import SpecError
from nexus_control.authoring.opa import Opa
from tests.conftest import BundleFactory

pytestmark = pytest.mark.opa


def options(keys: KeyPaths, dist: Path, **overrides: object) -> BuildOptions:
    values: dict[str, object] = {
        "signing_key": keys.signing,
        "key_id": "test-key",
        "approval_jwks": keys.approval_jwks,
        "dist_dir": dist,
    }
    values.update(overrides)
    return BuildOptions(**values)  # type: ignore[arg-type]


def test_build_is_reproducible_byte_for_byte(
    make_bundle: BundleFactory, opa: Opa, session_keys: KeyPaths, tmp_path: Path
) -> None:
    root = make_bundle()
    first = build_bundle(root, opa, options(session_keys, tmp_path / "a"))
    second = build_bundle(root, opa, options(session_keys, tmp_path / "b"))
    assert first.revision == second.revision
    assert first.path.name == f"gateway-{first.revision}.tar.gz"
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.tests_run > 0


def test_bundle_has_manifest_roots_revision_and_signature(
    make_bundle: BundleFactory, opa: Opa, session_keys: KeyPaths, tmp_path: Path
) -> None:
    built = build_bundle(make_bundle(), opa, options(session_keys, tmp_path))
    contents = read_bundle(built.path)
    assert contents.manifest["revision"] == built.revision
    assert contents.manifest["roots"] == ["nexus", "system/log"]
    assert contents.manifest["metadata"]["bundle"] == "gateway"
    assert "git_commit" in contents.manifest["metadata"]
    assert contents.signatures is not None and contents.signatures["signatures"]
    assert "tenants" in contents.data["nexus"]["config"]
    assert not any(name.endswith("_test.rego") for name in contents.modules)
    assert any(name.endswith("system/log/mask.rego") for name in contents.modules)


def test_a_spec_change_changes_the_revision(
    make_bundle: BundleFactory, opa: Opa, session_keys: KeyPaths, tmp_path: Path
) -> None:
    base = make_bundle()
    # A renamed region, renamed wherever the bundle names it (regions, provider endpoints).
    changed = make_bundle(
        **{
            name: (base / name).read_text().replace("us-west-2", "us-west-1")
            for name in ("regions.yaml", "providers.yaml")
        }
    )
    a = build_bundle(base, opa, options(session_keys, tmp_path / "a"))
    b = build_bundle(changed, opa, options(session_keys, tmp_path / "b"))
    assert a.revision != b.revision


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"tenants.yaml": "tenants: [\n"}, "invalid YAML"),
        ({"rbac.yaml": "apiVersion: policy.nexus.ai/v1\nkind: RBAC\nextra: 1\n"}, "unknown key"),
        ({"tenants.yaml": None}, "defines no tenants"),
    ],
)
def test_spec_problems_build_nothing(
    make_bundle: BundleFactory,
    opa: Opa,
    session_keys: KeyPaths,
    tmp_path: Path,
    files: dict[str, str | None],
    expected: str,
) -> None:
    dist = tmp_path / "dist"
    with pytest.raises(SpecError, match=expected):
        build_bundle(make_bundle(**files), opa, options(session_keys, dist))
    assert not dist.exists() or not any(dist.iterdir())


def test_rego_syntax_error_reports_opa_location_and_builds_nothing(
    make_bundle: BundleFactory,
    opa: Opa,
    session_keys: KeyPaths,
    tmp_path: Path,
    repo: Path,
) -> None:
    import shutil

    rego = tmp_path / "rego"
    shutil.copytree(repo / "rego", rego)
    broken = rego / "nexus" / "rbac.rego"
    broken.write_text(broken.read_text() + "\nbroken if {\n  input.x ==\n}\n")
    root = make_bundle()
    (root / "bundle.yaml").write_text(
        f"apiVersion: policy.nexus.ai/v1\nkind: Bundle\nname: gateway\npolicy: {rego}\n"
    )
    dist = tmp_path / "dist"
    with pytest.raises(BuildError) as info:
        build_bundle(root, opa, options(session_keys, dist))
    assert any("rbac.rego" in p.file and p.line > 0 for p in info.value.problems), info.value
    assert not dist.exists() or not any(dist.iterdir())


def test_failing_bundle_test_builds_nothing(
    make_bundle: BundleFactory, opa: Opa, session_keys: KeyPaths, tmp_path: Path
) -> None:
    root = make_bundle()
    (root / "tests").mkdir()
    (root / "tests" / "fails_test.rego").write_text(
        "package nexus.bundle_test\n\ntest_acme_is_missing if {\n"
        "\tnot data.nexus.config.tenants.acme\n}\n"
    )
    dist = tmp_path / "dist"
    with pytest.raises(BuildError, match=r"1 of .* Rego tests failed"):
        build_bundle(root, opa, options(session_keys, dist))
    assert not dist.exists() or not any(dist.iterdir())


def test_bundle_tests_run_against_the_compiled_data(
    make_bundle: BundleFactory, opa: Opa, session_keys: KeyPaths, tmp_path: Path
) -> None:
    root = make_bundle()
    (root / "tests").mkdir()
    (root / "tests" / "acme_test.rego").write_text(
        "package nexus.bundle_test\n\ntest_acme_is_eu if {\n"
        '\tdata.nexus.config.tenants.acme.jurisdiction == "eu"\n}\n'
    )
    built = build_bundle(root, opa, options(session_keys, tmp_path))
    assert built.path.exists()


@pytest.mark.parametrize("which", ["missing", "garbage", "wrong-type"])
def test_unusable_signing_key_builds_nothing(
    make_bundle: BundleFactory,
    opa: Opa,
    session_keys: KeyPaths,
    tmp_path: Path,
    which: str,
) -> None:
    key = tmp_path / "key.pem"
    if which == "garbage":
        key.write_text("not a key")
    elif which == "wrong-type":
        key.write_bytes(session_keys.approval.read_bytes())
    dist = tmp_path / "dist"
    with pytest.raises(SigningKeyError):
        build_bundle(make_bundle(), opa, options(session_keys, dist, signing_key=key))
    assert not dist.exists()

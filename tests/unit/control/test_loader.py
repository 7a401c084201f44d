"""Loading specs: every problem reported at once, each with file:line:column."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nexus_control.authoring.loader import SpecError, load_bundle
from tests.conftest import BundleFactory

LOCATION = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+)$")


def problems_of(root: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_bundle(root)
    return [str(p) for p in info.value.problems]


def test_example_bundle_loads(make_bundle: BundleFactory) -> None:
    sources = load_bundle(make_bundle())
    assert sources.name == "gateway"
    kinds = {type(d.spec).__name__ for d in sources.documents}
    assert kinds >= {"TenantsSpec", "RbacSpec", "ToolsSpec", "PromptsSpec", "RetentionSpec"}


def test_every_problem_names_file_line_and_column(make_bundle: BundleFactory) -> None:
    root = make_bundle(
        **{
            "tenants.yaml": (
                "apiVersion: policy.nexus.ai/v1\n"
                "kind: Tenants\n"
                "tenants:\n"
                "  - id: acme\n"
                "    name: Acme\n"
                "    plan: platinum\n"
                "    colour: red\n"
                "    budget:\n"
                "      monthlyCapUsd: -5\n"
            ),
            "models.yaml": "apiVersion: policy.nexus.ai/v1\nkind: Models\nmodels: [\n",
        }
    )
    problems = problems_of(root)
    for text in problems:
        assert LOCATION.match(text), text
    joined = "\n".join(problems)
    assert re.search(r"tenants\.yaml:6:11: tenants\.0\.plan: Input should be", joined)
    assert re.search(r"tenants\.yaml:7:5: tenants\.0\.colour: unknown key", joined)
    assert re.search(
        r"tenants\.yaml:9:22: tenants\.0\.budget\.monthlyCapUsd: .*greater than 0", joined
    )
    assert re.search(r"models\.yaml:\d+:\d+: invalid YAML", joined)


def test_duplicate_yaml_keys_are_errors(make_bundle: BundleFactory) -> None:
    root = make_bundle(
        **{
            "regions.yaml": (
                "apiVersion: policy.nexus.ai/v1\nkind: Regions\nregions:\n"
                "  - id: eu-west-1\n    jurisdiction: eu\n    jurisdiction: us\n"
            )
        }
    )
    assert any("regions.yaml:6:5: duplicate key 'jurisdiction'" in p for p in problems_of(root))


def test_unquoted_number_where_text_is_expected_says_to_quote(make_bundle: BundleFactory) -> None:
    text = (
        (Path(make_bundle()) / "prompts.yaml")
        .read_text()
        .replace('defaultVersion: "3"', "defaultVersion: 3")
    )
    root = make_bundle(**{"prompts.yaml": text})
    assert any("put the value in quotes" in p for p in problems_of(root))


def test_unknown_kind_and_wrong_api_version(make_bundle: BundleFactory) -> None:
    root = make_bundle(
        **{
            "extra.yaml": "apiVersion: policy.nexus.ai/v1\nkind: Budgets\n",
            "more.yaml": "apiVersion: v0\nkind: Tenants\n",
        }
    )
    joined = "\n".join(problems_of(root))
    assert "extra.yaml:2:7: unknown kind 'Budgets'" in joined
    assert "more.yaml:1:13: apiVersion must be 'policy.nexus.ai/v1'" in joined


def test_missing_bundle_yaml_and_missing_directory(
    make_bundle: BundleFactory, tmp_path: Path
) -> None:
    root = make_bundle(**{"bundle.yaml": None})
    assert any("missing bundle.yaml" in p for p in problems_of(root))
    assert any("does not exist" in p for p in problems_of(tmp_path / "nope"))


def test_missing_policy_directory(make_bundle: BundleFactory) -> None:
    root = make_bundle(
        **{
            "bundle.yaml": (
                "apiVersion: policy.nexus.ai/v1\nkind: Bundle\nname: gateway\npolicy: ./nowhere\n"
            )
        }
    )
    assert any("bundle.yaml:4:9: policy directory" in p for p in problems_of(root))


def test_two_documents_in_one_file_are_refused(make_bundle: BundleFactory) -> None:
    root = make_bundle(
        **{"models.yaml": "apiVersion: policy.nexus.ai/v1\nkind: Models\n---\na: 1\n"}
    )
    assert any("exactly one YAML document" in p for p in problems_of(root))


def test_overlay_adds_documents(make_bundle: BundleFactory, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "keys.yaml").write_text(
        "apiVersion: policy.nexus.ai/v1\nkind: RBAC\nbindings:\n"
        "  - tenant: acme\n    role: chat-user\n    services: [demo]\n"
    )
    sources = load_bundle(make_bundle(), [overlay])
    assert any(d.path.parent == overlay for d in sources.documents)

"""A rollout's diff in pages, on SQLite and on a real PostgreSQL, and the backfill of 0010.

Pages walk every change exactly once, widening changes first and each effect
in the diff's order, forwards and backwards, filtered or not; a malformed
page is refused saying which field; an unknown rollout is not found; and
migration 0010 gives the rollouts that existed before it the same pages a new
rollout gets.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from nexus_control.authoring.diff import Change, Effect, ModuleChange, PolicyDiff
from nexus_control.rollout import changes, engine
from nexus_control.rollout.changes import DiffPageError, PageQuery, diff_page, parse_query
from nexus_control.rollout.errors import RolloutNotFoundError
from nexus_control.rollout.fleet import Fleet
from nexus_control.store.database import control_database
from nexus_control.store.tables import BundleRevision
from nexus_runtime.database import Database

NOW = datetime(2026, 12, 3, tzinfo=UTC)
FLEET = Fleet.single(["eu-west-1"])
EFFECTS = (Effect.NEUTRAL, Effect.WIDENS, Effect.NARROWS, Effect.WIDENS, Effect.NEUTRAL)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cp.db'}"
    pg_url: str = request.getfixturevalue("pg_url")
    return pg_url


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    database = control_database(url)
    database.migrate()
    yield database
    database.dispose()


def _diff(count: int) -> PolicyDiff:
    """``count`` changes of mixed effects, sorted as `diff_configs` sorts them, and a module."""
    made = [
        Change(
            area=("grant", "tenant", "tool")[n % 3],
            subject=f"s{n:05d}",
            detail=f"change {n}",
            effect=EFFECTS[n % len(EFFECTS)],
        )
        for n in range(count)
    ]
    module = ModuleChange(path="policy/x.rego", package="nexus.x", status="added", diff="+x")
    return PolicyDiff(
        changes=tuple(sorted(made, key=lambda c: (c.area, c.subject, c.detail))),
        modules=(module,),
    )


def _revision(db: Database, name: str) -> None:
    with db.session() as session:
        session.add(
            BundleRevision(
                revision=name, bundle="nexus", sha256="x", size=0, manifest={}, config={},
                author="alice", published_at=NOW,
            )
        )  # fmt: skip


def _open(db: Database, diff: PolicyDiff, revision: str = "r1") -> int:
    _revision(db, revision)
    with db.session() as session:
        rollout, _ = engine.start(
            session, FLEET, revision, author="alice", author_id="p-alice",
            diff=diff.model_dump(mode="json"), needs_approval=True,
        )  # fmt: skip
        return rollout.id


def _page_order(diff: PolicyDiff, effect: Effect | None = None) -> list[Change]:
    """What the pages must list: widening, narrowing, neutral, each in the diff's order."""
    order = (Effect.WIDENS, Effect.NARROWS, Effect.NEUTRAL)
    return [c for e in order if effect in (None, e) for c in diff.changes if c.effect is e]


def _walk(db: Database, rollout_id: int, query: PageQuery) -> list[tuple[int, Change]]:
    seen: list[tuple[int, Change]] = []
    with db.session() as session:
        page = diff_page(session, rollout_id, query)
        while True:
            assert len(page.changes) <= query.limit
            assert page.position == len(seen)
            seen += page.changes
            if page.next_after is None:
                break
            page = diff_page(
                session,
                rollout_id,
                PageQuery(query.effect, after=page.next_after, limit=query.limit),
            )
    return seen


def test_pages_list_every_change_once_widening_first_forwards_and_backwards(db: Database) -> None:
    diff = _diff(53)
    rollout_id = _open(db, diff)
    walked = _walk(db, rollout_id, PageQuery(limit=7))
    assert [c for _, c in walked] == _page_order(diff)
    assert [n for n, _ in walked] == list(range(53)), "ordinals are dense, in page order"
    with db.session() as session:
        last = diff_page(session, rollout_id, PageQuery(after=walked[-8][0], limit=7))
        assert last.changes == tuple(walked[-7:]) and last.next_after is None
        back: list[tuple[int, Change]] = []
        page = last
        while page.previous_before is not None:
            page = diff_page(session, rollout_id, PageQuery(before=page.previous_before, limit=7))
            back = list(page.changes) + back
        assert back + list(last.changes) == walked, "previous links lead back to the first page"
        first = diff_page(session, rollout_id)
        assert first.previous_before is None and first.of == 53
        assert first.summary.counts == {e: sum(c.effect is e for c in diff.changes) for e in Effect}
        assert first.summary.by_area["tool"] == {
            e.value: n
            for e in Effect
            if (n := sum(c.effect is e and c.area == "tool" for c in diff.changes))
        }
        assert first.summary.modules == diff.modules


@pytest.mark.parametrize("effect", list(Effect))
def test_a_filtered_walk_lists_exactly_that_effect(db: Database, effect: Effect) -> None:
    diff = _diff(41)
    rollout_id = _open(db, diff)
    walked = _walk(db, rollout_id, PageQuery(effect=effect, limit=4))
    assert [c for _, c in walked] == _page_order(diff, effect)
    with db.session() as session:
        page = diff_page(session, rollout_id, PageQuery(effect=effect, limit=4))
        assert page.of == len(walked)
        beyond = diff_page(session, rollout_id, PageQuery(effect=effect, after=10_000))
        assert beyond.changes == () and beyond.next_after is None
        assert beyond.previous_before is not None, "a cursor past the end still leads back"


def test_an_empty_diff_has_one_empty_page(db: Database) -> None:
    rollout_id = _open(db, PolicyDiff())
    with db.session() as session:
        page = diff_page(session, rollout_id)
    assert page.changes == () and page.of == 0
    assert page.next_after is None and page.previous_before is None


def test_an_unknown_rollout_is_not_found(db: Database) -> None:
    with db.session() as session, pytest.raises(RolloutNotFoundError, match="no rollout 4242"):
        diff_page(session, 4242)


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"effect": "wider"}, "effect: 'wider' is not one of widens, narrows, neutral"),
        ({"after": "abc"}, "after: 'abc' is not a whole number"),
        ({"after": "-1"}, "after: '-1' is not a whole number"),
        ({"before": "1e3"}, "before: '1e3' is not a whole number"),
        ({"after": "99999999999"}, "after: '99999999999' is not a whole number"),
        ({"after": "2147483648"}, "after: 2147483648 is not a whole number from 0 to"),
        ({"after": "٣"}, "after: '٣' is not a whole number"),
        ({"after": "1", "before": "5"}, "give one cursor, not both"),
        ({"limit": "0"}, "limit: 0 is not a whole number from 1 to 500"),
        ({"limit": "501"}, "limit: 501 is not a whole number from 1 to 500"),
    ],
)
def test_a_malformed_page_is_refused_naming_the_field(fields: dict[str, str], why: str) -> None:
    with pytest.raises(DiffPageError) as refused:
        parse_query(**fields)
    assert why in str(refused.value)


def test_empty_fields_are_unset_and_good_ones_parse() -> None:
    assert parse_query("", "", "", "") == PageQuery()
    assert parse_query("narrows", "12", None, "50") == PageQuery(Effect.NARROWS, 12, None, 50)


def test_migration_0010_gives_existing_rollouts_the_pages_a_new_one_gets(url: str) -> None:
    diff = _diff(37)
    db = control_database(url)
    config = db.alembic_config()
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0009_gateway_scopes")
        connection.execute(
            text(
                "INSERT INTO bundle_revisions (revision, bundle, sha256, size, manifest, config,"
                " author, published_at) VALUES ('old', 'nexus', 'x', 0, '{}', '{}', 'alice', :at)"
            ),
            {"at": NOW},
        )
        for body in (diff.model_dump_json(), "{}"):
            connection.execute(
                text(
                    "INSERT INTO rollouts (bundle, revision, state, wave, needs_approval, diff,"
                    " created_by, created_at, updated_at) VALUES ('nexus', 'old', 'completed',"
                    " 0, :yes, :diff, 'alice', :at, :at)"
                ),
                {"at": NOW, "diff": body, "yes": True},
            )
    db.migrate()
    fresh = _open(db, diff, "new")
    try:
        with db.session() as session:
            for query in (PageQuery(limit=5), PageQuery(Effect.NEUTRAL, after=20, limit=3)):
                old_page, new_page = diff_page(session, 1, query), diff_page(session, fresh, query)
                assert old_page.changes == new_page.changes
                assert old_page.summary == new_page.summary
                assert (old_page.next_after, old_page.previous_before) == (
                    new_page.next_after,
                    new_page.previous_before,
                )
            assert _walk(db, 1, PageQuery(limit=10)) == _walk(db, fresh, PageQuery(limit=10))
            empty = changes.summary(session, 2)
            assert empty.total == 0 and empty.modules == ()
    finally:
        db.dispose()

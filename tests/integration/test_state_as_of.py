"""``as_of`` in the state document, and the trailing rebuild that moves it on.

Enforcers release a request's budget hold once a state document read after the request
ended (plus a grace) is evaluated (data-plane/opa/README.md), so ``as_of`` must be taken
before spend is read; it is no reason to republish by itself, except in the one trailing
rebuild ``NEXUS_STATE_REFRESH_S`` after the last usage, which lets holds go even when
nothing else changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nexus_control.api.app import create_control_plane
from nexus_control.authoring.opa import Opa
from nexus_control.budgets import usage
from nexus_control.budgets.spend import InProcessSpendStore, SpendTotals
from nexus_control.budgets.state import current_state
from nexus_control.plane import ControlPlane
from nexus_control.settings import ControlSettings

REFRESH_S = 0.4
DEBOUNCE_S = 0.05


@pytest.fixture
def plane(tmp_path: Path, opa: Opa) -> Iterator[ControlPlane]:
    settings = ControlSettings(
        database_url=f"sqlite:///{tmp_path / 'cp.db'}",
        keys_dir=tmp_path / "keys",
        regions=["eu-west-1"],
        state_debounce_s=DEBOUNCE_S,
        state_refresh_s=REFRESH_S,
    )
    control = create_control_plane(settings, opa=opa)
    yield control
    control.close()
    control.db.dispose()


class _ClockedStore(InProcessSpendStore):
    """Notes the clock when spend is read."""

    read_at: float = 0.0

    def window_totals(self, windows: Mapping[str, str]) -> dict[str, SpendTotals]:
        self.read_at = time.time()
        return super().window_totals(windows)


def _published(plane: ControlPlane) -> tuple[str, int]:
    with plane.db.session() as session:
        row = current_state(session)
        assert row is not None
        return row.revision, int(row.data["as_of"])


def test_as_of_is_taken_before_spend_is_read(plane: ControlPlane) -> None:
    store = _ClockedStore()
    before = time.time()
    with plane.db.session() as session:
        document = usage.state_document(session, store, None, "2026-11")
    assert before * 1000 - 1 <= document["as_of"] <= store.read_at * 1000


def test_as_of_is_the_given_moment_in_unix_milliseconds(plane: ControlPlane) -> None:
    moment = datetime(2026, 11, 20, 10, 0, 0, 123_000, tzinfo=UTC)
    with plane.db.session() as session:
        document = usage.state_document(session, InProcessSpendStore(), None, "2026-11", moment)
    assert document["as_of"] == 1_795_168_800_123


def test_a_rebuild_that_changes_only_as_of_does_not_republish(plane: ControlPlane) -> None:
    assert plane.budgets.rebuild()
    first = _published(plane)
    time.sleep(0.01)
    assert not plane.budgets.rebuild()
    assert _published(plane) == first


def test_a_refresh_republishes_with_a_later_as_of(plane: ControlPlane) -> None:
    assert plane.budgets.rebuild()
    revision, as_of = _published(plane)
    time.sleep(0.01)
    assert plane.budgets.rebuild(refresh=True)
    new_revision, new_as_of = _published(plane)
    assert new_revision != revision
    assert new_as_of > as_of


def test_usage_is_followed_by_one_trailing_rebuild_with_a_new_as_of(plane: ControlPlane) -> None:
    assert plane.budgets.rebuild()
    revisions: list[tuple[str, int]] = [_published(plane)]

    async def scenario() -> None:
        stop = asyncio.Event()
        runner = asyncio.create_task(plane.budgets.run(stop))
        plane.budgets.mark_dirty()  # a usage report was counted
        # The debounced rebuild finds nothing new; the trailing one moves as_of on.
        deadline = time.monotonic() + 10 * (REFRESH_S + DEBOUNCE_S) + 5
        while _published(plane) == revisions[0] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        revisions.append(_published(plane))
        # Only one: without further usage, nothing moves as_of again.
        await asyncio.sleep(3 * (REFRESH_S + DEBOUNCE_S))
        revisions.append(_published(plane))
        stop.set()
        await runner

    asyncio.run(scenario())
    assert revisions[1] != revisions[0]
    assert revisions[1][1] > revisions[0][1]
    assert revisions[2] == revisions[1]


def test_the_trailing_rebuild_can_be_turned_off(tmp_path: Path, opa: Opa) -> None:
    settings = ControlSettings(
        database_url=f"sqlite:///{tmp_path / 'cp.db'}",
        keys_dir=tmp_path / "keys",
        regions=["eu-west-1"],
        state_debounce_s=DEBOUNCE_S,
        state_refresh_s=0,
    )
    control = create_control_plane(settings, opa=opa)
    try:
        assert control.budgets.rebuild()
        first = _published(control)

        async def scenario() -> None:
            stop = asyncio.Event()
            runner = asyncio.create_task(control.budgets.run(stop))
            control.budgets.mark_dirty()
            await asyncio.sleep(1.0)
            stop.set()
            await runner

        asyncio.run(scenario())
        assert _published(control) == first
    finally:
        control.close()
        control.db.dispose()

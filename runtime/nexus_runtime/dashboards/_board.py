"""The few shapes every dashboard is made of, over the Grafana Foundation SDK's builders.

Every panel and query reads the Prometheus data source the dashboard's ``datasource``
variable names: no data source uid is written into a dashboard, so one JSON file loads into
any Grafana. Panel ids are numbered in the order panels are added and the grid is laid out
by the SDK from widths and heights, so the same code always renders the same JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from grafana_foundation_sdk.builders import dashboard as board
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions, StackingConfig
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import StackingMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

__all__ = [
    "DATASOURCE",
    "DATASOURCE_VARIABLE",
    "Board",
    "Query",
    "Variable",
    "heatmap_panel",
    "stat_panel",
    "table_panel",
    "timeseries_panel",
]

DATASOURCE_VARIABLE = "datasource"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VARIABLE}}}")
"""Where every query goes: the Prometheus the viewer picks in the ``datasource`` variable."""
ALL_VALUE = ".*"
"""A label variable's "All": a regex, so queries select it with ``=~``."""
REFRESH = "30s"
TIME_FROM = "now-6h"
PANEL_WIDTH = 12
PANEL_HEIGHT = 8
STAT_WIDTH = 6
STAT_HEIGHT = 4
TAGS = ["nexus-policy"]


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel. ``legend`` is Grafana's legend template."""

    expr: str
    legend: str = "__auto"
    instant: bool = False
    format: PromQueryFormat = PromQueryFormat.TIME_SERIES


@dataclass(frozen=True)
class Variable:
    """A label the viewer filters by: values from ``label_values(metric, label)``."""

    label: str
    metric: str
    title: str


def _target(query: Query, ref_id: str) -> prometheus.Dataquery:
    target = (
        prometheus.Dataquery()
        .expr(query.expr)
        .legend_format(query.legend)
        .ref_id(ref_id)
        .datasource(DATASOURCE)
    )
    target = target.instant() if query.instant else target.range()
    if query.format is not PromQueryFormat.TIME_SERIES:
        target = target.format(query.format)
    return target


def _ref_id(n: int) -> str:
    return chr(ord("A") + n)


def timeseries_panel(
    title: str,
    description: str,
    *queries: Query,
    unit: str = "short",
    stacked: bool = False,
    width: int = PANEL_WIDTH,
    height: int = PANEL_HEIGHT,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
    )
    if stacked:
        panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(30)
    for n, query in enumerate(queries):
        panel = panel.with_target(_target(query, _ref_id(n)))
    return panel


def stat_panel(
    title: str,
    description: str,
    *queries: Query,
    unit: str = "short",
    mappings: dict[str, tuple[str, str]] | None = None,
    width: int = STAT_WIDTH,
    height: int = STAT_HEIGHT,
) -> stat.Panel:
    """A current value; ``mappings`` turns values into (text, colour), e.g. 1 → broken."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
    )
    if mappings:
        panel = panel.mappings(
            [
                model.ValueMap(
                    {
                        value: model.ValueMappingResult(text=text, color=colour, index=index)
                        for index, (value, (text, colour)) in enumerate(sorted(mappings.items()))
                    }
                )
            ]
        )
    for n, query in enumerate(queries):
        panel = panel.with_target(_target(query, _ref_id(n)))
    return panel


def table_panel(
    title: str,
    description: str,
    *queries: Query,
    hidden: tuple[str, ...] = (),
    width: int = 24,
    height: int = PANEL_HEIGHT,
) -> table.Panel:
    """Instant queries joined into one row per series; ``hidden`` columns are dropped."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            model.DataTransformerConfig(
                id_val="organize",
                options={"excludeByName": dict.fromkeys(hidden, True)},
            )
        )
    )
    for n, query in enumerate(queries):
        panel = panel.with_target(_target(query, _ref_id(n)))
    return panel


def heatmap_panel(
    title: str,
    description: str,
    buckets: Query,
    *,
    unit: str,
    width: int = PANEL_WIDTH,
    height: int = PANEL_HEIGHT,
) -> heatmap.Panel:
    """A histogram's buckets over time; ``buckets`` sums the ``_bucket`` series by ``le``."""
    return (
        heatmap.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit(unit))
        .with_target(_target(replace(buckets, format=PromQueryFormat.HEATMAP), _ref_id(0)))
    )


class Board:
    """One dashboard: its variables, then rows of panels, numbered as they are added."""

    def __init__(
        self, uid: str, title: str, description: str, variables: tuple[Variable, ...] = ()
    ) -> None:
        self._next_id = 1
        self._builder = (
            board.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags(TAGS)
            .refresh(REFRESH)
            .time(TIME_FROM, "now")
            .timezone("browser")
            .tooltip(model.DashboardCursorSync.CROSSHAIR)
            .with_variable(
                board.DatasourceVariable(DATASOURCE_VARIABLE).label("Prometheus").type("prometheus")
            )
        )
        for variable in variables:
            self._builder = self._builder.with_variable(
                board.QueryVariable(variable.label)
                .label(variable.title)
                .datasource(DATASOURCE)
                .query(f"label_values({variable.metric}, {variable.label})")
                .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
                .sort(model.VariableSort.ALPHABETICAL_ASC)
                .multi(True)
                .include_all(True)
                .all_value(ALL_VALUE)
                .current(model.VariableOption(selected=True, text="All", value="$__all"))
            )

    def _id(self) -> int:
        taken = self._next_id
        self._next_id += 1
        return taken

    def row(self, title: str) -> Board:
        self._builder = self._builder.with_row(board.Row(title).id(self._id()))
        return self

    def panel(self, panel: timeseries.Panel | stat.Panel | table.Panel | heatmap.Panel) -> Board:
        self._builder = self._builder.with_panel(panel.id(self._id()))
        return self

    def render(self) -> str:
        """The dashboard's JSON: keys sorted, two-space indent, one trailing newline."""
        built = self._builder.build()
        return json.dumps(built, cls=JSONEncoder, sort_keys=True, indent=2) + "\n"

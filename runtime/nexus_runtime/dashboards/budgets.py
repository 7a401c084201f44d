"""Budgets and spend: which tenants are near or past their cap, and what the platform spends.

Series from the control plane's ``/metrics``. Spend is exported per tenant (only for the
tenants in ``NEXUS_METRIC_TENANTS``, to bound the labels) and for the platform as a whole,
each also by model and by feature (the biggest 32 values, the rest as ``other``); the
console's budgets page breaks every tenant's spend down the same way.
"""

from __future__ import annotations

from nexus_runtime.dashboards._board import (
    Board,
    Query,
    Variable,
    stat_panel,
    timeseries_panel,
)

__all__ = ["UID", "budgets"]

UID = "nexus-budgets"
TENANT = Variable("tenant", "nexus_budget_spend_usd", "Tenant")
_TENANT = '{tenant=~"$tenant"}'


def budgets() -> Board:
    return (
        Board(
            UID,
            "NexusAI policy: budgets and spend",
            "Spend against cap this period per tenant (tenants in NEXUS_METRIC_TENANTS) and "
            "for the platform, by model and by feature, tenants by cap state, and spend "
            "anomalies.",
            (TENANT,),
        )
        .row("Platform")
        .panel(
            stat_panel(
                "Platform spend this period",
                "All tenants' spend this budget period (nexus_budget_platform_spend_usd).",
                Query("max(nexus_budget_platform_spend_usd)", "platform"),
                unit="currencyUSD",
            )
        )
        .panel(
            stat_panel(
                "Spend anomalies",
                "Anomalies on the period's latest day, by scope (nexus_spend_anomalies).",
                Query("max by (scope) (nexus_spend_anomalies)", "{{scope}}"),
                width=6,
            )
        )
        .panel(
            timeseries_panel(
                "Tenants by cap state",
                "Tenants under their soft cap, past it, at the hard cap, or disabled "
                "(nexus_budget_tenants).",
                Query("max by (state) (nexus_budget_tenants)", "{{state}}"),
                stacked=True,
            )
        )
        .panel(
            timeseries_panel(
                "Platform spend by model",
                "All tenants' spend this period per model (nexus_budget_platform_model_spend_usd).",
                Query("max by (model) (nexus_budget_platform_model_spend_usd)", "{{model}}"),
                unit="currencyUSD",
                stacked=True,
            )
        )
        .panel(
            timeseries_panel(
                "Platform spend by feature",
                "All tenants' spend this period per product feature "
                "(nexus_budget_platform_feature_spend_usd).",
                Query("max by (feature) (nexus_budget_platform_feature_spend_usd)", "{{feature}}"),
                unit="currencyUSD",
                stacked=True,
            )
        )
        .row("Tenants")
        .panel(
            timeseries_panel(
                "Spend and cap per tenant",
                "This period's spend and cap in USD (nexus_budget_spend_usd, "
                "nexus_budget_cap_usd).",
                Query(f"max by (tenant) (nexus_budget_spend_usd{_TENANT})", "{{tenant}} spend"),
                Query(f"max by (tenant) (nexus_budget_cap_usd{_TENANT})", "{{tenant}} cap"),
                unit="currencyUSD",
            )
        )
        .panel(
            timeseries_panel(
                "Spend / cap per tenant",
                "Share of the cap spent this period (nexus_budget_spend_ratio); 1 is the cap.",
                Query(f"max by (tenant) (nexus_budget_spend_ratio{_TENANT})", "{{tenant}}"),
                unit="percentunit",
            )
        )
        .panel(
            timeseries_panel(
                "Spend by model per tenant",
                "This period's spend per tenant and model (nexus_budget_model_spend_usd).",
                Query(
                    f"max by (tenant, model) (nexus_budget_model_spend_usd{_TENANT})",
                    "{{tenant}} {{model}}",
                ),
                unit="currencyUSD",
            )
        )
        .panel(
            timeseries_panel(
                "Spend by feature per tenant",
                "This period's spend per tenant and feature (nexus_budget_feature_spend_usd).",
                Query(
                    f"max by (tenant, feature) (nexus_budget_feature_spend_usd{_TENANT})",
                    "{{tenant}} {{feature}}",
                ),
                unit="currencyUSD",
            )
        )
        .panel(
            timeseries_panel(
                "Spend anomalies over time",
                "nexus_spend_anomalies by scope (platform, tenant, model, feature, hour).",
                Query("max by (scope) (nexus_spend_anomalies)", "{{scope}}"),
                width=24,
            )
        )
    )

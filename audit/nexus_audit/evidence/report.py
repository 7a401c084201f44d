"""The evidence archive's ``report.html``: the same records, for people."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from nexus_audit import storage
from nexus_audit.catalog import Control, Framework
from nexus_audit.entry import format_time
from nexus_audit.evidence.format import CHECKPOINT_FILE, RECORDS_FILE, RecordCounts

__all__ = ["REPORT_ROW_LIMIT", "report_html"]

REPORT_ROW_LIMIT = 2000
"""Records listed one by one in report.html; records.jsonl always holds all of them."""


def report_html(
    *,
    framework: Framework,
    control: Control,
    period: Mapping[str, str],
    counts: RecordCounts,
    entries: Sequence[Mapping[str, Any]],
    leaves: Sequence[storage.StoredLeaf],
    statuses: Sequence[str],
    origin: str,
    verifier: str,
    generated: datetime,
    log_size: int,
) -> bytes:
    e = html.escape
    summary = counts.as_dict()
    rows = []
    for leaf, entry, status in list(zip(leaves, entries, statuses, strict=True))[:REPORT_ROW_LIMIT]:
        found = entry.get("outcome")
        outcome: Mapping[str, Any] = found if isinstance(found, dict) else {}
        if leaf.kind == "event":
            what = f"event {entry.get('type', '')}"
            result = ""
        else:
            what = f"{entry.get('method', '')} {entry.get('http_path', '')}"
            result = ("allowed" if outcome.get("allowed") else "denied") + (
                f" ({outcome.get('http_status')})" if outcome.get("http_status") else ""
            )
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{e(str(cell))}</td>"
                for cell in (
                    leaf.index,
                    entry.get("time", ""),
                    entry.get("decision_id") or entry.get("event_id", ""),
                    entry.get("tenant", entry.get("actor", "")),
                    what,
                    result,
                    ", ".join(entry.get("controls", [])),
                    status,
                )
            )
            + "</tr>"
        )
    omitted = counts.records - len(rows)
    more = f"<p>{omitted} more record(s) are in <code>{RECORDS_FILE}</code>.</p>" if omitted else ""
    summary_rows = "".join(
        f"<tr><th>{e(label)}</th><td>{e(str(value))}</td></tr>"
        for label, value in (
            ("Records", summary["records"]),
            ("Decisions allowed", summary["allowed"]),
            ("Decisions denied", summary["denied"]),
            ("Events", summary["events"]),
            *((f"Payloads {name}", n) for name, n in summary["payloads"].items()),
        )
    )
    title = f"Evidence for {control.qualified_id}: {control.title}"
    document = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1b1b1b; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; font-size: 0.9rem; }}
code {{ font-size: 0.85rem; word-break: break-all; }}
</style>
</head>
<body>
<h1>{e(title)}</h1>
<p>{e(framework.name)} ({e(framework.edition)}), {e(control.group)}.</p>
<p>Period: {e(period["since"])} (inclusive) to {e(period["until"])} (exclusive).
Exported {e(format_time(generated))} from the audit log <code>{e(origin)}</code>,
which then held {log_size} leaves.</p>
<h2>Summary</h2>
<table>{summary_rows}</table>
<h2>Records</h2>
<table>
<tr><th>Leaf</th><th>Time</th><th>Decision / event</th><th>Tenant / actor</th><th>Request</th>
<th>Outcome</th><th>Controls</th><th>Payload</th></tr>
{"".join(rows)}
</table>
{more}
<h2>How to verify</h2>
<p>Every record has an inclusion proof in <code>proofs/</code> against the signed checkpoint
in <code>{CHECKPOINT_FILE}</code>. Check the whole archive offline with
<code>nexus-policy evidence verify ARCHIVE --key KEY</code>, where KEY is the log's public key,
obtained independently of this archive. It should equal <code>{e(verifier)}</code>.</p>
</body>
</html>
"""
    return document.encode()


# --- offline verification --------------------------------------------------------

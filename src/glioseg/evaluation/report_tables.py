"""The per-case tables of the evaluation report: every score of every case, and the volumes.

Both sort when a header is clicked (the report's script reads each cell's ``data-value``). With
viewer pages (``glioseg evaluate --viewer``) each case ID links to ``viewer/<ID>.html``, a
relative link, so the report folder can be moved or copied as a whole.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping

from glioseg.evaluation.scores import CaseScores
from glioseg.labels import REGIONS

ID_COLUMNS = ("case_id", "status")
VOLUMES_NOTE = ("Volumes in ml per region (WT = NCR + ED + ET, TC = NCR + ET, ET), predicted and true; "
                "difference = predicted - true. A missing or unreadable prediction has no predicted volume.")


def fmt(value: object) -> str:
    """A cell's text: floats to 4 significant digits (NaN blank), anything else escaped."""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return html.escape(str(value))


def _case_link(case_id: str, viewers: Mapping[str, str] | None) -> str:
    """The case ID, linked to its viewer page when it has one."""
    text = html.escape(case_id)
    href = None if viewers is None else viewers.get(case_id)
    if href is None:
        return text
    return f'<a href="{html.escape(href)}" title="open the viewer of {text}">{text}</a>'


def sortable_cell(key: str, value: object, viewers: Mapping[str, str] | None = None) -> str:
    """One ``<td>`` whose ``data-value`` is what the table sorts on (empty for NaN); case IDs link to
    their viewer page when ``viewers`` has one."""
    sort_value = "" if isinstance(value, float) and math.isnan(value) else value
    css = ' class="id"' if key in ID_COLUMNS else ""
    text = _case_link(str(value), viewers) if key == "case_id" else fmt(value)
    return f'<td{css} data-value="{html.escape(str(sort_value))}">{text}</td>'


def cases_table(cases: list[CaseScores], viewers: Mapping[str, str] | None = None) -> str:
    """Every column of ``cases.csv`` but the message, one row per case (failures highlighted)."""
    rows = [c.to_row() for c in cases]
    if not rows:
        return "<p>No cases.</p>"
    columns = [k for k in rows[0] if k != "message"]
    head = "".join(f'<th class="{"id" if k in ID_COLUMNS else ""}">{html.escape(k)}</th>' for k in columns)
    body = []
    for row in rows:
        cells = "".join(sortable_cell(key, row[key], viewers) for key in columns)
        failed = ' class="failed"' if row["status"] != "ok" else ""
        body.append(f"<tr{failed}>{cells}</tr>")
    return (f'<table id="cases" class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def volumes_table(cases: list[CaseScores], viewers: Mapping[str, str] | None = None) -> str:
    """Predicted and true volume (ml) and their difference per region, one row per case."""
    if not cases:
        return "<p>No cases.</p>"
    head = "".join(f"<th>{r.value} {name}</th>" for r in REGIONS for name in ("predicted", "true", "difference"))
    body = []
    for case in cases:
        cells = [sortable_cell("case_id", case.case_id, viewers)]
        for region in REGIONS:
            pred, true = case.regions[region].volume_pred_ml, case.regions[region].volume_true_ml
            for key, value in (("pred", pred), ("true", true), ("diff", pred - true)):
                cells.append(sortable_cell(f"{key}_{region.value}", float(value)))
        failed = ' class="failed"' if case.failed else ""
        body.append(f"<tr{failed}>{''.join(cells)}</tr>")
    return (f'<table id="volumes" class="sortable"><thead><tr><th class="id">case_id</th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")

"""The self-contained HTML report of an evaluation (``glioseg evaluate`` writes ``report.html``).

One file, readable offline: no external scripts, styles, fonts or images. It holds the inputs, their
provenance (protocol, label schemes, model) when the summary records it, the conventions used, a
summary table, box plots per region and metric, thumbnails of the best, median and worst cases (PNG
as base64, with orientation letters and a legend), the failures, the per-case scores and volumes
(tables that sort when a header is clicked: vanilla JavaScript), with ``--viewer`` each case linked
to its NiiVue page in ``viewer/``. Pictures scale down to the page width and wide tables scroll in
their own box, so the page never scrolls sideways (checked in headless Chromium at 1366 px).
"""

from __future__ import annotations

import base64
import html
import math
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np

from glioseg.data.nifti import CaseError, Geometry, load_nifti, read_array
from glioseg.evaluation.evaluate import (
    EvaluationResult,
    read_label_file,
    write_cases_csv,
    write_summary_json,
)
from glioseg.evaluation.figures import CONVENTIONS, DEFAULT_CONVENTION
from glioseg.evaluation.metrics import LESION_METRICS, REGION_METRICS
from glioseg.evaluation.report_tables import VOLUMES_NOTE, cases_table, fmt, volumes_table
from glioseg.evaluation.scores import CaseScores
from glioseg.labels import REGIONS, Region
from glioseg.utils import atomic_write

BOX_METRICS: tuple[str, ...] = ("dice", "hd95", "sensitivity", "specificity")
BOX_COLUMNS = 4
METRIC_TITLES: dict[str, str] = {
    "dice": "Dice", "hd95": "HD95 (mm)", "sensitivity": "Sensitivity", "specificity": "Specificity",
    "volume_pred_ml": "Predicted volume (ml)", "volume_true_ml": "True volume (ml)",
    "lesion_dice": "Lesion-wise Dice", "lesion_hd95": "Lesion-wise HD95 (mm)", "lesion_tp": "Lesions TP",
    "lesion_fp": "Lesions FP", "lesion_fn": "Lesions FN", "pooled_dice": "Pooled Dice (seed)",
}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
p, dd, li, table#provenance td { overflow-wrap: anywhere; }
img { max-width: 100%; height: auto; }
div.scroll { max-width: 100%; overflow-x: auto; margin: 0.5em 0 1.5em; }
div.scroll table { margin: 0; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
table#provenance th, table#provenance td { text-align: left; vertical-align: top; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #eee; }
td.id, th.id { text-align: left; }
table.sortable th { cursor: pointer; user-select: none; }
th[data-order="asc"]::after { content: " \\25B2"; }
th[data-order="desc"]::after { content: " \\25BC"; }
tr.failed td { background: #fdd; }
figure { display: inline-block; margin: 0.5em; max-width: 100%; }
figcaption { font-size: 0.85em; text-align: center; }
dt { font-weight: bold; }
"""
SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
    var asc = th.getAttribute("data-order") !== "asc";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-order"); });
    th.setAttribute("data-order", asc ? "asc" : "desc");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].getAttribute("data-value"), y = b.cells[col].getAttribute("data-value");
      var nx = parseFloat(x), ny = parseFloat(y);
      var r = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return asc ? r : -r;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _png_tag(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _metric_value(case: CaseScores, region: Region, metric: str) -> float:
    if metric in LESION_METRICS:
        return math.nan if case.lesion is None else float(getattr(case.lesion[region], metric))
    return float(getattr(case.regions[region], metric))


def box_plots_png(cases: Sequence[CaseScores], metrics: Sequence[str] = BOX_METRICS) -> bytes:
    """One box-plot panel per metric, one box per region (failures included).

    At most :data:`BOX_COLUMNS` panels a row (about 1150 px at most: a laptop page's width).

    Args:
        cases: scored cases.
        metrics: region or lesion-wise metric names.

    Returns:
        PNG bytes.
    """
    from glioseg.evaluation.figures import figure_png, new_figure

    columns = len(metrics) if len(metrics) <= BOX_COLUMNS else math.ceil(len(metrics) / math.ceil(
        len(metrics) / BOX_COLUMNS))
    rows = math.ceil(len(metrics) / columns)
    fig = new_figure(3.2 * columns, 3.0 * rows)
    fig.set_facecolor("white")
    grid = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in grid[len(metrics):]:
        ax.remove()
    for ax, metric in zip(grid, metrics, strict=False):
        data = []
        for region in REGIONS:
            values = [_metric_value(c, region, metric) for c in cases]
            data.append([v for v in values if math.isfinite(v)] or [math.nan])
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(REGIONS) + 1), [r.value for r in REGIONS])
        ax.set_title(METRIC_TITLES.get(metric, metric), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return figure_png(fig, dpi=90)


def _summary_table(result: EvaluationResult) -> str:
    stats = ("mean", "std", "median", "q1", "q3", "min", "max", "n")
    head = "".join(f"<th>{s}</th>" for s in stats)
    rows = []
    metrics = list(REGION_METRICS) + (["lesion_dice", "lesion_hd95"] if result.lesion_wise else [])
    for metric in metrics:
        for region in REGIONS:
            entry = result.summary[region.value][metric]
            cells = "".join(f"<td>{fmt(entry[s])}</td>" for s in stats)
            rows.append(f'<tr><td class="id">{METRIC_TITLES[metric]}</td><td class="id">{region.value}</td>'
                        f"{cells}</tr>")
    pooled = result.summary["all"]["pooled_dice"]
    rows.append(f'<tr><td class="id">{METRIC_TITLES["pooled_dice"]}</td><td class="id">all</td>'
                + "".join(f"<td>{fmt(pooled[s])}</td>" for s in stats) + "</tr>")
    return (f'<table id="summary"><thead><tr><th class="id">metric</th><th class="id">region</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _failures(result: EvaluationResult) -> str:
    items = [f"<li>{html.escape(cid)}: no prediction file</li>" for cid in result.missing]
    items += [f"<li>{html.escape(cid)}: {html.escape(msg)}</li>" for cid, msg in result.errors.items()]
    notes = []
    if result.unmatched_predictions:
        notes.append("<p>Prediction files matching no case (ignored): "
                     f"{html.escape(', '.join(result.unmatched_predictions))}</p>")
    if result.no_ground_truth:
        missing = html.escape(", ".join(result.no_ground_truth))
        notes.append(f"<p>Cases without ground truth (not scored): {missing}</p>")
    listing = f"<ul>{''.join(items)}</ul>" if items else "<p>None.</p>"
    return f'<h2>Failures ({len(items)})</h2><div id="failures">{listing}{"".join(notes)}</div>'


def _inline(value: object, nested: bool = False) -> str:
    """A provenance value as plain text: dicts as ``key: value, ...`` (in brackets when nested), lists
    joined by commas, None as ``none``."""
    if isinstance(value, dict):
        text = ", ".join(f"{key}: {_inline(item, True)}" for key, item in value.items()) or "none"
        return f"({text})" if nested and value else text
    if isinstance(value, list | tuple):
        return ", ".join(_inline(item, True) for item in value) or "none"
    if isinstance(value, float):
        return f"{value:.6g}"
    return "none" if value is None else str(value)


def _provenance_cell(value: object) -> str:
    """HTML of one provenance value: a dict gets one line per key, folded (click to open) past six."""
    if not isinstance(value, dict) or not value:
        return html.escape(_inline(value))
    lines = "<br>".join(html.escape(f"{key}: {_inline(item)}") for key, item in value.items())
    return lines if len(value) <= 6 else f"<details><summary>{len(value)} fields</summary>{lines}</details>"


PROVENANCE_TITLES: dict[str, str] = {"protocol": "protocol", "protocol_parameters": "protocol parameters",
                                     "label_schemes": "label schemes", "model": "model"}
NO_MODEL = "not recorded (the predictions carry no glioseg predict manifest)"


def _provenance(summary: dict) -> str:
    """A small table of ``summary["provenance"]`` (protocol, its parameters, label schemes, model,
    then any other field); empty for summaries written before provenance was recorded."""
    record = summary.get("provenance")
    if not isinstance(record, dict):
        return ""
    keys = [k for k in PROVENANCE_TITLES if k in record] + [k for k in record if k not in PROVENANCE_TITLES]
    rows = []
    for key in keys:
        cell = html.escape(NO_MODEL) if key == "model" and record[key] is None else _provenance_cell(record[key])
        title = PROVENANCE_TITLES.get(key, str(key).replace("_", " "))
        rows.append(f"<tr><th>{html.escape(title)}</th><td>{cell}</td></tr>")
    return f'<table id="provenance"><tbody>{"".join(rows)}</tbody></table>'


THUMBNAIL_NOTE = ("Axial slice through the largest tumour cross-section: FLAIR with the ground truth | with the "
                  f"prediction; {CONVENTIONS[DEFAULT_CONVENTION]}.")


def _thumbnails(result: EvaluationResult, thumbnails: Sequence[tuple[str, bytes]] | None) -> str:
    """The pictures' section body: figures, or why there are none."""
    if thumbnails is None:
        return "<p>Pictures not drawn (evaluate --no-thumbnails).</p>"
    if not thumbnails:
        scored = any(not c.failed for c in result.cases)
        return ("<p>No picture: the FLAIR images of the chosen cases could not be read.</p>" if scored
                else "<p>No scored case.</p>")
    figures = "".join(f"<figure>{_png_tag(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"
                      for caption, png in thumbnails)
    return f"<p>{html.escape(THUMBNAIL_NOTE)}</p>{figures}"


VIEWER_DIR = "viewer"
VIEWER_NOTE = (f"Each case ID links to its viewer page ({VIEWER_DIR}/<ID>.html, next to this report): the four "
               "modalities with the prediction and the ground truth as label overlays, in the browser, offline.")
# writes the viewer page of a case (ID) at a path; raises CaseError (or ValueError) when the case cannot be shown
ViewerWriter = Callable[[str, Path], object]


def _viewer_note(viewers: Mapping[str, str] | None, problems: Mapping[str, str]) -> str:
    if viewers is None:
        return ""
    items = "".join(f"<li>{html.escape(cid)}: {html.escape(msg)}</li>" for cid, msg in problems.items())
    missing = f"<p>No viewer page for {len(problems)} cases:</p><ul>{items}</ul>" if problems else ""
    return f'<div id="viewer-note"><p>{html.escape(VIEWER_NOTE)}</p>{missing}</div>'


def render_html(result: EvaluationResult, thumbnails: Sequence[tuple[str, bytes]] | None = (),
                viewers: Mapping[str, str] | None = None, viewer_problems: Mapping[str, str] | None = None) -> str:
    """The report as one HTML string (no external resources).

    Args:
        result: the evaluation.
        thumbnails: ``(caption, PNG bytes)`` pairs, e.g. from :func:`case_thumbnails`; None when
            pictures were not asked for (the section says so instead of "No scored case").
        viewers: case ID -> relative link of its viewer page; None without viewer pages.
        viewer_problems: case ID -> why it has no viewer page.

    Returns:
        HTML text.
    """
    conventions = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in result.conventions.items())
    metrics = list(BOX_METRICS) + (["lesion_dice", "lesion_hd95"] if result.lesion_wise else [])
    plots = _png_tag(box_plots_png(result.cases, metrics), "box plots per region and metric") if result.cases else ""
    n_failed = len(result.missing) + len(result.errors)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>glioseg evaluation</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><style>{STYLE}</style></head>
<body>
<h1>glioseg evaluation</h1>
<p>Predictions <code>{html.escape(str(result.pred_dir))}</code> against ground truths
<code>{html.escape(str(result.gt_root))}</code>: {len(result.cases)} cases, {n_failed} failed,
{result.seconds:.1f} s.</p>
{_provenance(result.summary)}
<h2>Summary</h2><div class="scroll">{_summary_table(result)}</div>
<h2>Distributions</h2>{plots}
<h2>Best, median and worst cases (mean Dice)</h2><div id="thumbnails">{_thumbnails(result, thumbnails)}</div>
{_failures(result)}
<h2>Cases</h2>{_viewer_note(viewers, viewer_problems or {})}<p>Click a column header to sort.</p>
<div class="scroll">{cases_table(result.cases, viewers)}</div>
<h2>Volumes (ml)</h2><p>{html.escape(VOLUMES_NOTE)}</p><div class="scroll">{volumes_table(result.cases, viewers)}</div>
<h2>Conventions</h2><dl id="conventions">{conventions}</dl>
<script>{SORT_SCRIPT}</script>
</body></html>
"""


def pick_cases(cases: Sequence[CaseScores]) -> list[tuple[str, CaseScores]]:
    """Best, median and worst successfully scored cases by mean Dice (fewer when there are fewer)."""
    ok = sorted((c for c in cases if not c.failed), key=lambda c: (c.mean_dice, c.case_id))
    if not ok:
        return []
    chosen = [("best", ok[-1]), ("median", ok[len(ok) // 2]), ("worst", ok[0])]
    seen, out = set(), []
    for name, case in chosen:
        if case.case_id not in seen:
            seen.add(case.case_id)
            out.append((name, case))
    return out


def _canonical_flair(result: EvaluationResult, case_id: str) -> tuple[np.ndarray, Geometry]:
    source = result.gt_files[case_id].images["flair"]
    img = load_nifti(source.path, case_id)
    geometry = Geometry.from_image(img)
    return geometry.to_canonical(read_array(img, source.path, case_id, source.volume)), geometry


def case_thumbnails(result: EvaluationResult) -> list[tuple[str, bytes]]:
    """Axial thumbnails (FLAIR + ground truth | + prediction) of the best, median and worst cases.

    Cases whose FLAIR cannot be read are skipped (the evaluation itself does not need images).

    Returns:
        ``(caption, PNG bytes)`` pairs.
    """
    thumbnails = (_thumbnail(result, name, case) for name, case in pick_cases(result.cases))
    return [t for t in thumbnails if t is not None]


def _thumbnail(result: EvaluationResult, name: str, case: CaseScores) -> tuple[str, bytes] | None:
    """``(caption, PNG bytes)`` of one case, or None when its files cannot be read."""
    from glioseg.evaluation.figures import figure_png, thumbnail_figure

    files = result.gt_files.get(case.case_id)
    if files is None or "flair" not in files.images or files.label is None:
        return None
    try:
        flair, geometry = _canonical_flair(result, case.case_id)
        gt, _, scheme = read_label_file(files.label, case.case_id, result.label_scheme, files.scheme_hint)
        pred, _, _ = read_label_file(result.pred_paths[case.case_id], case.case_id, result.pred_label_scheme,
                                     scheme.name)
    except (CaseError, KeyError):
        return None
    caption = f"{name}: {case.case_id} (mean Dice {case.mean_dice:.3f})"
    fig = thumbnail_figure(flair, geometry.to_canonical(gt), geometry.to_canonical(pred),
                           geometry.canonical_spacing, caption)
    return caption, figure_png(fig, dpi=100)


def write_viewer_pages(result: EvaluationResult, folder: Path, writer: ViewerWriter
                       ) -> tuple[dict[str, str], dict[str, str]]:
    """Write ``<ID>.html`` into ``folder`` for every case with a prediction file.

    Returns:
        ``(case ID -> link relative to the report, case ID -> why it has no page)``.

    Raises:
        OSError: a page cannot be written (disk full, permissions): the caller drops them all.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pages, problems = {}, {}
    for case in result.cases:
        if case.case_id not in result.pred_paths:
            problems[case.case_id] = "no prediction file"
            continue
        try:
            writer(case.case_id, folder / f"{case.case_id}.html")
        except (CaseError, ValueError) as exc:
            problems[case.case_id] = str(exc)
            continue
        pages[case.case_id] = f"{VIEWER_DIR}/{quote(case.case_id)}.html"
    return pages, problems


def write_report(result: EvaluationResult, out_dir: Path | str, thumbnails: bool = True,
                 viewer: ViewerWriter | None = None) -> dict[str, Path]:
    """Write ``cases.csv``, ``summary.json`` and ``report.html`` (and ``viewer/``) into a folder, all or none.

    Everything is written into a temporary folder inside ``out_dir`` and renamed into place once
    all is complete, so a full disk leaves the folder as it was (no mix of old and new files).

    Args:
        result: the evaluation.
        out_dir: report folder (created).
        thumbnails: embed thumbnails of the best, median and worst cases (reads their FLAIR).
        viewer: writes one case's viewer page (e.g. :func:`glioseg.interop.viewer.write_case_viewer`
            bound to the case's files); the pages go to ``out_dir/viewer/`` (replacing an older
            one) and the report links them. None: no pages.

    Returns:
        ``{"csv": ..., "json": ..., "html": ...}`` paths, and ``"viewer"`` (the folder) with ``viewer``.

    Raises:
        OSError: the folder cannot be created or written (nothing is left behind).
    """
    out_dir = Path(out_dir)
    pictures = case_thumbnails(result) if thumbnails else None
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report.", suffix=".tmp", dir=out_dir))
    try:
        pages, problems = (None, {}) if viewer is None else write_viewer_pages(result, staging / VIEWER_DIR, viewer)
        text = render_html(result, pictures, pages, problems)
        staged = {
            "csv": write_cases_csv(result, staging / "cases.csv"),
            "json": write_summary_json(result, staging / "summary.json"),
            "html": atomic_write(staging / "report.html", lambda tmp: tmp.write_text(text, encoding="utf-8")),
        }
        if viewer is not None:
            staged["viewer"] = _swap_in(staging / VIEWER_DIR, out_dir / VIEWER_DIR, staging)
        return {key: path.replace(out_dir / path.name) if key != "viewer" else path for key, path in staged.items()}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(new: Path, target: Path, trash: Path) -> Path:
    """Rename the folder ``new`` to ``target``, moving an older ``target`` into ``trash`` first."""
    if target.exists() or target.is_symlink():
        target.rename(trash / f"old-{target.name}")
    return new.rename(target)

"""A self-contained HTML viewer of one case: NiiVue with the four modalities and the label overlays.

``glioseg view CASE --pred P -o view.html`` and ``glioseg evaluate ... --viewer`` write it. The page
is one file that works from ``file://`` with no network: the NiiVue browser bundle
(``@niivue/niivue``, BSD-2-Clause, vendored in ``assets/`` with its licence and version) and every
volume are inlined. Volumes are embedded as base64 gzip NIfTI in the canonical orientation with
their world affine: images as int16 (exact for the integer intensities BraTS ships, otherwise
scaled through ``scl_slope``), label maps as uint8 canonical labels (:mod:`glioseg.labels`). A
240 x 240 x 155 BraTS case with a prediction and its ground truth makes a page of 12-15 MB.

The page shows one modality at a time (switchable), one label overlay at a time (prediction,
ground truth or none) in the colours of :data:`glioseg.evaluation.figures.LABEL_COLOURS` (NCR red,
ED green, ET yellow, RC blue) with an opacity slider, the slice layout, the display convention
(radiological by default, like ``glioseg show``) and the region volumes in ml.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np

from glioseg.data.nifti import MODALITIES, Case, CaseError, CaseFiles, Geometry, read_case
from glioseg.evaluation.evaluate import read_label_file
from glioseg.evaluation.figures import LABEL_COLOURS, SHORT_NAMES
from glioseg.inference.outputs import label_path
from glioseg.labels import ED, ET, NCR, RC, REGIONS, Region, labels_to_regions
from glioseg.utils import atomic_write

ASSETS = Path(__file__).with_name("assets")
NIIVUE_FILE = "niivue.umd.min.js"
MODALITY_TITLES: dict[str, str] = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}
OVERLAY_TITLES: dict[str, str] = {"pred": "Prediction", "gt": "Ground truth"}
INITIAL_MODALITY = "flair"
DEFAULT_OPACITY = 0.5
INT16_MAX = 32767
GZIP_LEVEL = 6  # level 9 saves ~3 % for twice the time


class ViewerError(ValueError):
    """An output path the viewer must not write (it is one of the inputs)."""


@dataclass(frozen=True)
class ViewerInputs:
    """What one page shows.

    Attributes:
        case: the case (images ``(4, X, Y, Z)`` float32, canonical orientation).
        pred: uint8 canonical labels ``(X, Y, Z)`` of the prediction, or None.
        gt: uint8 canonical labels ``(X, Y, Z)`` of the ground truth, or None.
        sources: the files read (the page may not be written over any of them).
        pred_path, gt_path: where the label maps came from (shown in the page), or None.
    """

    case: Case
    pred: np.ndarray | None
    gt: np.ndarray | None
    sources: tuple[Path, ...]
    pred_path: Path | None = None
    gt_path: Path | None = None


@cache
def niivue_bundle() -> str:
    """The vendored NiiVue UMD bundle (defines ``window.niivue``)."""
    return (ASSETS / NIIVUE_FILE).read_text(encoding="utf-8")


@cache
def niivue_release() -> dict[str, str]:
    """Package, version, licence and sha256 of the vendored NiiVue bundle (``assets/NIIVUE_VERSION.json``)."""
    return json.loads((ASSETS / "NIIVUE_VERSION.json").read_text(encoding="utf-8"))


def _nifti_gz(data: np.ndarray, affine: np.ndarray, dtype: type = np.int16) -> bytes:
    """``data`` as gzip NIfTI bytes of ``dtype``; nibabel picks scl_slope/scl_inter when ``data`` is float."""
    img = nib.Nifti1Image(data, affine)
    img.set_data_dtype(dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=GZIP_LEVEL, mtime=0)


def encode_image(image: np.ndarray, affine: np.ndarray) -> bytes:
    """One modality as gzip NIfTI bytes, int16.

    Args:
        image: float32 ``(X, Y, Z)`` intensities.
        affine: voxel-to-world (RAS mm) 4x4 affine of ``image``.

    Returns:
        ``.nii.gz`` bytes: exact int16 when every value is an integer in the int16 range,
        otherwise int16 with the ``scl_slope``/``scl_inter`` nibabel chooses (error <= half a step).
    """
    image = np.asarray(image, dtype=np.float32)
    if np.abs(image).max(initial=0.0) <= INT16_MAX and np.array_equal(image, np.round(image)):
        return _nifti_gz(image.astype(np.int16), affine)
    return _nifti_gz(image, affine)


def encode_labels(labels: np.ndarray, affine: np.ndarray) -> bytes:
    """A canonical label map ``(X, Y, Z)`` (uint8, :mod:`glioseg.labels`) as gzip NIfTI bytes."""
    return _nifti_gz(np.asarray(labels, dtype=np.uint8), affine, np.uint8)


def label_volumes_ml(labels: np.ndarray, spacing: Sequence[float], with_rc: bool | None = None) -> dict[str, float]:
    """Volumes in ml of NCR, ED, ET (and RC), then the regions TC and WT.

    Args:
        labels: uint8 canonical labels ``(X, Y, Z)``.
        spacing: voxel size in mm along the array's axes.
        with_rc: list RC (default: when the map has any).
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(np.asarray(labels, dtype=np.uint8).ravel(), minlength=RC + 1)
    volumes = {SHORT_NAMES[k]: float(counts[k]) * voxel_ml for k in (NCR, ED, ET)}
    if counts[RC] if with_rc is None else with_rc:
        volumes["RC"] = float(counts[RC]) * voxel_ml
    regions = dict(zip(REGIONS, labels_to_regions(labels), strict=True))
    for region in (Region.TC, Region.WT):
        volumes[region.value] = float(regions[region].sum()) * voxel_ml
    return volumes


def _labels_on_grid(path: Path, case: Case, what: str, scheme: str | None, hint: str | None,
                    flag: str) -> tuple[np.ndarray, str]:
    """A label file as canonical labels ``(X, Y, Z)`` and its scheme's name; CaseError when it is not on the
    case's image grid."""
    raw, geometry, chosen = read_label_file(path, case.case_id, scheme, hint, flag)
    if not geometry.matches(case.geometry):
        reference = case.files.images[MODALITIES[-1]].path
        raise CaseError(case.case_id, f"{what} is on another grid (shape {geometry.shape}, affine "
                        f"{_affine_text(geometry)}) than the images (shape {case.geometry.shape}, affine "
                        f"{_affine_text(case.geometry)}, {reference}); give a {what} of this case on its image grid "
                        "(as glioseg predict writes) or resample it onto the images", path)
    return case.geometry.to_canonical(raw), chosen.name


def _affine_text(geometry: Geometry) -> str:
    return str(np.round(geometry.affine[:3], 2).tolist()).replace(" ", "")


def read_viewer_inputs(files: CaseFiles, pred: Path | None = None, gt: Path | None = None,
                       label_scheme: str | None = None, pred_label_scheme: str | None = None) -> ViewerInputs:
    """Read a case, its prediction and its ground truth for :func:`write_viewer`.

    Args:
        files: the case's files (from :func:`glioseg.data.layouts.find_cases`).
        pred: predicted label map, or None.
        gt: ground-truth label map; None uses the case's own segmentation when it has one.
        label_scheme: scheme of the ground truth (default: detected).
        pred_label_scheme: scheme of the prediction (default: detected, preferring the ground truth's).

    Raises:
        CaseError: a missing or unreadable file, or a label map on another grid than the images.
        LabelSchemeError: the case's own segmentation fits no label scheme.
    """
    for path, flag in ((pred, "--pred"), (gt, "--gt")):
        if path is not None and not path.is_file():
            raise CaseError(files.case_id, f"{flag} file not found; give an existing label map (.nii.gz)", path)
    case = read_case(files, label_scheme, read_label=gt is None)
    truth, hint = case.label, (case.scheme.name if case.scheme else files.scheme_hint)
    if gt is not None:
        truth, hint = _labels_on_grid(gt, case, "ground truth", label_scheme, files.scheme_hint, "--label-scheme")
    predicted = None
    if pred is not None:
        predicted, _ = _labels_on_grid(pred, case, "prediction", pred_label_scheme, hint, "--pred-label-scheme")
    sources = [s.path for s in files.images.values()] + [p for p in (pred, gt, files.label) if p is not None]
    return ViewerInputs(case, predicted, truth, tuple(sources), pred, gt if gt is not None else files.label)


def _payload(key: str, data: bytes) -> str:
    text = base64.b64encode(data).decode("ascii")
    return f'<script type="application/gzip" id="vol-{key}">{text}</script>'


def _script_json(value: object) -> str:
    return json.dumps(value).replace("</", "<\\/")  # "</script>" inside a string would end the element


def _rgb(label: int) -> list[int]:
    return [round(255 * c) for c in LABEL_COLOURS[label]]


def _present_labels(inputs: ViewerInputs) -> list[int]:
    maps = [m for m in (inputs.pred, inputs.gt) if m is not None]
    extra = [RC] if any(bool((m == RC).any()) for m in maps) else []
    return [NCR, ED, ET, *extra]


def tumour_centre_mm(labels: np.ndarray, affine: np.ndarray) -> list[float] | None:
    """World (RAS mm) position of the tumour voxel nearest the tumour's centroid, or None without tumour.

    Args:
        labels: canonical labels ``(X, Y, Z)``.
        affine: their voxel-to-world affine.
    """
    voxels = np.argwhere(np.isin(labels, (NCR, ED, ET)))
    if not len(voxels):
        return None
    nearest = voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]
    return [round(float(v), 3) for v in affine[:3, :3] @ nearest + affine[:3, 3]]


def _config(inputs: ViewerInputs, overlays: Sequence[str], radiological: bool) -> dict[str, object]:
    labels = [{"value": k, "name": SHORT_NAMES[k], "rgb": _rgb(k)} for k in _present_labels(inputs)]
    shown = inputs.pred if inputs.pred is not None and inputs.pred.any() else inputs.gt
    centre = None if shown is None else tumour_centre_mm(shown, inputs.case.geometry.canonical_affine)
    return {"case_id": inputs.case.case_id, "radiological": radiological, "initial_modality": INITIAL_MODALITY,
            "centre_mm": centre,
            "modalities": [{"key": m, "label": MODALITY_TITLES[m]} for m in MODALITIES],
            "overlays": [{"key": k, "label": OVERLAY_TITLES[k]} for k in overlays], "labels": labels}


def _radio(name: str, value: str, label: str, checked: bool) -> str:
    mark = " checked" if checked else ""
    return (f'<label><input type="radio" name="{name}" value="{value}" id="{name}-{value}"{mark}> '
            f"{html.escape(label)}</label>")


def _controls(overlays: Sequence[str], radiological: bool) -> str:
    modalities = "".join(_radio("modality", m, MODALITY_TITLES[m], m == INITIAL_MODALITY) for m in MODALITIES)
    shown = [*overlays, "none"]
    layers = "".join(_radio("overlay", k, OVERLAY_TITLES.get(k, "None"), i == 0) for i, k in enumerate(shown))
    percent = round(100 * DEFAULT_OPACITY)
    slices = "".join(f'<button type="button" data-slice="{v}">{n}</button>'
                     for v, n in ((3, "All planes"), (0, "Axial"), (1, "Coronal"), (2, "Sagittal"), (4, "3D")))
    convention = " checked" if radiological else ""
    return (f'<div id="controls"><fieldset><legend>Image</legend>{modalities}</fieldset>'
            f'<fieldset><legend>Labels</legend>{layers}</fieldset>'
            f'<fieldset><legend>Label opacity</legend><input type="range" id="opacity" min="0" max="100" step="5" '
            f'value="{percent}"> <span id="opacity-value">{percent}%</span></fieldset>'
            f'<fieldset><legend>View</legend>{slices}</fieldset>'
            f'<label><input type="checkbox" id="radiological"{convention}> radiological convention '
            "(patient's right on the image's left)</label></div>")


def _volumes_table(inputs: ViewerInputs) -> str:
    spacing = inputs.case.geometry.canonical_spacing
    with_rc = RC in _present_labels(inputs)
    columns = [(OVERLAY_TITLES[k], label_volumes_ml(m, spacing, with_rc))
               for k, m in (("pred", inputs.pred), ("gt", inputs.gt)) if m is not None]
    if not columns:
        return "<p>No label map given.</p>"
    head = "".join(f"<th>{html.escape(title)}</th>" for title, _ in columns)
    rows = []
    for name in columns[0][1]:
        swatch = (f'<span class="swatch" style="background: rgb{tuple(_rgb(_label_of(name)))}"></span>'
                  if _label_of(name) else "")
        cells = "".join(f"<td>{volumes.get(name, 0.0):.2f}</td>" for _, volumes in columns)
        rows.append(f"<tr><td>{swatch}{html.escape(name)}</td>{cells}</tr>")
    return f'<table id="volumes"><thead><tr><th>ml</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _label_of(name: str) -> int:
    return {SHORT_NAMES[k]: k for k in (NCR, ED, ET, RC)}.get(name, 0)


def _sources(inputs: ViewerInputs) -> str:
    items = [f"{MODALITY_TITLES[m]}: {s.path}" for m, s in inputs.case.files.images.items() if m in MODALITY_TITLES]
    items += [f"{OVERLAY_TITLES[k]}: {p}" for k, p in (("pred", inputs.pred_path), ("gt", inputs.gt_path))
              if p is not None and (inputs.pred if k == "pred" else inputs.gt) is not None]
    return "<br>".join(html.escape(i) for i in items)


def render_viewer(inputs: ViewerInputs, title: str | None = None, radiological: bool = True) -> str:
    """The viewer page of one case as one HTML string (nothing external: no URL is ever fetched).

    Args:
        inputs: the case and its label maps (:func:`read_viewer_inputs`).
        title: page heading (default: the case ID).
        radiological: start in the radiological convention (the page has a switch).

    Returns:
        HTML text, about 2.3 MB of NiiVue plus the gzip volumes in base64.
    """
    case = inputs.case
    affine = case.geometry.canonical_affine
    maps = {k: m for k, m in (("pred", inputs.pred), ("gt", inputs.gt)) if m is not None}
    overlays = list(maps)
    volumes = [_payload(m, encode_image(case.image[i], affine)) for i, m in enumerate(MODALITIES)]
    volumes += [_payload(k, encode_labels(m, affine)) for k, m in maps.items()]
    release = niivue_release()
    heading = html.escape(title or case.case_id)
    legend = ", ".join(f"{SHORT_NAMES[k]} {c}" for k, c in ((NCR, "red"), (ED, "green"), (ET, "yellow"), (RC, "blue"))
                       if k in _present_labels(inputs))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{heading} - glioseg viewer</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>{(ASSETS / "viewer.css").read_text(encoding="utf-8")}</style></head>
<body data-state="loading">
<header><h1>{heading}</h1><p>{_sources(inputs)}</p></header>
{_controls(overlays, radiological)}
<main><div id="view"><canvas id="gl"></canvas></div>
<aside><h2>Volumes</h2>{_volumes_table(inputs)}<p>Labels: {legend}. TC = NCR + ET, WT = NCR + ED + ET.</p>
<p>Grid {" x ".join(map(str, case.geometry.shape))} voxels of {" x ".join(f"{s:.3g}" for s in case.geometry.spacing)}
mm.</p></aside></main>
<div id="status">loading ...</div>
<footer>glioseg viewer; NiiVue {html.escape(release["version"])} ({html.escape(release["license"])}, bundled
in this page).</footer>
<script type="application/json" id="viewer-config">{_script_json(_config(inputs, overlays, radiological))}</script>
{"".join(volumes)}
<script>{niivue_bundle()}</script>
<script>{(ASSETS / "viewer.js").read_text(encoding="utf-8")}</script>
</body></html>
"""


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def write_viewer(inputs: ViewerInputs, out: Path | str, title: str | None = None, radiological: bool = True) -> Path:
    """Write the viewer page atomically (nothing is left at ``out`` when writing fails).

    Raises:
        ViewerError: ``out`` is one of the inputs.
        OSError: ``out`` cannot be written.
    """
    out = Path(out)
    for source in inputs.sources:
        if out.resolve() == source.resolve() or (out.exists() and _same_file(out, source)):
            raise ViewerError(f"case {inputs.case.case_id}: the output {out} is the input {source}; "
                              "give another output path (e.g. view.html)")
    text = render_viewer(inputs, title, radiological)
    return atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_case_viewer(files: CaseFiles, out: Path | str, pred: Path | None = None, gt: Path | None = None,
                      label_scheme: str | None = None, pred_label_scheme: str | None = None,
                      radiological: bool = True) -> Path:
    """Read a case and its label maps and write its viewer page (what ``glioseg view`` does).

    Args:
        files: the case's files.
        out: output ``.html`` file.
        pred, gt, label_scheme, pred_label_scheme: as :func:`read_viewer_inputs`.
        radiological: start in the radiological convention.

    Returns:
        The written path.

    Raises:
        CaseError, LabelSchemeError: as :func:`read_viewer_inputs`. ViewerError, OSError: as :func:`write_viewer`.
    """
    inputs = read_viewer_inputs(files, pred, gt, label_scheme, pred_label_scheme)
    return write_viewer(inputs, out, radiological=radiological)


def write_prediction_viewers(cases: Sequence[CaseFiles], pred_dir: Path, out_dir: Path | None = None,
                             label_scheme: str | None = None, pred_label_scheme: str | None = None,
                             ) -> tuple[dict[str, Path], dict[str, str]]:
    """One viewer page per predicted case (what ``glioseg predict --viewer`` writes).

    Each case's prediction is ``pred_dir/<ID>.nii.gz``; its ground truth, when the case has one,
    is shown too. A case that cannot be shown is reported, not raised, so one bad case does not
    cost the others their pages.

    Args:
        cases: the predicted cases' files.
        pred_dir: the prediction folder.
        out_dir: where ``<ID>.html`` go (default ``pred_dir/viewer``).
        label_scheme, pred_label_scheme: as :func:`read_viewer_inputs`.

    Returns:
        ``(case ID -> page written, case ID -> why it has none)``.

    Raises:
        OSError: a page cannot be written (disk full, permissions).
    """
    out_dir = pred_dir / "viewer" if out_dir is None else out_dir
    pages: dict[str, Path] = {}
    problems: dict[str, str] = {}
    for files in cases:
        pred = label_path(pred_dir, files.case_id)
        if not pred.is_file():
            problems[files.case_id] = f"no prediction {pred}"
            continue
        try:
            inputs = read_viewer_inputs(files, pred, None, label_scheme, pred_label_scheme)
            pages[files.case_id] = write_viewer(inputs, out_dir / f"{files.case_id}.html")
        except (CaseError, ValueError) as exc:
            problems[files.case_id] = str(exc)
    return pages, problems

"""Pictures: label overlays on FLAIR and T1ce, and slice-sweep GIFs (training curves: training.curves).

Colours follow the usual BraTS figures: edema green, necrotic core red, enhancing tumour
yellow (resection cavity blue). Slices are shown with the superior / anterior side up, in the
radiological convention by default (the patient's right on the image's left in axial and coronal
views, as radiologists read them) or the neurological one (the patient's left on the left);
sagittal views have the anterior side on the left in both. Every panel carries its orientation
letters (R/L, A/P, S/I) and every picture names its convention. matplotlib is imported inside the
functions and drawn with the Agg canvas (no display, no pyplot global state); GIFs are drawn and
written with Pillow (no ffmpeg).

Arrays are in the canonical RAS orientation of :mod:`glioseg.data.nifti`: images float ``(X, Y, Z)``,
label maps uint8 ``(X, Y, Z)`` canonical labels. Slice numbers index those canonical arrays.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glioseg.labels import ED, ET, NCR, RC
from glioseg.utils import atomic_write, bounding_box

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LABEL_COLOURS: dict[int, tuple[float, float, float]] = {NCR: (1.0, 0.0, 0.0), ED: (0.0, 0.8, 0.0),
                                                         ET: (1.0, 0.9, 0.0), RC: (0.2, 0.4, 1.0)}
LABEL_NAMES: dict[int, str] = {NCR: "necrotic core (NCR)", ED: "edema (ED)", ET: "enhancing (ET)",
                               RC: "resection cavity (RC)"}
SHORT_NAMES: dict[int, str] = {NCR: "NCR", ED: "ED", ET: "ET", RC: "RC"}
PLANES: tuple[tuple[str, int], ...] = (("axial", 2), ("coronal", 1), ("sagittal", 0))
CONVENTIONS: dict[str, str] = {
    "radiological": "radiological convention: patient's right on the image's left (axial, coronal)",
    "neurological": "neurological convention: patient's left on the image's left (axial, coronal)",
}
DEFAULT_CONVENTION = "radiological"
POSITIVE, NEGATIVE = "RAS", "LPI"  # the letter at the high / low end of each canonical axis
MARK_POSITIONS: dict[str, tuple[float, float, str, str, str]] = {  # axes-fraction x, y; ha, va; Pillow anchor
    "left": (0.02, 0.5, "left", "center", "lm"), "right": (0.98, 0.5, "right", "center", "rm"),
    "top": (0.5, 0.98, "center", "top", "mt"), "bottom": (0.5, 0.02, "center", "bottom", "mb"),
}


# ----------------------------------------------------------------------------- orientation


def check_convention(convention: str) -> str:
    """The convention's name; ValueError listing the valid ones for any other."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown display convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
    return convention


def _screen_axes(axis: int, convention: str) -> tuple[int, int, bool]:
    """``(column axis, row axis, columns run from the axis' high end)`` of a plane through ``axis``."""
    cols, rows = (a for a in range(3) if a != axis)
    # sagittal: anterior (+Y) on the left; axial/coronal: +X (right) on the left when radiological
    reversed_cols = axis == 0 or check_convention(convention) == "radiological"
    return cols, rows, reversed_cols


def orientation_marks(axis: int, convention: str = DEFAULT_CONVENTION) -> dict[str, str]:
    """The anatomical letter at each edge of :func:`plane`'s picture.

    Args:
        axis: the canonical axis the plane cuts (0 sagittal, 1 coronal, 2 axial).
        convention: a key of :data:`CONVENTIONS`.

    Returns:
        ``{"left", "right", "top", "bottom"} -> letter`` (R/L, A/P, S/I).
    """
    cols, rows, reversed_cols = _screen_axes(axis, convention)
    left, right = (POSITIVE[cols], NEGATIVE[cols]) if reversed_cols else (NEGATIVE[cols], POSITIVE[cols])
    return {"left": left, "right": right, "top": POSITIVE[rows], "bottom": NEGATIVE[rows]}


def plane(volume: np.ndarray, axis: int, index: int, convention: str = DEFAULT_CONVENTION) -> np.ndarray:
    """One slice of a canonical ``(X, Y, Z)`` volume as displayed: superior / anterior up.

    Args:
        volume: canonical array ``(X, Y, Z)``.
        axis: the axis cut (0 sagittal, 1 coronal, 2 axial).
        index: slice index along ``axis``.
        convention: a key of :data:`CONVENTIONS` (see :func:`orientation_marks` for the letters).

    Returns:
        ``(H, W)`` array: rows along the plane's second axis (high end on top), columns along its first.
    """
    _, _, reversed_cols = _screen_axes(axis, convention)
    picture = np.take(volume, index, axis=axis).T[::-1]
    return np.ascontiguousarray(picture[:, ::-1] if reversed_cols else picture)


def plane_aspect(spacing: Sequence[float], axis: int) -> float:
    """Display aspect (row height / column width) of :func:`plane` for a voxel spacing."""
    cols, rows = (a for a in range(3) if a != axis)
    return float(spacing[rows]) / float(spacing[cols])


# ----------------------------------------------------------------------------- slices and overlays


def largest_cross_section(labels: np.ndarray) -> tuple[int, int, int]:
    """Per axis, the slice index with the most tumour voxels (the volume's centre without tumour).

    Args:
        labels: uint8 canonical labels ``(X, Y, Z)``.

    Returns:
        ``(x, y, z)`` indices of the sagittal, coronal and axial slices.
    """
    tumour = np.asarray(labels) > 0
    if not tumour.any():
        return tuple(s // 2 for s in tumour.shape)  # type: ignore[return-value]
    out = []
    for axis in range(3):
        area = tumour.sum(axis=tuple(a for a in range(3) if a != axis))
        out.append(int(np.argmax(area)))
    return tuple(out)  # type: ignore[return-value]


def normalize_image(volume: np.ndarray) -> np.ndarray:
    """Scale intensities to [0, 1] between the 0.5th and 99.5th percentiles of the non-zero voxels.

    Args:
        volume: float array of any shape.

    Returns:
        float32 array of the same shape.
    """
    volume = np.asarray(volume, dtype=np.float32)
    inside = volume[volume != 0]
    if inside.size == 0:
        return np.zeros_like(volume)
    low, high = np.percentile(inside, [0.5, 99.5])
    return np.clip((volume - low) / max(float(high - low), 1e-6), 0.0, 1.0)


def overlay(image: np.ndarray, labels: np.ndarray | None, alpha: float = 0.5) -> np.ndarray:
    """Colour a grey image with label colours.

    Args:
        image: float ``(H, W)`` in [0, 1].
        labels: uint8 ``(H, W)`` canonical labels, or None for the plain image.
        alpha: opacity of the label colours.

    Returns:
        float32 RGB ``(H, W, 3)`` in [0, 1].
    """
    rgb = np.repeat(np.asarray(image, dtype=np.float32)[..., None], 3, axis=-1)
    if labels is None:
        return rgb
    for label, colour in LABEL_COLOURS.items():
        where = labels == label
        rgb[where] = (1 - alpha) * rgb[where] + alpha * np.asarray(colour, dtype=np.float32)
    return rgb


def legend_labels(labels: Sequence[np.ndarray | None]) -> list[int]:
    """The labels a legend lists: NCR, ED, ET always, RC when present."""
    present = set().union(*(np.unique(lab).tolist() for lab in labels if lab is not None))
    return [NCR, ED, ET] + ([RC] if RC in present else [])


def _legend_handles(labels: Sequence[np.ndarray | None], short: bool = False) -> list[Any]:
    from matplotlib.patches import Patch

    names = SHORT_NAMES if short else LABEL_NAMES
    return [Patch(color=LABEL_COLOURS[k], label=names[k]) for k in legend_labels(labels)]


def new_figure(width: float, height: float) -> Figure:
    """A black Figure of ``width`` x ``height`` inches on an Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), facecolor="black")
    FigureCanvasAgg(fig)
    return fig


def _show(ax: Any, image: np.ndarray, labels: np.ndarray | None, aspect: float, marks: dict[str, str],
          fontsize: float = 9) -> None:
    """Draw one ``(H, W)`` slice with its label overlay and orientation letters on an axis without ticks."""
    from matplotlib import patheffects

    ax.imshow(overlay(image, labels), aspect=aspect, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    outline = [patheffects.withStroke(linewidth=2, foreground="black")]
    for edge, letter in marks.items():
        x, y, ha, va, _ = MARK_POSITIONS[edge]
        ax.text(x, y, letter, transform=ax.transAxes, ha=ha, va=va, color="cyan", fontsize=fontsize,
                fontweight="bold", path_effects=outline, gid=f"orientation-{edge}")


def case_figure(flair: np.ndarray, t1ce: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None = None,
                spacing: Sequence[float] = (1.0, 1.0, 1.0), title: str = "",
                convention: str = DEFAULT_CONVENTION) -> Figure:
    """Ground truth and prediction side by side on FLAIR and T1ce, in three planes.

    The planes go through the tumour's largest cross-section (of the ground truth, or of the
    prediction without one). Each panel has its orientation letters; the footer names the
    display convention.

    Args:
        flair, t1ce: float ``(X, Y, Z)`` images.
        gt: uint8 canonical labels ``(X, Y, Z)`` or None.
        pred: uint8 canonical labels ``(X, Y, Z)`` or None.
        spacing: voxel size in mm (sets the aspect ratio).
        title: figure title.
        convention: ``radiological`` or ``neurological`` (:data:`CONVENTIONS`).

    Returns:
        A matplotlib Figure (Agg canvas): rows axial, coronal, sagittal; columns FLAIR and T1ce
        with the ground truth and with the prediction.

    Raises:
        ValueError: unknown convention.
    """
    check_convention(convention)
    reference = gt if gt is not None and np.any(gt) else (pred if pred is not None else np.zeros(flair.shape, np.uint8))
    centre = largest_cross_section(reference)
    images = {"FLAIR": normalize_image(flair), "T1ce": normalize_image(t1ce)}
    columns = [(name, label_name, lab) for name in images for label_name, lab in
               (("ground truth", gt), ("prediction", pred)) if lab is not None or label_name == "ground truth"]
    fig = new_figure(3.0 * len(columns), 3.0 * len(PLANES) + 1.1)
    axes = fig.subplots(len(PLANES), len(columns), squeeze=False)
    for row, (plane_name, axis) in enumerate(PLANES):
        for col, (image_name, label_name, lab) in enumerate(columns):
            ax = axes[row][col]
            shown = None if lab is None else plane(lab, axis, centre[axis], convention)
            _show(ax, plane(images[image_name], axis, centre[axis], convention), shown, plane_aspect(spacing, axis),
                  orientation_marks(axis, convention))
            if row == 0:
                ax.set_title(f"{image_name} + {label_name}", color="white", fontsize=10)
            if col == 0:
                ax.set_ylabel(f"{plane_name} slice {centre[axis]}", color="white", fontsize=10)
    fig.legend(handles=_legend_handles([gt, pred]), loc="lower center", bbox_to_anchor=(0.5, 0.025), ncol=4,
               frameon=False, labelcolor="white", fontsize=9)
    fig.text(0.5, 0.008, f"{CONVENTIONS[convention]}; sagittal: anterior on the left", ha="center", va="bottom",
             color="#bbbbbb", fontsize=8, gid="convention")
    if title:
        fig.suptitle(title, color="white", fontsize=12)
    fig.subplots_adjust(left=0.05, right=0.99, top=0.93 if title else 0.96, bottom=0.085, wspace=0.1, hspace=0.06)
    return fig


def save_figure(fig: Figure, path: Path | str, dpi: int = 100) -> Path:
    """Write a figure as PNG, atomically."""
    return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, facecolor=fig.get_facecolor()))


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """PNG bytes of a figure (for embedding)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return buffer.getvalue()


def thumbnail_figure(flair: np.ndarray, gt: np.ndarray, pred: np.ndarray | None,
                     spacing: Sequence[float] = (1.0, 1.0, 1.0), title: str = "",
                     convention: str = DEFAULT_CONVENTION) -> Figure:
    """Small axial view through the largest cross-section: FLAIR + ground truth | + prediction.

    Args:
        flair: float ``(X, Y, Z)``.
        gt, pred: uint8 canonical labels ``(X, Y, Z)`` (pred may be None for a failed case).
        spacing: voxel size in mm.
        title: shown above.
        convention: ``radiological`` or ``neurological``.

    Returns:
        A 2-panel Figure with orientation letters, a label legend and the convention's name.
    """
    z = largest_cross_section(gt if np.any(gt) or pred is None else pred)[2]
    image = plane(normalize_image(flair), 2, z, convention)
    fig = new_figure(4.4, 3.0)
    axes = fig.subplots(1, 2)
    for ax, (name, lab) in zip(axes, (("ground truth", gt), ("prediction", pred)), strict=True):
        _show(ax, image, None if lab is None else plane(lab, 2, z, convention), plane_aspect(spacing, 2),
              orientation_marks(2, convention), fontsize=8)
        ax.set_title(name if lab is not None else "no prediction", color="white", fontsize=8)
    fig.legend(handles=_legend_handles([gt, pred], short=True), loc="lower center", bbox_to_anchor=(0.5, 0.04),
               ncol=4, frameon=False, labelcolor="white", fontsize=7, handlelength=1.0)
    fig.text(0.5, 0.01, f"axial slice {z}, {convention}", ha="center", va="bottom", color="#bbbbbb", fontsize=6,
             gid="convention")
    if title:
        fig.suptitle(title, color="white", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.84, bottom=0.15, wspace=0.08)
    return fig


# ----------------------------------------------------------------------------- GIF sweep

MIN_PANEL_PX = 200  # frames are upscaled until each panel is at least this wide: room for the text
GIF_GAP_PX = 16  # between panels: one panel's "L" is not read as the next one's "R"


def sweep_frames(flair: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None = None, axis: int = 2,
                 margin: int = 5, scale: int | None = None, title: str = "",
                 convention: str = DEFAULT_CONVENTION) -> list[np.ndarray]:
    """Frames of a slice sweep through the tumour: FLAIR + ground truth | FLAIR + prediction.

    Each frame has a header (``title`` and the panel titles), orientation letters on every
    panel, and a footer with the slice number, the convention and the NCR / ED / ET legend.

    Args:
        flair: float ``(X, Y, Z)``.
        gt, pred: uint8 canonical labels ``(X, Y, Z)`` or None.
        axis: swept axis (2 = axial, 1 = coronal, 0 = sagittal).
        margin: extra slices before and after the tumour.
        scale: integer upsampling of each panel (nearest); None: the smallest making panels
            at least :data:`MIN_PANEL_PX` wide.
        title: first header line (e.g. the case ID).
        convention: ``radiological`` or ``neurological``.

    Returns:
        uint8 RGB frames ``(H, W, 3)``, all the same size.

    Raises:
        ValueError: unknown convention, or ``axis`` / ``scale`` out of range.
    """
    check_convention(convention)
    if axis not in (0, 1, 2) or (scale is not None and scale < 1):
        raise ValueError(f"sweep axis {axis} must be 0, 1 or 2 and scale {scale} >= 1")
    labels = [lab for lab in (gt, pred) if lab is not None]
    tumour = np.logical_or.reduce([lab > 0 for lab in labels]) if labels else np.zeros(flair.shape, bool)
    box = bounding_box(tumour, margin)
    span = box[axis] if box is not None else slice(0, flair.shape[axis])
    image = normalize_image(flair)
    width = plane(image, axis, 0, convention).shape[1]
    scale = scale or max(1, -(-MIN_PANEL_PX // width))
    panels: list[tuple[str, np.ndarray | None]] = [(n, lab) for n, lab in (("ground truth", gt), ("prediction", pred))
                                                   if lab is not None] or [("no labels", None)]
    name = {a: n for n, a in PLANES}[axis]
    frames = []
    for index in range(span.start, span.stop):
        base = plane(image, axis, index, convention)
        rgb = [overlay(base, None if lab is None else plane(lab, axis, index, convention)) for _, lab in panels]
        footer = f"{name} slice {index} of 0-{flair.shape[axis] - 1}, {convention}"
        frames.append(_frame(rgb, [f"FLAIR + {n}" for n, _ in panels], title, footer, scale,
                             orientation_marks(axis, convention), legend_labels([gt, pred])))
    return frames


def _frame(panels: Sequence[np.ndarray], names: Sequence[str], title: str, footer: str, scale: int,
           marks: dict[str, str], legend: Sequence[int]) -> np.ndarray:
    """One GIF frame: float RGB ``(H, W, 3)`` panels side by side with their text, as uint8 RGB."""
    from PIL import Image, ImageDraw, ImageFont

    h, w, gap = panels[0].shape[0] * scale, panels[0].shape[1] * scale, GIF_GAP_PX
    size = max(10, min(16, w // 16))
    font, line = ImageFont.load_default(size=size), size + 6
    top = line * (2 if title else 1)
    canvas = Image.new("RGB", (len(panels) * (w + gap) - gap, top + h + 2 * line), "black")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill="white", font=font)
    for i, (rgb, name) in enumerate(zip(panels, names, strict=True)):
        x0 = i * (w + gap)
        canvas.paste(Image.fromarray(np.kron((rgb * 255).astype(np.uint8), np.ones((scale, scale, 1), np.uint8))),
                     (x0, top))
        draw.text((x0 + w // 2, top - 2), name, fill="white", font=font, anchor="md")
        for edge, (fx, fy, _, _, anchor) in MARK_POSITIONS.items():
            draw.text((x0 + fx * w, top + (1 - fy) * h), marks[edge], fill="cyan", font=font, anchor=anchor,
                      stroke_width=1, stroke_fill="black")
    draw.text((4, top + h + 3), footer, fill="white", font=font)
    _draw_legend(draw, font, size, legend, top + h + line + 3)
    return np.asarray(canvas, dtype=np.uint8)


def _draw_legend(draw: Any, font: Any, size: int, legend: Sequence[int], y: int) -> None:
    """Colour swatches and short names (NCR, ED, ET, RC) in one row from the left edge."""
    x = 4
    for label in legend:
        draw.rectangle((x, y + 1, x + size - 2, y + size - 1), fill=tuple(int(255 * c) for c in LABEL_COLOURS[label]))
        draw.text((x + size + 2, y), SHORT_NAMES[label], fill="white", font=font)
        x += size + 10 + int(draw.textlength(SHORT_NAMES[label], font=font))


def save_gif(frames: Sequence[np.ndarray], path: Path | str, duration_ms: int = 80) -> Path:
    """Write RGB frames as a looping GIF with Pillow, atomically.

    Raises:
        ValueError: no frames.
    """
    from PIL import Image

    if not frames:
        raise ValueError(f"{path}: no frames to write")
    pictures = [Image.fromarray(f) for f in frames]

    def write(tmp: Path) -> None:
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=duration_ms, loop=0)

    return atomic_write(Path(path), write)

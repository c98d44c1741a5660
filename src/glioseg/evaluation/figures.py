"""Pictures: label overlays on FLAIR and T1ce, and slice-sweep GIFs.

Training curves are drawn by :mod:`glioseg.training.curves`.

Colours follow the usual BraTS figures: edema green, necrotic core red, enhancing tumour
yellow (resection cavity blue). Slices are shown with the superior / anterior side up.
matplotlib is imported inside the functions and drawn with the Agg canvas (no display, no
pyplot global state); GIFs are written with Pillow (no ffmpeg).

Arrays are in the canonical RAS orientation of :mod:`glioseg.data.nifti`: images float ``(X, Y, Z)``,
label maps uint8 ``(X, Y, Z)`` canonical labels.
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

LABEL_COLOURS: dict[int, tuple[float, float, float]] = {
    NCR: (1.0, 0.0, 0.0), ED: (0.0, 0.8, 0.0), ET: (1.0, 0.9, 0.0), RC: (0.2, 0.4, 1.0),
}
LABEL_NAMES: dict[int, str] = {NCR: "necrotic core (NCR)", ED: "edema (ED)", ET: "enhancing (ET)",
                               RC: "resection cavity (RC)"}
PLANES: tuple[tuple[str, int], ...] = (("axial", 2), ("coronal", 1), ("sagittal", 0))


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
        return tuple(s // 2 for s in tumour.shape)
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


def plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One slice of a canonical ``(X, Y, Z)`` volume, rotated for display (superior/anterior up)."""
    return np.rot90(np.take(volume, index, axis=axis))


def plane_aspect(spacing: Sequence[float], axis: int) -> float:
    """Display aspect (row height / column width) of :func:`plane` for a voxel spacing."""
    cols, rows = (a for a in range(3) if a != axis)
    return float(spacing[rows]) / float(spacing[cols])


def _legend_handles(labels: Sequence[np.ndarray | None]):
    from matplotlib.patches import Patch

    present = set()
    for lab in labels:
        if lab is not None:
            present |= set(np.unique(lab).tolist())
    keys = [k for k in LABEL_COLOURS if k in present and k != RC] + ([RC] if RC in present else [])
    keys = keys or [NCR, ED, ET]
    return [Patch(color=LABEL_COLOURS[k], label=LABEL_NAMES[k]) for k in keys]


def new_figure(width: float, height: float) -> Figure:
    """A black Figure of ``width`` x ``height`` inches on an Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), facecolor="black")
    FigureCanvasAgg(fig)
    return fig


def _show(ax: Any, image: np.ndarray, labels: np.ndarray | None, aspect: float) -> None:
    """Draw one ``(H, W)`` slice with its label overlay on an axis without ticks."""
    ax.imshow(overlay(image, labels), aspect=aspect, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])


def case_figure(flair: np.ndarray, t1ce: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None = None,
                spacing: Sequence[float] = (1.0, 1.0, 1.0), title: str = "") -> Figure:
    """Ground truth and prediction side by side on FLAIR and T1ce, in three planes.

    The planes go through the tumour's largest cross-section (of the ground truth, or of the
    prediction without one).

    Args:
        flair, t1ce: float ``(X, Y, Z)`` images.
        gt: uint8 canonical labels ``(X, Y, Z)`` or None.
        pred: uint8 canonical labels ``(X, Y, Z)`` or None.
        spacing: voxel size in mm (sets the aspect ratio).
        title: figure title.

    Returns:
        A matplotlib Figure (Agg canvas): rows axial, coronal, sagittal; columns FLAIR and T1ce
        with the ground truth and with the prediction.
    """
    reference = gt if gt is not None and np.any(gt) else (pred if pred is not None else np.zeros(flair.shape, np.uint8))
    centre = largest_cross_section(reference)
    images = {"FLAIR": normalize_image(flair), "T1ce": normalize_image(t1ce)}
    columns = [(name, label_name, lab) for name in images for label_name, lab in
               (("ground truth", gt), ("prediction", pred)) if lab is not None or label_name == "ground truth"]
    fig = new_figure(3.0 * len(columns), 3.0 * len(PLANES) + 0.9)
    axes = fig.subplots(len(PLANES), len(columns), squeeze=False)
    for row, (plane_name, axis) in enumerate(PLANES):
        for col, (image_name, label_name, lab) in enumerate(columns):
            ax = axes[row][col]
            shown = None if lab is None else plane(lab, axis, centre[axis])
            _show(ax, plane(images[image_name], axis, centre[axis]), shown, plane_aspect(spacing, axis))
            if row == 0:
                ax.set_title(f"{image_name} + {label_name}", color="white", fontsize=10)
            if col == 0:
                ax.set_ylabel(f"{plane_name} {centre[axis]}", color="white", fontsize=10)
    fig.legend(handles=_legend_handles([gt, pred]), loc="lower center", ncol=4, frameon=False, labelcolor="white",
               fontsize=9)
    if title:
        fig.suptitle(title, color="white", fontsize=12)
    fig.subplots_adjust(left=0.04, right=0.99, top=0.93 if title else 0.96, bottom=0.07, wspace=0.03, hspace=0.06)
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
                     spacing: Sequence[float] = (1.0, 1.0, 1.0), title: str = "") -> Figure:
    """Small axial view through the largest cross-section: FLAIR + ground truth | + prediction.

    Args:
        flair: float ``(X, Y, Z)``.
        gt, pred: uint8 canonical labels ``(X, Y, Z)`` (pred may be None for a failed case).
        spacing: voxel size in mm.
        title: shown above.

    Returns:
        A 2-panel Figure.
    """
    z = largest_cross_section(gt if np.any(gt) or pred is None else pred)[2]
    image = plane(normalize_image(flair), 2, z)
    fig = new_figure(4.4, 2.5)
    axes = fig.subplots(1, 2)
    for ax, (name, lab) in zip(axes, (("ground truth", gt), ("prediction", pred)), strict=True):
        _show(ax, image, None if lab is None else plane(lab, 2, z), plane_aspect(spacing, 2))
        ax.set_title(name if lab is not None else "no prediction", color="white", fontsize=8)
    if title:
        fig.suptitle(title, color="white", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.82, bottom=0.01, wspace=0.02)
    return fig


# ----------------------------------------------------------------------------- GIF sweep


def sweep_frames(flair: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None = None, axis: int = 2,
                 margin: int = 5, scale: int = 1) -> list[np.ndarray]:
    """Frames of a slice sweep through the tumour: FLAIR + ground truth | FLAIR + prediction.

    Args:
        flair: float ``(X, Y, Z)``.
        gt, pred: uint8 canonical labels ``(X, Y, Z)`` or None.
        axis: swept axis (2 = axial).
        margin: extra slices before and after the tumour.
        scale: integer upsampling of each frame (nearest).

    Returns:
        uint8 RGB frames ``(H, W, 3)``.
    """
    labels = [lab for lab in (gt, pred) if lab is not None]
    tumour = np.zeros(flair.shape, bool) if not labels else np.logical_or.reduce([lab > 0 for lab in labels])
    box = bounding_box(tumour, margin)
    span = box[axis] if box is not None else slice(0, flair.shape[axis])
    image = normalize_image(flair)
    sources: list[np.ndarray | None] = list(labels) or [None]
    frames = []
    for index in range(span.start, span.stop):
        base = plane(image, axis, index)
        panels = [overlay(base, None if lab is None else plane(lab, axis, index)) for lab in sources]
        gap = np.ones((base.shape[0], 2, 3), np.float32)
        rgb = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
        frames.append(np.kron((rgb * 255).astype(np.uint8), np.ones((scale, scale, 1), np.uint8)))
    return frames


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

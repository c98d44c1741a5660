"""Synthetic brain-tumour cases: small, seeded phantoms written in every supported layout.

A phantom is a skull-stripped ellipsoidal brain (grey-matter shell, white-matter core, two
ventricles) with one glioma: necrotic core (NCR), enhancing rim (ET) and surrounding edema (ED),
at a random position and size. Each tissue has each modality's signature (edema bright on FLAIR
and T2, enhancing rim bright on T1ce, necrotic core dark on T1ce), and a smooth multiplicative
bias field and Gaussian noise are applied inside the brain; the background is exactly 0, as in
BraTS.

Arrays are produced in the canonical RAS orientation (see :mod:`glioseg.data.nifti`) and reoriented to
the requested affine on writing, so that reading a written case gives back the phantom.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

from glioseg.data.naming import BRATS2017_SUFFIX, BRATS2023_SUFFIX, LAYOUTS
from glioseg.data.nifti import CANONICAL_AXCODES, MODALITIES, Geometry
from glioseg.labels import CANONICAL_NAMES, ED, ET, NCR, LabelScheme, get_scheme
from glioseg.utils import atomic_write

DEFAULT_SCHEME: dict[str, str] = {
    "brats2017": "brats2017", "brats2023": "brats2023", "msd": "msd", "nnunet": "brats2023",
}
# Tissue classes of the phantom (not labels): background, CSF, GM, WM, then the tumour parts.
BG_T, CSF_T, GM_T, WM_T, ED_T, ET_T, NCR_T = range(7)
# Mean intensity per tissue (rows) and modality (columns T1, T1ce, T2, FLAIR), scanner-like units.
TISSUE_INTENSITY = np.array(
    [
        [0.0, 0.0, 0.0, 0.0],  # background
        [250.0, 250.0, 1000.0, 150.0],  # CSF: dark on T1/FLAIR, bright on T2
        [600.0, 620.0, 600.0, 600.0],  # grey matter
        [800.0, 820.0, 400.0, 450.0],  # white matter
        [500.0, 520.0, 950.0, 1200.0],  # edema: bright on T2 and FLAIR
        [550.0, 1400.0, 800.0, 900.0],  # enhancing rim: bright on T1ce
        [300.0, 250.0, 1100.0, 700.0],  # necrotic core: dark on T1ce, bright on T2
    ],
    dtype=np.float32,
)
TISSUE_TO_LABEL = np.array([0, 0, 0, 0, ED, ET, NCR], dtype=np.uint8)
CHANNEL_NAMES = {"t1": "T1w", "t1ce": "t1gd", "t2": "T2w", "flair": "FLAIR"}


def default_affine(shape: Sequence[int]) -> np.ndarray:
    """A BraTS-like LPS affine, 1 mm, with an origin away from zero.

    Args:
        shape: spatial shape ``(I, J, K)`` of the on-disk array.

    Returns:
        float64 4x4 voxel-to-world (RAS mm) affine with axis codes L, P, S.
    """
    return np.array(
        [
            [-1.0, 0.0, 0.0, 0.5 * shape[0] + 3.0],
            [0.0, -1.0, 0.0, shape[1] - 10.0],
            [0.0, 0.0, 1.0, -0.5 * shape[2] + 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def _grid(shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open coordinate grids in [-1, 1] along each axis (broadcastable, float32)."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    return np.ix_(*axes)  # type: ignore[return-value]


def _ellipsoid_radius(grid: Sequence[np.ndarray], centre: Sequence[float] | np.ndarray,
                      radii: Sequence[float] | np.ndarray) -> np.ndarray:
    """Normalised ellipsoidal radius: < 1 inside the ellipsoid."""
    return np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)))


def _wobble(grid: Sequence[np.ndarray], rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Smooth low-frequency perturbation (a few random sinusoids), shape of the grid."""
    out = np.zeros(np.broadcast_shapes(*(g.shape for g in grid)), dtype=np.float32)
    for _ in range(3):
        freq = rng.uniform(1.0, 3.0, size=3)
        phase = rng.uniform(0, 2 * np.pi, size=3)
        term = np.ones_like(out)
        for g, f, p in zip(grid, freq, phase, strict=True):
            term = term * np.cos(f * np.pi * g + p)
        out += term
    return (amplitude / 3.0) * out


def _tissue_map(shape: Sequence[int], rng: np.random.Generator, tumour: bool) -> np.ndarray:
    """Tissue class per voxel (uint8, values ``BG_T..NCR_T``), canonical orientation."""
    grid = _grid(shape)
    brain_r = _ellipsoid_radius(grid, (0.0, 0.0, 0.0), rng.uniform(0.78, 0.9, size=3))
    brain_r = brain_r + _wobble(grid, rng, 0.04)
    tissue = np.zeros(tuple(shape), dtype=np.uint8)
    tissue[brain_r < 1.0] = GM_T
    tissue[brain_r < 0.8 + _wobble(grid, rng, 0.05)] = WM_T
    for side in (-1.0, 1.0):  # two lateral ventricles
        vent = _ellipsoid_radius(grid, (side * 0.12, 0.05, 0.1), (0.07, 0.3, 0.14))
        tissue[vent < 1.0] = CSF_T
    if tumour:
        _add_tumour(tissue, grid, brain_r, rng)
    return tissue


def _add_tumour(tissue: np.ndarray, grid: Sequence[np.ndarray], brain_r: np.ndarray,
                rng: np.random.Generator) -> None:
    """Paint edema, enhancing rim and necrotic core (in place) at a random position and size."""
    radius = rng.uniform(0.2, 0.32)  # tumour core radius, fraction of the half-width
    centre = rng.uniform(-0.3, 0.3, size=3)
    aspect = rng.uniform(0.8, 1.25, size=3)
    core_r = _ellipsoid_radius(grid, centre, radius * aspect) + _wobble(grid, rng, 0.1)
    brain = brain_r < 1.0
    edema_extent = rng.uniform(1.4, 1.9)
    tissue[(core_r < edema_extent) & brain] = ED_T
    tissue[(core_r < 1.0) & brain] = ET_T
    tissue[(core_r < rng.uniform(0.5, 0.7)) & brain] = NCR_T


def _bias_field(shape: Sequence[int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth multiplicative field exp(sum of low-order polynomial terms), float32."""
    x, y, z = _grid(shape)
    c = rng.normal(0.0, strength, size=6).astype(np.float32)
    log_field = c[0] * x + c[1] * y + c[2] * z + c[3] * x * y + c[4] * (y * z) + c[5] * (z * z - 0.33)
    return np.exp(log_field).astype(np.float32)


def make_synthetic_case(
    shape: Sequence[int] = (48, 48, 48),
    seed: int | np.random.Generator = 0,
    tumour: bool = True,
    noise: float = 0.04,
    bias: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """Make one brain phantom with a glioma, in the canonical orientation.

    Args:
        shape: spatial shape ``(X, Y, Z)``; each axis >= 16.
        seed: integer seed or a numpy Generator (same seed -> same case).
        tumour: add a tumour (False gives a healthy brain and an all-zero label map).
        noise: Gaussian noise standard deviation, as a fraction of each channel's white-matter
            intensity.
        bias: strength of the smooth multiplicative bias field (0 disables it).

    Returns:
        ``(image, label)``: image float32 ``(4, X, Y, Z)`` with channels T1, T1ce, T2, FLAIR
        (0 outside the brain, roughly 0..1600 inside); label uint8 ``(X, Y, Z)`` canonical labels
        (0 BG, 1 NCR, 2 ED, 3 ET).

    Raises:
        ValueError: shape is not 3-D or an axis is smaller than 16.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"synthetic shape must be 3 axes of >= 16 voxels, got {shape}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    tissue = _tissue_map(shape, rng, tumour)
    brain = tissue != BG_T
    image = np.ascontiguousarray(TISSUE_INTENSITY.T)[:, tissue]  # (4, X, Y, Z)
    field = _bias_field(shape, rng, bias) if bias > 0 else np.float32(1.0)
    scale = (noise * TISSUE_INTENSITY[WM_T]).astype(np.float32)[:, None, None, None]
    noisy = image * field + scale * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.where(brain, np.maximum(noisy, 1.0), 0.0).astype(np.float32)
    return image, TISSUE_TO_LABEL[tissue]


def synthetic_geometry(shape: Sequence[int], affine: np.ndarray | None = None) -> Geometry:
    """On-disk geometry for a phantom of canonical shape ``shape`` written with ``affine``.

    Args:
        shape: canonical (RAS) spatial shape ``(X, Y, Z)``.
        affine: 4x4 voxel-to-world affine of the file (any orientation, may be oblique);
            :func:`default_affine` when None. Its axis order decides the on-disk shape.

    Returns:
        Geometry with a NIfTI header whose qform and sform (code 1, scanner) hold the affine.
    """
    if affine is None:
        affine = default_affine(shape)
    affine = np.asarray(affine, dtype=np.float64)
    disk_ornt = io_orientation(affine)
    disk_shape = tuple(int(shape[int(axis)]) for axis in disk_ornt[:, 0])
    header = nib.Nifti1Header()
    header.set_data_shape(disk_shape)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm", "sec")
    ornt = ornt_transform(disk_ornt, axcodes2ornt(CANONICAL_AXCODES))
    return Geometry(disk_shape, affine, header, ornt)  # type: ignore[arg-type]


def _save_nifti(data: np.ndarray, geometry: Geometry, path: Path) -> Path:
    """Write an on-disk-oriented array (3-D or 4-D) with the geometry's affine and header."""
    header = geometry.header.copy()
    header.set_data_dtype(data.dtype)
    img = nib.Nifti1Image(data, geometry.affine, header)
    img.set_qform(geometry.affine, code=int(geometry.header["qform_code"]))
    img.set_sform(geometry.affine, code=int(geometry.header["sform_code"]))
    return atomic_write(path, lambda tmp: nib.save(img, str(tmp)))


def _to_int16(channel: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(channel), -32768, 32767).astype(np.int16)


def _case_id(layout: str, index: int) -> str:
    return {
        "brats2017": f"Brats18_SYN_{index:03d}_1",
        "brats2023": f"BraTS-GLI-{index:05d}-000",
        "msd": f"BRATS_{index:03d}",
        "nnunet": f"BraTS_{index:05d}",
    }[layout]


def _write_brats_case(root: Path, case_id: str, image: np.ndarray, label: np.ndarray | None,
                      geometry: Geometry, scheme: LabelScheme, layout: str) -> Path:
    """One BraTS-style folder ``root/<ID>/<ID>{_|-}<suffix>.nii.gz``; returns the folder."""
    sep, suffixes = ("_", BRATS2017_SUFFIX) if layout == "brats2017" else ("-", BRATS2023_SUFFIX)
    folder = root / case_id
    for channel, modality in zip(image, MODALITIES, strict=True):
        data = _to_int16(geometry.from_canonical(channel))
        _save_nifti(data, geometry, folder / f"{case_id}{sep}{suffixes[modality]}.nii.gz")
    if label is not None:
        seg = scheme.from_canonical(geometry.from_canonical(label))
        _save_nifti(seg, geometry, folder / f"{case_id}{sep}seg.nii.gz")
    return folder


def _write_stacked_case(root: Path, case_id: str, image: np.ndarray, label: np.ndarray | None,
                        geometry: Geometry, scheme: LabelScheme, layout: str,
                        channel_order: Sequence[str]) -> Path:
    """One MSD (4-D file) or nnU-Net (``_000c`` files) case; returns its (first) image file."""
    channels = [_to_int16(geometry.from_canonical(image[MODALITIES.index(m)])) for m in channel_order]
    if layout == "msd":
        first = _save_nifti(np.stack(channels, axis=-1), geometry, root / "imagesTr" / f"{case_id}.nii.gz")
    else:
        paths = [_save_nifti(data, geometry, root / "imagesTr" / f"{case_id}_{c:04d}.nii.gz")
                 for c, data in enumerate(channels)]
        first = paths[0]
    if label is not None:
        seg = scheme.from_canonical(geometry.from_canonical(label))
        _save_nifti(seg, geometry, root / "labelsTr" / f"{case_id}.nii.gz")
    return first


def _dataset_json(layout: str, case_ids: Sequence[str], scheme: LabelScheme,
                  channel_order: Sequence[str], with_labels: bool) -> dict:
    """dataset.json of an MSD Task01 or nnU-Net v2 raw dataset."""
    names = {value: ("background" if canon == 0 else CANONICAL_NAMES[canon])
             for canon, value in scheme.to_file.items()}
    channel_names = {str(i): CHANNEL_NAMES[m] for i, m in enumerate(channel_order)}
    if layout == "msd":
        training = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in case_ids]
        return {"name": "BRATS (synthetic)", "tensorImageSize": "4D", "modality": channel_names,
                "labels": {str(v): n for v, n in sorted(names.items())},
                "numTraining": len(case_ids), "training": training if with_labels else []}
    return {"name": "BraTS (synthetic)", "channel_names": channel_names,
            "labels": {n: v for v, n in sorted(names.items())},
            "numTraining": len(case_ids), "file_ending": ".nii.gz", "glioseg_label_scheme": scheme.name}


def write_synthetic_dataset(
    out: Path | str,
    n_cases: int,
    layout: str = "brats2017",
    scheme: str | LabelScheme | None = None,
    shape: Sequence[int] = (48, 48, 48),
    seed: int = 0,
    affine: np.ndarray | None = None,
    with_labels: bool = True,
    nested: bool = False,
    channel_order: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``n_cases`` phantoms as NIfTI files in a dataset layout and label scheme.

    Images are int16, segmentations uint8; every file is written atomically. Case ``i`` is
    ``make_synthetic_case(shape, seed=np.random.default_rng((seed, i)))``.

    Args:
        out: dataset folder (created; existing files with the same names are replaced).
        n_cases: number of cases (>= 1).
        layout: one of :data:`LAYOUTS`: ``brats2017`` (``<ID>/<ID>_t1.nii.gz`` ...),
            ``brats2023`` (``<ID>/<ID>-t1n.nii.gz`` ...), ``msd`` (4-D ``imagesTr`` +
            ``labelsTr`` + dataset.json) or ``nnunet`` (``imagesTr/<ID>_000c`` + dataset.json).
        scheme: label scheme of the segmentations; the layout's default
            (:data:`DEFAULT_SCHEME`) when None.
        shape: canonical (RAS) spatial shape ``(X, Y, Z)`` of each phantom.
        seed: base seed; the dataset is a pure function of the arguments.
        affine: 4x4 affine of every file (non-RAS and oblique allowed); a 1 mm LPS affine with an
            offset origin (:func:`default_affine`) when None.
        with_labels: write segmentations.
        nested: brats2017 only: put cases in ``HGG/`` and ``LGG/`` subfolders (alternating).
        channel_order: msd/nnunet only: modality of each channel; MSD order
            (FLAIR, T1, T1ce, T2) when None.

    Returns:
        Per case, in order: the case folder (BraTS layouts) or the (first) image file
        (msd, nnunet).

    Raises:
        ValueError: unknown layout, bad ``n_cases`` or ``channel_order``.
    """
    order = _check_dataset_args(layout, n_cases, channel_order)
    label_scheme = get_scheme(scheme if scheme is not None else DEFAULT_SCHEME[layout])
    root = Path(out)
    geometry = synthetic_geometry(shape, affine)
    case_ids = [_case_id(layout, i) for i in range(n_cases)]
    written = []
    for i, case_id in enumerate(case_ids):
        image, label = make_synthetic_case(shape, seed=np.random.default_rng((seed, i)))
        seg = label if with_labels else None
        if layout in ("brats2017", "brats2023"):
            parent = root / ("HGG" if i % 2 == 0 else "LGG") if nested else root
            written.append(_write_brats_case(parent, case_id, image, seg, geometry, label_scheme, layout))
        else:
            written.append(_write_stacked_case(root, case_id, image, seg, geometry, label_scheme, layout, order))
    if layout in ("msd", "nnunet"):
        meta = _dataset_json(layout, case_ids, label_scheme, order, with_labels)
        atomic_write(root / "dataset.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    return written


def _check_dataset_args(layout: str, n_cases: int, channel_order: Sequence[str] | None) -> tuple[str, ...]:
    """Validate :func:`write_synthetic_dataset`'s arguments; returns the channel order.

    Raises:
        ValueError: unknown layout, bad ``n_cases`` or ``channel_order``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}")
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    order = tuple(channel_order) if channel_order is not None else ("flair", "t1", "t1ce", "t2")
    if sorted(order) != sorted(MODALITIES):
        raise ValueError(f"channel_order must be a permutation of {list(MODALITIES)}, got {list(order)}")
    return order

"""Reading cases and writing label maps, with their geometry kept exactly.

Arrays inside glioseg are in one canonical orientation (RAS+ axis order and direction, obtained
by axis permutations and flips only, so the round trip is exact). :class:`Geometry` remembers the
on-disk shape, affine and header and undoes the reorientation on output, so that a written label
map has the input's shape, affine, qform/sform codes and header.

No torch here: this layer is numpy + nibabel.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import (
    aff2axcodes,
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

from glioseg.labels import LabelScheme, get_scheme
from glioseg.scheme_rules import case_scheme
from glioseg.utils import atomic_write

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
CANONICAL_AXCODES: tuple[str, str, str] = ("R", "A", "S")
AFFINE_TOLERANCE_MM = 1e-3
_T = TypeVar("_T")


class CaseError(Exception):
    """A problem with one case's input that the user must fix.

    Attributes:
        case_id: the case concerned.
        message: what is wrong and what to do (without the case and file).
        path: the file concerned, or None.
    """

    def __init__(self, case_id: str, message: str, path: Path | str | None = None) -> None:
        self.case_id = case_id
        self.message = message
        self.path = Path(path) if path is not None else None
        where = f" [{self.path}]" if self.path is not None else ""
        super().__init__(f"case {case_id}{where}: {message}")


def failure_message(case_id: str, exc: BaseException) -> str:
    """One line for a batch report: the exception's message, prefixed with the case when it does not name it."""
    message = str(exc)
    return message if case_id in message else f"case {case_id}: {type(exc).__name__}: {message}"


@dataclass(frozen=True)
class ImageSource:
    """One modality on disk: a 3-D file, or one volume of a 4-D file (MSD, nnU-Net stacks)."""

    path: Path
    volume: int | None = None


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case, as found on disk.

    Attributes:
        case_id: case identifier (e.g. ``Brats18_2013_2_1``).
        images: modality name (one of :data:`MODALITIES`) -> source.
        label: segmentation file or None.
        layout: name of the layout it was found in (``brats2017``, ``brats2023``, ``msd``,
            ``nnunet``, ``files``).
        scheme_hint: label scheme the layout (or its dataset.json) states, or None when it does not.
        problems: problems found while discovering the case (e.g. a duplicated modality), each
            a message naming the file and the fix; :func:`read_case` refuses such a case.
        scheme_evidence: where ``scheme_hint`` comes from, for messages (e.g. ``"BraTS 2023+ file
            names (<ID>-seg.nii.gz)"``); empty when nothing says.
    """

    case_id: str
    images: dict[str, ImageSource]
    label: Path | None = None
    layout: str = "files"
    scheme_hint: str | None = None
    problems: tuple[str, ...] = ()
    scheme_evidence: str = ""


@dataclass
class Geometry:
    """On-disk geometry of a case and the exact map to and from the canonical orientation.

    Attributes:
        shape: on-disk spatial shape ``(I, J, K)``.
        affine: on-disk voxel-to-world (RAS mm) affine, 4x4.
        header: NIfTI header of the reference modality (copied on output).
        to_canonical_ornt: nibabel orientation transform disk -> canonical.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    header: nib.Nifti1Header
    to_canonical_ornt: np.ndarray = field(repr=False)

    @classmethod
    def from_image(cls, img: nib.Nifti1Image) -> Geometry:
        """Geometry of a loaded NIfTI image (its first three axes).

        Raises:
            ValueError: the affine is degenerate (zero voxel size, non-finite values).
        """
        affine = np.asarray(img.affine, dtype=np.float64)
        if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
            raise ValueError(f"degenerate voxel-to-world affine {affine[:3].round(4).tolist()}; "
                             "fix the file's qform/sform (voxel sizes must be > 0)")
        ornt = ornt_transform(io_orientation(affine), axcodes2ornt(CANONICAL_AXCODES))
        header = nib.Nifti1Header.from_header(img.header)
        return cls(tuple(int(s) for s in img.shape[:3]), affine, header, ornt)  # type: ignore[arg-type]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the on-disk axes."""
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]

    @property
    def canonical_spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the canonical axes."""
        return self._to_canonical_axes(self.spacing)

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        """Spatial shape in the canonical orientation."""
        return self._to_canonical_axes(self.shape)

    def _to_canonical_axes(self, values: tuple[_T, _T, _T]) -> tuple[_T, _T, _T]:
        """Per-disk-axis values reordered along the canonical axes."""
        out = list(values)
        for disk_axis, canon_axis in enumerate(self.to_canonical_ornt[:, 0].astype(int)):
            out[canon_axis] = values[disk_axis]
        return out[0], out[1], out[2]

    @property
    def canonical_affine(self) -> np.ndarray:
        """Voxel-to-world affine of the canonical array (same world coordinates)."""
        return self.affine @ inv_ornt_aff(self.to_canonical_ornt, self.shape)

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """On-disk axis codes, e.g. ``('L', 'P', 'S')``."""
        return tuple(aff2axcodes(self.affine))

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """On-disk array ``(I, J, K)`` -> canonical ``(X, Y, Z)`` (contiguous copy)."""
        return np.ascontiguousarray(apply_orientation(array, self.to_canonical_ornt))

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """Canonical array ``(X, Y, Z)`` -> on-disk ``(I, J, K)``; exact inverse of to_canonical."""
        back = ornt_transform(axcodes2ornt(CANONICAL_AXCODES), io_orientation(self.affine))
        return np.ascontiguousarray(apply_orientation(array, back))

    def matches(self, other: Geometry, tol: float = AFFINE_TOLERANCE_MM) -> bool:
        """Same shape, and affines equal within ``tol`` (mm / direction units)."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=tol))


@dataclass
class Case:
    """A case in memory, canonical orientation.

    Attributes:
        case_id: identifier.
        image: float32 ``(4, X, Y, Z)``, channels T1, T1ce, T2, FLAIR.
        label: uint8 ``(X, Y, Z)`` canonical labels (see :mod:`glioseg.labels`) or None.
        geometry: on-disk geometry, for writing outputs.
        files: where it came from.
        scheme: label scheme of the source segmentation, or None without one.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    geometry: Geometry
    files: CaseFiles
    scheme: LabelScheme | None = None


def load_nifti(path: Path, case_id: str) -> nib.Nifti1Image:
    """Open a NIfTI file with errors that name the case, the file and the fix.

    Raises:
        CaseError: missing, empty, not NIfTI, or unreadable header.
    """
    path = Path(path)
    if not path.is_file():
        raise CaseError(case_id, "file not found; check the path and the file name", path)
    if path.stat().st_size == 0:
        raise CaseError(case_id, "file is empty (0 bytes); re-export or re-download it", path)
    try:
        img = nib.load(str(path))
    except (ImageFileError, gzip.BadGzipFile, EOFError, OSError, zlib.error, ValueError) as exc:
        raise CaseError(case_id, f"not a readable NIfTI file ({exc}); re-export it as .nii/.nii.gz", path) from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise CaseError(case_id, f"expected NIfTI, got {type(img).__name__}; convert to .nii.gz", path)
    return img


def read_array(img: nib.Nifti1Image, path: Path, case_id: str, volume: int | None = None,
               dtype: type = np.float32) -> np.ndarray:
    """Read the voxels of a 3-D file (or one volume of a 4-D one), applying the scaling.

    Raises:
        CaseError: truncated or corrupt data, or wrong dimensionality.
    """
    shape = img.shape
    if volume is None and (len(shape) != 3 and not (len(shape) == 4 and shape[3] == 1)):
        raise CaseError(case_id, f"expected a 3-D volume, got shape {shape}; give one 3-D file per modality", path)
    if volume is not None and (len(shape) != 4 or volume >= shape[3]):
        raise CaseError(case_id, f"expected a 4-D file with >= {volume + 1} volumes, got shape {shape}", path)
    try:
        if volume is None:
            data = np.asarray(img.dataobj[..., 0] if len(shape) == 4 else img.dataobj)
        else:
            data = np.asarray(img.dataobj[..., volume])
    except (EOFError, OSError, zlib.error, ValueError) as exc:
        raise CaseError(case_id, f"data are truncated or corrupt ({exc}); re-export the file", path) from exc
    return data.astype(dtype, copy=False) if dtype is not None else data


def image_geometry(img: nib.Nifti1Image, path: Path, case_id: str) -> Geometry:
    """:meth:`Geometry.from_image` with an error that names the case and the file.

    Raises:
        CaseError: degenerate affine.
    """
    try:
        return Geometry.from_image(img)
    except ValueError as exc:
        raise CaseError(case_id, str(exc), path) from exc


def _read_images(files: CaseFiles) -> tuple[np.ndarray, Geometry]:
    """The four modalities, canonical float32 ``(4, X, Y, Z)``, and the first one's geometry."""
    channels: list[np.ndarray] = []
    geometry: Geometry | None = None
    for modality in MODALITIES:
        src = files.images[modality]
        img = load_nifti(src.path, files.case_id)
        geo = image_geometry(img, src.path, files.case_id)
        if geometry is None:
            geometry = geo
        elif not geo.matches(geometry):
            raise CaseError(files.case_id, f"{modality} geometry (shape {geo.shape}) differs from "
                            f"{MODALITIES[0]} (shape {geometry.shape}); co-register the modalities", src.path)
        data = read_array(img, src.path, files.case_id, src.volume)
        if not np.isfinite(data).all():
            raise CaseError(files.case_id, f"{modality} contains NaN or inf; fix or mask these voxels", src.path)
        channels.append(geometry.to_canonical(data))
    assert geometry is not None  # internal: MODALITIES is not empty
    return np.stack(channels).astype(np.float32, copy=False), geometry


def _read_label(label_path: Path, files: CaseFiles, geometry: Geometry,
                label_scheme: str | LabelScheme | None) -> tuple[np.ndarray, LabelScheme]:
    """The segmentation as canonical uint8 ``(X, Y, Z)`` labels, and its scheme."""
    img = load_nifti(label_path, files.case_id)
    raw = read_array(img, label_path, files.case_id, dtype=None)  # type: ignore[arg-type]
    if raw.dtype.kind == "f" and not (np.isfinite(raw).all() and np.array_equal(raw, np.round(raw))):
        raise CaseError(files.case_id, "segmentation holds non-integer values; expected integer labels", label_path)
    label_geo = image_geometry(img, label_path, files.case_id)
    if not label_geo.matches(geometry):
        raise CaseError(files.case_id, f"segmentation geometry (shape {label_geo.shape}) differs from the "
                        "images'; resample it onto the image grid", label_path)
    context = f"case {files.case_id} [{label_path}]"
    if label_scheme is not None:
        scheme = get_scheme(label_scheme)
    else:  # this case alone; a dataset decides once with glioseg.data.schemes.decide_dataset_scheme
        scheme = case_scheme(raw, files.scheme_hint, files.scheme_evidence, context)
    return geometry.to_canonical(scheme.to_canonical(raw, context)), scheme


def read_case(files: CaseFiles, label_scheme: str | LabelScheme | None = None,
              read_label: bool = True) -> Case:
    """Read the four modalities (and the segmentation, if any) of one case.

    Args:
        files: the case's files, from :func:`glioseg.data.layouts.find_cases` or built by hand.
        label_scheme: scheme of the segmentation (e.g. the dataset's, from
            :func:`glioseg.data.schemes.decide_dataset_scheme`); decided from this case's layout,
            values and anatomy alone when None.
        read_label: also read the segmentation when the case has one.

    Returns:
        The case in canonical orientation: image ``(4, X, Y, Z)`` float32, label
        ``(X, Y, Z)`` uint8 canonical labels or None.

    Raises:
        CaseError: a missing/duplicated/unreadable file, mismatched geometry, non-finite values.
        LabelSchemeError: label values that fit no scheme or leave it undecided (its message
            names the case and the file).
    """
    if files.problems:
        raise CaseError(files.case_id, "; ".join(files.problems))
    missing = [m for m in MODALITIES if m not in files.images]
    if missing:
        raise CaseError(files.case_id, f"missing modalities {missing}; every case needs {list(MODALITIES)}")
    image, geometry = _read_images(files)
    if not read_label or files.label is None:
        return Case(files.case_id, image, None, geometry, files, None)
    label, scheme = _read_label(files.label, files, geometry, label_scheme)
    return Case(files.case_id, image, label, geometry, files, scheme)


def make_label_image(labels: np.ndarray, geometry: Geometry, scheme: str | LabelScheme) -> nib.Nifti1Image:
    """Build the NIfTI image of a canonical label map in the input's geometry and header.

    Args:
        labels: uint8 canonical labels in canonical orientation ``(X, Y, Z)``.
        geometry: the input case's geometry.
        scheme: label scheme to write.

    Returns:
        uint8 image with the input's shape, affine, qform/sform (and codes) and header fields.

    Raises:
        ValueError: the label map's shape does not match the geometry.
    """
    if tuple(labels.shape) != geometry.canonical_shape:
        raise ValueError(f"label map shape {labels.shape} != case shape {geometry.canonical_shape}")
    data = get_scheme(scheme).from_canonical(geometry.from_canonical(labels))
    img = _image_like(data.astype(np.uint8, copy=False), geometry)
    img.header["cal_min"], img.header["cal_max"] = 0, 0  # the image's display range means nothing for labels
    return img


def _image_like(data: np.ndarray, geometry: Geometry) -> nib.Nifti1Image:
    """An on-disk array ``(I, J, K)`` with the input's affine, qform/sform (and codes) and header
    (data type from ``data``, no scaling)."""
    header = geometry.header.copy()
    header.set_data_dtype(data.dtype)
    header.set_slope_inter(1.0, 0.0)
    img = nib.Nifti1Image(data, geometry.affine, header)
    src = geometry.header
    img.set_qform(src.get_qform(), code=int(src["qform_code"]))
    img.set_sform(src.get_sform(), code=int(src["sform_code"]))
    return img


def write_seg(labels: np.ndarray, geometry: Geometry, path: Path | str,
              scheme: str | LabelScheme = "brats2017") -> Path:
    """Write a canonical label map atomically, in the input's geometry and the given scheme.

    Args:
        labels: uint8 canonical labels ``(X, Y, Z)`` in canonical orientation.
        geometry: geometry of the case the labels belong to.
        path: output ``.nii.gz`` (or ``.nii``) path.
        scheme: label scheme of the written file.

    Returns:
        The written path.
    """
    img = make_label_image(labels, geometry, scheme)
    return atomic_write(Path(path), lambda tmp: nib.save(img, str(tmp)))


def write_image(array: np.ndarray, geometry: Geometry, path: Path | str) -> Path:
    """Write a float32 canonical-orientation volume ``(X, Y, Z)`` (probabilities, uncertainty)
    in the input's geometry, atomically."""
    img = _image_like(geometry.from_canonical(np.asarray(array, dtype=np.float32)), geometry)
    return atomic_write(Path(path), lambda tmp: nib.save(img, str(tmp)))

"""DICOM input: the MR series of a study found, assigned to T1/T1ce/T2/FLAIR and read exactly.

- :func:`find_series`: every MR image series under a folder (headers only; other objects such
  as SEG, SR or presentation states are left out).
- :func:`find_studies`: the series grouped by study, one case per study, and each study's four
  series assigned by :func:`assign_modalities`: ``SeriesDescription`` / ``ProtocolName`` patterns
  (FLAIR, T2, T1) and contrast (the ``ContrastBolusAgent`` tag or words such as "post", "Gd",
  "+C"), with explicit ``{modality: SeriesInstanceUID}`` overrides (``--series t1=UID,...``) and a
  one-line :class:`DicomError` naming the series and the override when it is ambiguous.
- :func:`convert_study`: the four series written as NIfTI files that
  :func:`glioseg.data.nifti.read_case` reads like any other case (``layout="dicom"``).

A series is read (exact geometry) by :func:`glioseg.interop.dicom_volume.read_series`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glioseg.data.nifti import MODALITIES, CaseFiles, ImageSource
from glioseg.interop.dicom_volume import DicomError, read_series

__all__ = ["DicomError", "DicomStudy", "SeriesInfo", "assign_modalities", "classify", "convert_study", "find_series",
           "find_studies"]

_HEADER_TAGS = ["SeriesInstanceUID", "StudyInstanceUID", "Modality", "SeriesDescription", "ProtocolName",
                "SeriesNumber", "ContrastBolusAgent", "ImageType", "PatientID", "StudyDate", "NumberOfFrames",
                "ImagePositionPatient", "ImageOrientationPatient", "SOPInstanceUID", "FrameOfReferenceUID"]

EXCLUDED = re.compile(r"localizer|scout|survey|dwi|diffusion|\badc\b|trace|perfusion|\bdsc\b|\bdce\b|\bswi\b|"
                      r"t2\*|t2_?star|\bmra\b|\btof\b|spectro|subtract")
PATTERNS: dict[str, re.Pattern[str]] = {
    "flair": re.compile(r"flair|dark[ _-]?fluid|\btirm\b"),
    "t2": re.compile(r"t2"),
    "t1": re.compile(r"t1|mp-?rage|spgr|bravo"),
}
CONTRAST = re.compile(r"post|gad|\bgd\b|\+ ?c\b|\bc\+|contrast|\bce\b|t1c|t1gd|\bkm\b|\bmdc\b")
PRE_CONTRAST = re.compile(r"\bpre\b|pre[-_ ]?(contrast|gd|gad)|\bnative?\b|\bnon[-_ ]?contrast")


@dataclass
class SeriesInfo:
    """One DICOM series found on disk (headers only).

    Attributes:
        uid: SeriesInstanceUID.
        study_uid: StudyInstanceUID.
        files: its files (unsorted: :func:`read_series` sorts them along the slice normal).
        description: SeriesDescription (``""`` when absent).
        protocol: ProtocolName.
        number: SeriesNumber, or None.
        contrast_agent: ContrastBolusAgent (``""`` when absent or empty).
        derived: ImageType says DERIVED (a reformat or a computed series).
        patient_id, study_date: for case IDs.
        multiframe: the files are multi-frame (enhanced) objects.
    """

    uid: str
    study_uid: str
    files: list[Path] = field(default_factory=list)
    description: str = ""
    protocol: str = ""
    number: int | None = None
    contrast_agent: str = ""
    derived: bool = False
    patient_id: str = ""
    study_date: str = ""
    multiframe: bool = False

    def label(self) -> str:
        """``UID ('description', #number)``, for messages."""
        number = f", #{self.number}" if self.number is not None else ""
        return f"{self.uid} ({self.description or self.protocol or 'no description'!r}{number})"

    @property
    def text(self) -> str:
        """Lower-case description and protocol, the text the modality patterns look at."""
        return f"{self.description} {self.protocol}".lower()


@dataclass
class DicomStudy:
    """One study: a case. ``series`` maps each modality of :data:`MODALITIES` to its series."""

    case_id: str
    root: Path
    series: dict[str, SeriesInfo]
    others: list[SeriesInfo] = field(default_factory=list)


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, "")
    return " ".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value or "")


def _candidate_files(root: Path) -> list[Path]:
    """Every non-hidden file under ``root`` (DICOM files often have no suffix)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".")
                                                                         for part in p.relative_to(root).parts))


def find_series(root: Path | str) -> list[SeriesInfo]:
    """Every MR image series under ``root``, by SeriesInstanceUID (headers only, no pixel data).

    Raises:
        DicomError: ``root`` is not a folder, or holds no MR image series.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    root = Path(root)
    if not root.is_dir():
        raise DicomError(f"{root}: not a folder; give the folder holding the study's DICOM files (--dicom DIR)")
    found: dict[str, SeriesInfo] = {}
    for path in _candidate_files(root):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue  # not DICOM (a README, a DICOMDIR's neighbours): not part of any series
        if _text(ds, "Modality") != "MR" or "ImagePositionPatient" not in ds or "SeriesInstanceUID" not in ds:
            continue
        info = found.setdefault(str(ds.SeriesInstanceUID), _series_info(ds))
        info.files.append(path)
    if not found:
        raise DicomError(f"{root}: no MR image series found (DICOM files with Modality MR and an "
                         "ImagePositionPatient); give the folder of the study's exported series")
    return sorted(found.values(), key=lambda s: (s.study_uid, s.number if s.number is not None else -1, s.uid))


def _series_info(ds: Any) -> SeriesInfo:
    number = ds.get("SeriesNumber")
    return SeriesInfo(str(ds.SeriesInstanceUID), _text(ds, "StudyInstanceUID"), [], _text(ds, "SeriesDescription"),
                      _text(ds, "ProtocolName"), int(number) if number not in (None, "") else None,
                      _text(ds, "ContrastBolusAgent").strip(), "DERIVED" in _text(ds, "ImageType").upper(),
                      _text(ds, "PatientID"), _text(ds, "StudyDate"), int(ds.get("NumberOfFrames") or 1) > 1)


def classify(series: SeriesInfo) -> str | None:
    """The modality a series looks like (``t1``, ``t1ce``, ``t2``, ``flair``), or None.

    FLAIR before T2 (a FLAIR is T2-weighted); a T1 is ``t1ce`` when its ContrastBolusAgent is
    set or its description says post-contrast, and not pre-contrast.
    """
    text = series.text
    if EXCLUDED.search(text):
        return None
    for modality, pattern in PATTERNS.items():
        if pattern.search(text):
            if modality != "t1":
                return modality
            contrast = bool(series.contrast_agent) or bool(CONTRAST.search(text))
            return "t1ce" if contrast and not PRE_CONTRAST.search(text) else "t1"
    return None


def assign_modalities(series: list[SeriesInfo], overrides: dict[str, str] | None = None,
                      where: str = "study") -> dict[str, SeriesInfo]:
    """Assign one series of a study to each of T1, T1ce, T2 and FLAIR.

    Args:
        series: the study's series.
        overrides: modality -> SeriesInstanceUID, taken as given (those series are not
            candidates for the other modalities).
        where: the study, for messages.

    Returns:
        Modality -> series, for every modality of :data:`MODALITIES`.

    Raises:
        DicomError: an override names no series of the study, or a modality has no or several
            candidates (the message lists them and the ``--series`` to give).
    """
    by_uid = {s.uid: s for s in series}
    chosen: dict[str, SeriesInfo] = {}
    for modality, uid in (overrides or {}).items():
        if uid not in by_uid:
            raise DicomError(f"{where}: --series {modality}={uid} names no series of this study; its series are "
                             f"{', '.join(s.label() for s in series)}")
        chosen[modality] = by_uid[uid]
    free = [s for s in series if s not in chosen.values()]
    for modality in MODALITIES:
        if modality not in chosen:
            chosen[modality] = _pick(modality, free, series, where)
    return {m: chosen[m] for m in MODALITIES}


def _pick(modality: str, free: list[SeriesInfo], every: list[SeriesInfo], where: str) -> SeriesInfo:
    """The one free series that looks like ``modality`` (original series preferred over derived)."""
    candidates = [s for s in free if classify(s) == modality]
    if len(candidates) > 1 and any(not s.derived for s in candidates):
        candidates = [s for s in candidates if not s.derived]
    name = "T1ce" if modality == "t1ce" else modality.upper()
    if not candidates:
        raise DicomError(f"{where}: no series looks like {name} (by SeriesDescription/ProtocolName"
                         f"{' and contrast tags' if modality.startswith('t1') else ''}); its series are "
                         f"{', '.join(s.label() for s in every)}; give it with --series {modality}=<UID>")
    if len(candidates) > 1:
        raise DicomError(f"{where}: {len(candidates)} series look like {name}: "
                         f"{', '.join(s.label() for s in candidates)}; choose one with --series "
                         f"{modality}=<UID>, e.g. --series {modality}={candidates[0].uid}")
    return candidates[0]


def find_studies(root: Path | str, overrides: dict[str, str] | None = None,
                 failures: dict[str, str] | None = None) -> list[DicomStudy]:
    """The studies under ``root`` (one study, or one sub-folder per study), each assigned.

    Args:
        root: the DICOM folder.
        overrides: modality -> SeriesInstanceUID (``--series``); each study takes the overrides
            naming its own series.
        failures: when given, a study whose series cannot be assigned is left out and its
            one-line reason stored here under its case ID (batch commands go on with the others);
            when None, the first such study raises.

    Returns:
        One study per StudyInstanceUID, sorted by case ID: the study's folder name (``root``'s own
        name when it holds one study), made unique with the study date.

    Raises:
        DicomError: no MR series, an override naming no series found, or (without ``failures``)
            an ambiguous or incomplete assignment.
    """
    root = Path(root)
    series = find_series(root)
    wanted = dict(overrides or {})
    unknown = [f"{m}={u}" for m, u in wanted.items() if u not in {s.uid for s in series}]
    if unknown:
        raise DicomError(f"{root}: --series {', '.join(unknown)} names no MR series found there; its series are "
                         f"{', '.join(s.label() for s in series)}")
    groups: dict[str, list[SeriesInfo]] = {}
    for s in series:
        groups.setdefault(s.study_uid, []).append(s)
    studies: list[DicomStudy] = []
    taken: set[str] = set()
    for members in groups.values():
        case_id = _study_id(root, members, len(groups), taken)
        taken.add(case_id)
        own = {m: u for m, u in wanted.items() if u in {s.uid for s in members}}
        try:
            chosen = assign_modalities(members, own, f"study {case_id} [{_study_folder(root, members)}]")
        except DicomError as exc:
            if failures is None:
                raise
            failures[case_id] = str(exc)
            continue
        studies.append(DicomStudy(case_id, root, chosen, [s for s in members if s not in chosen.values()]))
    return sorted(studies, key=lambda st: st.case_id)


def _study_folder(root: Path, members: list[SeriesInfo]) -> Path:
    """The deepest folder holding every file of a study."""
    parts = [p.relative_to(root).parent.parts for s in members for p in s.files]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return root.joinpath(*common)


def _study_id(root: Path, members: list[SeriesInfo], n_studies: int, taken: set[str]) -> str:
    """A plain case ID for a study: its top sub-folder (``root``'s name for a lone study)."""
    folder = _study_folder(root, members)
    top = folder.relative_to(root).parts
    base = top[0] if top and n_studies > 1 else (root.resolve().name or "study")
    if n_studies > 1 and not top:
        base = members[0].patient_id or "study"
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "study"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{members[0].study_date or n}" if n == 2 else f"{base}_{n}"
    return candidate


def convert_study(study: DicomStudy, folder: Path | str) -> CaseFiles:
    """Write the study's four series as NIfTI files in ``folder/<ID>/`` and return the case.

    The NIfTI files have the series' exact geometry (:func:`read_series`); read the case with
    :func:`glioseg.data.nifti.read_case`. ``folder`` must be a scratch folder, never the DICOM one.

    Raises:
        DicomError: a series :func:`read_series` refuses.
    """
    import nibabel as nib

    target = Path(folder) / study.case_id
    target.mkdir(parents=True, exist_ok=True)
    images = {}
    for modality, series in study.series.items():
        volume = read_series(series, f"study {study.case_id} ({modality})")
        path = target / f"{study.case_id}_{modality}.nii.gz"
        img = nib.Nifti1Image(volume.data, volume.affine)
        img.set_qform(volume.affine, code=1)  # scanner coordinates
        img.set_sform(volume.affine, code=1)
        nib.save(img, str(path))
        images[modality] = ImageSource(path)
    return CaseFiles(study.case_id, images, None, "dicom", None, (), "DICOM series (no segmentation)")


def parse_series(text: str | None) -> dict[str, str]:
    """``"t1=1.2.3,flair=1.2.4"`` -> ``{"t1": "1.2.3", "flair": "1.2.4"}`` (``--series``).

    Raises:
        DicomError: a malformed item, an unknown or repeated modality, or one UID given twice.
    """
    overrides: dict[str, str] = {}
    for item in [i.strip() for i in (text or "").split(",") if i.strip()]:
        modality, _, uid = (part.strip() for part in item.partition("="))
        if modality.lower() not in MODALITIES or not uid or modality.lower() in overrides:
            raise DicomError(f"--series {text!r}: give modality=SeriesInstanceUID pairs, each of "
                             f"{', '.join(MODALITIES)} at most once, e.g. --series t1ce=1.2.840.1,flair=1.2.840.2")
        overrides[modality.lower()] = uid
    if len(set(overrides.values())) != len(overrides):
        raise DicomError(f"--series {text!r}: one series given for two modalities; give each its own series")
    return overrides

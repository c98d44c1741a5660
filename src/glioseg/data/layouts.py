"""Finding cases on disk in every supported dataset layout.

Layouts:

- ``brats2017``: BraTS 2017-2021 folders ``<ID>/<ID>_{t1,t1ce,t2,flair}[_seg].nii.gz``, also
  nested (``HGG/``, ``LGG/``) at any depth, symlinked folders followed; patient folders of plain
  ``{t1,t1ce,t2,flair}[,seg].nii.gz`` files take the folder's name as case ID.
- ``brats2023``: BraTS 2023+ folders ``<ID>/<ID>-{t1n,t1c,t2w,t2f}[-seg].nii.gz`` (plain
  ``t1n.nii.gz ...`` too). A dataset mixing both namings is refused (their labels differ), never
  read in part.
- ``msd``: MSD Task01 ``imagesTr/*.nii.gz`` 4-D (FLAIR, T1w, T1gd, T2w) + ``labelsTr`` +
  ``dataset.json``.
- ``nnunet``: nnU-Net raw ``imagesTr/CASE_000{0..3}.nii.gz`` + ``labelsTr`` + ``dataset.json``
  whose ``channel_names`` say which channel is which.
- ``files``: one case given file by file (:func:`case_from_files`).

Channels always come out in the order of :data:`glioseg.data.nifti.MODALITIES` (T1, T1ce, T2, FLAIR).
Several dataset folders (e.g. two releases) are combined into one dataset by :func:`find_cases_in`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from glioseg.data.dataset_json import _find_images_tr
from glioseg.data.naming import (
    BRATS2017_SUFFIX,
    BRATS2023_SUFFIX,
    BRATS_EVIDENCE,
    BRATS_NAMING,
    LAYOUTS,
    PLAIN_ID,
    DatasetError,
    _nifti_files,
    check_case_id,
    folder_name,
    strip_nii,
)
from glioseg.data.nifti import MODALITIES, CaseFiles, ImageSource


def _group_brats_files(folder: Path, sep: str, suffixes: dict[str, str]) -> dict[str, dict[str, list[Path]]]:
    """NIfTI files of one folder by file ID and suffix, for IDs with an image.

    ``<ID><sep><suffix>`` files are grouped by ``<ID>``; plain ``<suffix>`` files (no ID in the
    name, e.g. ``t1.nii.gz``) under the folder's own name.
    """
    pattern = re.compile(rf"^(?P<id>.+){re.escape(sep)}(?P<suffix>[A-Za-z0-9]+)$")
    wanted = set(suffixes.values()) | {"seg"}
    groups: dict[str, dict[str, list[Path]]] = {}
    for path in _nifti_files(folder):
        stem = strip_nii(path.name) or ""
        m = pattern.match(stem)
        if stem.lower() in wanted:
            groups.setdefault(PLAIN_ID, {}).setdefault(stem.lower(), []).append(path)
        elif m and m["suffix"].lower() in wanted:
            groups.setdefault(m["id"], {}).setdefault(m["suffix"].lower(), []).append(path)
    return {i: g for i, g in groups.items() if set(g) & set(suffixes.values())}


def _match_brats_folder(folder: Path, layout: str) -> list[CaseFiles]:
    """The cases in one folder of a BraTS layout: one for a case folder, several when the files
    of many cases lie flat in one folder, none when the folder holds no case of this layout.

    A modality given twice (e.g. ``X_t1.nii`` next to ``X_t1.nii.gz``) is recorded in
    ``CaseFiles.problems`` rather than raised, so that the other cases go on.
    """
    sep, suffixes = BRATS_NAMING[layout]
    groups = _group_brats_files(folder, sep, suffixes)
    cases = []
    for file_id, by_suffix in sorted(groups.items()):
        case_id = folder_name(folder) if len(groups) == 1 or file_id == PLAIN_ID else file_id
        problems = tuple(f"duplicate '{suffix}' files {[p.name for p in paths]} in {folder}; keep one"
                         for suffix, paths in sorted(by_suffix.items()) if len(paths) > 1)
        images = {mod: ImageSource(by_suffix[suf][0]) for mod, suf in suffixes.items() if suf in by_suffix}
        label = by_suffix["seg"][0] if "seg" in by_suffix else None
        if file_id == PLAIN_ID:  # seg.nii.gz names no release: the values decide
            hint, evidence = None, "plain file names (seg.nii.gz) that name no release"
        else:
            hint, evidence = layout, BRATS_EVIDENCE[layout]
        cases.append(CaseFiles(case_id, images, label, layout, hint, problems, evidence))
    return cases


def walk_folders(root: Path) -> list[Path]:
    """``root`` and every folder below it, following symlinked folders (each real folder once,
    so a link back up the tree neither loops nor repeats cases); hidden folders are skipped.

    Paths are as reached from ``root`` (``data/LGG/X`` for ``LGG -> /other/disk/LGG``), sorted.
    """
    seen: set[tuple[int, int]] = set()
    folders = []
    for top, dirs, _ in os.walk(root, followlinks=True):
        stat = os.stat(top)
        if (stat.st_dev, stat.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        folders.append(Path(top))
    return sorted(folders)


def _find_brats(root: Path, layout: str | None = None) -> tuple[str, list[CaseFiles]] | None:
    """The cases of a BraTS-layout tree; DatasetError when both namings occur and none was forced."""
    found: dict[str, list[CaseFiles]] = {name: [] for name in BRATS_NAMING if layout in (None, name)}
    for folder in walk_folders(root):
        for name, cases in found.items():
            cases.extend(_match_brats_folder(folder, name))
    kinds = [name for name, cases in found.items() if cases]
    if len(kinds) > 1:
        raise DatasetError(_mixed_naming_message(root, found))
    return (kinds[0], found[kinds[0]]) if kinds else None


def _mixed_naming_message(root: Path, found: dict[str, list[CaseFiles]]) -> str:
    """The one-line refusal of a tree mixing BraTS 2017-21 and 2023+ file names."""
    def kind(name: str, title: str) -> str:
        example = found[name][0]
        return f"{len(found[name])} cases with {title} names (e.g. {_case_folder(example)})"

    return (f"{root}: mixes {kind('brats2017', 'BraTS 2017-21 <ID>_t1.nii.gz')} and "
            f"{kind('brats2023', 'BraTS 2023+ <ID>-t1n.nii.gz')}; their labels differ (4 = ET vs 3 = ET), so "
            "glioseg reads one naming per dataset: move each kind into separate folders and run on each "
            "(or force one with --layout brats2017 / --layout brats2023)")


def find_cases(root: Path | str, layout: str | None = None) -> list[CaseFiles]:
    """Find every case under a dataset folder (or a single case folder).

    Args:
        root: dataset folder in any supported layout, or one case folder.
        layout: force a layout (one of :data:`LAYOUTS`); detected when None.

    Returns:
        Cases sorted by ID. Cases with missing modalities are returned too (``images`` lacks
        them) so that :func:`glioseg.data.checks.check_case` can report them.

    Raises:
        DatasetError: the folder does not exist or matches no layout, or IDs repeat.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; give a dataset folder or a case folder")
    if layout is not None and layout not in LAYOUTS:
        raise DatasetError(f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}")
    found = _find_images_tr(root, layout) if layout in (None, "msd", "nnunet") else None
    if found is None and layout in (None, "brats2017", "brats2023"):
        found = _find_brats(root, layout)
    if found is None or not found[1]:
        raise DatasetError(
            f"{root}: no cases found. Expected BraTS folders (<ID>/<ID>_t1.nii.gz ... or "
            "<ID>/<ID>-t1n.nii.gz ...), MSD/nnU-Net imagesTr + dataset.json, or give the four "
            "files with --t1 --t1ce --t2 --flair")
    cases = sorted(found[1], key=lambda c: c.case_id)
    _check_unique_ids(cases)
    return cases


def find_cases_in(roots: Sequence[Path | str], layout: str | None = None) -> tuple[list[CaseFiles], dict[str, Path]]:
    """Find the cases of several dataset folders, to be used as one dataset (releases combined).

    A case reached through two folders by the very same files (a folder given twice, or a folder
    and one of its sub-folders) counts once, under the first folder. Any other case ID found in
    two folders is refused, even when the files are copies: one cache folder per ID, and no
    silent choice between two sources.

    Args:
        roots: dataset folders (each in any layout :func:`find_cases` detects).
        layout: force one layout for all of them; detected per folder when None.

    Returns:
        The cases sorted by ID, and each case ID's dataset folder (as given).

    Raises:
        DatasetError: a folder :func:`find_cases` refuses, or one case ID in two folders
            (also IDs equal but for case), naming both paths and the fix.
    """
    if not roots:
        raise DatasetError("no dataset folder given; give at least one")
    found: dict[str, tuple[CaseFiles, Path]] = {}
    for root in map(Path, roots):
        for case in find_cases(root, layout):
            key = case.case_id.casefold()
            if key not in found:
                found[key] = (case, root)
            elif _case_paths(found[key][0]) != _case_paths(case):
                raise DatasetError(_duplicate_message(*found[key], case, root))
    cases = sorted((c for c, _ in found.values()), key=lambda c: c.case_id)
    return cases, {c.case_id: r for c, r in found.values()}


def _case_paths(case: CaseFiles) -> set[Path]:
    """The real paths of a case's image and label files (two cases are one when these agree)."""
    files = [s.path for s in case.images.values()] + ([case.label] if case.label is not None else [])
    return {p.resolve() for p in files}


def _duplicate_message(first: CaseFiles, first_root: Path, case: CaseFiles, root: Path) -> str:
    """The one-line refusal of one case ID in two dataset folders."""
    same = "case ID" if first.case_id == case.case_id else "case IDs differing only in case,"
    ids = first.case_id if first.case_id == case.case_id else f"{first.case_id} / {case.case_id}"
    return (f"{same} {ids} is in two dataset folders: {_case_folder(first)} (in {first_root}) and "
            f"{_case_folder(case)} (in {root}), with different files; keep one (move the other case "
            "folder out of its dataset), or preprocess the folders into separate caches")


def _case_folder(case: CaseFiles) -> Path | None:
    """The folder of a case's first file (image, else segmentation), or None without files."""
    first = next(iter(case.images.values())).path if case.images else case.label
    return first.parent if first is not None else None


def _check_unique_ids(cases: Iterable[CaseFiles]) -> None:
    """DatasetError for an unusable ID, or two cases whose outputs ``<ID>.nii.gz`` would collide
    (equal IDs, or IDs equal but for case: one file on macOS/Windows disks)."""
    seen: dict[str, CaseFiles] = {}
    for case in cases:
        check_case_id(case.case_id, f"the case in {_case_folder(case)}")
        other = seen.get(case.case_id.casefold())
        if other is not None and other.case_id == case.case_id:
            raise DatasetError(f"case ID {case.case_id} appears twice ({_case_folder(other)} and "
                               f"{_case_folder(case)}); rename one")
        if other is not None:
            raise DatasetError(f"case IDs {other.case_id} and {case.case_id} differ only in case "
                               f"({_case_folder(other)} and {_case_folder(case)}): their outputs collide on "
                               "case-insensitive disks; rename one")
        seen[case.case_id.casefold()] = case


def case_from_files(t1: Path | str, t1ce: Path | str, t2: Path | str, flair: Path | str,
                    seg: Path | str | None = None, case_id: str | None = None) -> CaseFiles:
    """One case given file by file.

    Args:
        t1, t1ce, t2, flair: the four modality files.
        seg: optional segmentation.
        case_id: identifier; by default the T1 file name up to its last ``_``/``-``, or the T1's
            folder name when that leaves no ID (plain ``t1.nii.gz``, ``_t1.nii.gz``).

    Returns:
        The case's files (layout ``files``).

    Raises:
        DatasetError: ``case_id`` cannot name an output file (empty, ``.``, ``..``, a separator).
    """
    if case_id is None:
        case_id = _id_from_file_name(Path(t1))
    else:
        check_case_id(case_id, "--case-id")
    images = {m: ImageSource(Path(p)) for m, p in zip(MODALITIES, (t1, t1ce, t2, flair), strict=True)}
    return CaseFiles(case_id, images, Path(seg) if seg is not None else None, "files", None, (),
                     "single files whose names name no release")


def _id_from_file_name(t1: Path) -> str:
    """Case ID of a lone T1 file: its name up to the last ``_``/``-``, else its folder's name."""
    stem = strip_nii(t1.name) or t1.stem
    if stem.lower() in {*BRATS2017_SUFFIX.values(), *BRATS2023_SUFFIX.values()}:
        return folder_name(t1.parent)
    file_id = re.split(r"[_-](?=[^_-]+$)", stem)[0] if re.search(r"[_-]", stem) else stem
    return file_id if file_id.strip(" ._-") else folder_name(t1.parent)

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
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from glioseg.data.nifti import MODALITIES, CaseFiles, ImageSource
from glioseg.labels import BG, ED, ET, NCR, RC, SCHEMES

NII = (".nii.gz", ".nii")
BRATS2017_SUFFIX = {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair"}
BRATS2023_SUFFIX = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}
BRATS_NAMING: dict[str, tuple[str, dict[str, str]]] = {  # layout -> (separator, modality suffixes)
    "brats2017": ("_", BRATS2017_SUFFIX), "brats2023": ("-", BRATS2023_SUFFIX)}
PLAIN_ID = ""  # group key of plain file names (``t1.nii.gz``): a file ID is never empty
BRATS_EVIDENCE = {"brats2017": "BraTS 2017-21 file names (<ID>_seg.nii.gz)",
                  "brats2023": "BraTS 2023+ file names (<ID>-seg.nii.gz)"}
MSD_CHANNELS = ("flair", "t1", "t1ce", "t2")  # Task01 imagesTr channel order
CHANNEL_NAME_ALIASES: dict[str, str] = {
    "t1": "t1", "t1w": "t1", "t1n": "t1", "native": "t1",
    "t1ce": "t1ce", "t1c": "t1ce", "t1gd": "t1ce", "t1-gd": "t1ce", "t1_gd": "t1ce",
    "t1wce": "t1ce", "t1_ce": "t1ce", "t1post": "t1ce", "t1-ce": "t1ce",
    "t2": "t2", "t2w": "t2",
    "flair": "flair", "t2f": "flair", "t2-flair": "flair", "t2_flair": "flair", "t2flair": "flair",
}
LAYOUTS: tuple[str, ...] = ("brats2017", "brats2023", "msd", "nnunet")
# region-based nnU-Net labels: the tumour core's file values tell where NCR is
CORE_VALUES_TO_SCHEME: dict[tuple[int, ...], str] = {(2, 3): "msd", (1, 3): "brats2023", (1, 4): "brats2017"}


class DatasetError(Exception):
    """The dataset folder cannot be understood as any supported layout."""


def strip_nii(name: str) -> str | None:
    """File name without its NIfTI extension, or None if it is not a NIfTI file."""
    for ext in NII:
        if name.endswith(ext):
            return name[: -len(ext)]
    return None


def _nifti_files(folder: Path) -> list[Path]:
    """NIfTI files of a folder (hidden ones skipped); broken symlinks too, so that checks report them."""
    return sorted(p for p in folder.iterdir() if (p.is_file() or (p.is_symlink() and not p.exists()))
                  and strip_nii(p.name) is not None and not p.name.startswith("."))


def folder_name(folder: Path) -> str:
    """The name of a folder as the user means it (``.`` and ``..`` resolved, symlinks kept)."""
    return Path(os.path.abspath(folder)).name


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


def _read_dataset_json(root: Path) -> dict:
    path = root / "dataset.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc}); fix or remove it") from exc


def _channel_map(channel_names: dict[str, str], source: Path) -> dict[str, int]:
    """dataset.json channel names -> {modality: channel index}."""
    out: dict[str, int] = {}
    for index, name in channel_names.items():
        key = CHANNEL_NAME_ALIASES.get(str(name).strip().lower().replace(" ", ""))
        if key is None:
            raise DatasetError(f"{source}: unknown channel name {name!r}; expected one of "
                               f"{sorted(set(CHANNEL_NAME_ALIASES))}")
        out[key] = int(index)
    missing = [m for m in MODALITIES if m not in out]
    if missing:
        raise DatasetError(f"{source}: channel_names lacks {missing}; glioseg needs {list(MODALITIES)}")
    return out


def _label_for(root: Path, case_id: str) -> Path | None:
    for ext in NII:
        path = root / "labelsTr" / f"{case_id}{ext}"
        if path.is_file():
            return path
    return None


def _find_msd(root: Path, images_dir: Path) -> list[CaseFiles]:
    meta = _read_dataset_json(root)
    modality = meta.get("modality") or meta.get("channel_names")
    channels = _channel_map(modality, root / "dataset.json") if modality else dict(
        zip(MSD_CHANNELS, range(4), strict=True))
    hint, evidence = _scheme_from_labels(meta)
    if hint is None and not evidence:  # Task01's labels when dataset.json does not name them
        hint, evidence = "msd", "the MSD Task01 layout (4-D imagesTr; no label names in dataset.json)"
    cases = []
    for path in _nifti_files(images_dir):
        case_id = strip_nii(path.name) or path.name
        images = {m: ImageSource(path, channels[m]) for m in MODALITIES}
        cases.append(CaseFiles(case_id, images, _label_for(root, case_id), "msd", hint, (), evidence))
    return cases


def _label_role(name: str) -> int | None:
    """Canonical label meant by a dataset.json label name (``"edema"`` -> ED), or None."""
    text = name.strip().lower().replace("_", " ").replace("-", " ")
    rules = ((("background",), BG), (("non enh", "nonenh", "necro", "netc", "ncr", "net"), NCR),
             (("edema", "oedema", "snfh", "ed"), ED), (("enhanc", "et"), ET),
             (("resection", "cavity", "rc"), RC))
    for keys, role in rules:
        if any(text == k or (len(k) > 3 and k in text) for k in keys):
            return role
    return None


def _label_pairs(labels: dict) -> list[tuple[str, Any]]:
    """``(name, value)`` pairs of dataset.json ``labels``: v1 maps value -> name, v2 name -> value(s)."""
    if all(str(k).strip().isdigit() for k in labels):
        return [(str(name), int(k)) for k, name in labels.items()]
    return [(str(k), v) for k, v in labels.items()]


def _scheme_from_names(pairs: list[tuple[str, Any]]) -> str | None:
    """The scheme whose file values match the labels' names (``edema`` -> ED ...), or None."""
    to_file: dict[int, int] = {}
    for name, value in pairs:
        role = _label_role(name)
        if role is None or not isinstance(value, int):
            return None
        to_file[role] = value
    to_file.setdefault(BG, 0)  # dataset.json may leave background unnamed
    matches = [n for n, scheme in SCHEMES.items() if scheme.to_file == to_file]
    return matches[0] if matches and NCR in to_file else None


def _scheme_from_labels(meta: dict) -> tuple[str | None, str]:
    """Label scheme that an MSD/nnU-Net dataset.json states, and the evidence for messages.

    Reads ``glioseg_label_scheme`` if present, else the ``labels`` names: nnU-Net v1 / MSD
    (``{"1": "edema"}``), v2 (``{"edema": 1}``) and v2 region-based (``{"tumor core": [2, 3]}``).

    Returns:
        ``(scheme or None, evidence)``: evidence is empty when dataset.json names no labels, and
        says so when it names labels that match no scheme (the values then decide).
    """
    if isinstance(meta.get("glioseg_label_scheme"), str):
        return meta["glioseg_label_scheme"], f"dataset.json glioseg_label_scheme {meta['glioseg_label_scheme']}"
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        return None, ""
    pairs = _label_pairs(labels)
    named = ", ".join(f"{v} {n}" for n, v in pairs if _label_role(n) != BG)
    regions = {name.lower(): tuple(v) for name, v in pairs if isinstance(v, list)}
    if regions:
        core = next((v for n, v in regions.items() if "core" in n), None)
        scheme = CORE_VALUES_TO_SCHEME.get(tuple(sorted(core))) if core else None
    else:
        scheme = _scheme_from_names(pairs)
    if scheme is None:
        return None, f"dataset.json label names ({named}) that match no scheme"
    return scheme, f"dataset.json label names ({named})"


def _group_channel_files(files: list[Path]) -> dict[str, dict[int, list[Path]]]:
    """nnU-Net image files ``<ID>_<cccc>`` by case ID and channel index."""
    by_case: dict[str, dict[int, list[Path]]] = {}
    for path in files:
        m = re.match(r"^(?P<id>.+)_(?P<ch>\d{4})$", strip_nii(path.name) or "")
        if m:
            by_case.setdefault(m["id"], {}).setdefault(int(m["ch"]), []).append(path)
    return by_case


def _find_nnunet(root: Path, images_dir: Path, files: list[Path]) -> list[CaseFiles]:
    meta = _read_dataset_json(root)
    names = meta.get("channel_names") or meta.get("modality")  # nnU-Net v2 / v1
    if not names:
        raise DatasetError(f"{root}: nnU-Net layout needs dataset.json with channel_names "
                           '(e.g. {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"})')
    channels = _channel_map(names, root / "dataset.json")
    scheme_hint, evidence = _scheme_from_labels(meta)
    evidence = evidence or "an nnU-Net dataset.json that names no labels"
    cases = []
    for case_id, chans in sorted(_group_channel_files(files).items()):
        problems = tuple(f"duplicate channel {ch:04d} files {[p.name for p in paths]} in {images_dir}; keep one"
                         for ch, paths in sorted(chans.items()) if len(paths) > 1)
        images = {m: ImageSource(chans[i][0]) for m, i in channels.items() if i in chans}
        cases.append(CaseFiles(case_id, images, _label_for(root, case_id), "nnunet", scheme_hint, problems,
                               evidence))
    return cases


def _find_images_tr(root: Path, layout: str | None = None) -> tuple[str, list[CaseFiles]] | None:
    for images_dir in (root / "imagesTr", root / "imagesTs"):
        files = _nifti_files(images_dir) if images_dir.is_dir() else []
        if not files:
            continue
        stacked = all(re.search(r"_\d{4}$", strip_nii(p.name) or "") for p in files)
        if layout == "nnunet" or (layout is None and stacked):
            return "nnunet", _find_nnunet(root, images_dir, files)
        return "msd", _find_msd(root, images_dir)
    return None


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


def check_case_id(case_id: str, what: str) -> None:
    """DatasetError unless ``case_id`` can name an output file (non-empty, no separator, not . or ..).

    Args:
        case_id: the ID.
        what: the case or option it comes from, named in the message (e.g. ``"--case-id"``).
    """
    if not case_id.strip() or case_id in (".", "..") or "/" in case_id or "\\" in case_id:
        raise DatasetError(f"case ID {case_id!r} of {what} cannot name an output file (empty, '.', '..' or "
                           "with a path separator); rename the folder/files or give another case ID")


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

"""Layouts described by ``dataset.json``: MSD Task01 (4-D ``imagesTr``) and nnU-Net raw
(``CASE_0000..0003``), with their channel names and label names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from glioseg.data.naming import (
    NII,
    DatasetError,
    _nifti_files,
    strip_nii,
)
from glioseg.data.nifti import MODALITIES, CaseFiles, ImageSource
from glioseg.labels import BG, ED, ET, NCR, RC, SCHEMES

MSD_CHANNELS = ("flair", "t1", "t1ce", "t2")  # Task01 imagesTr channel order


CHANNEL_NAME_ALIASES: dict[str, str] = {
    "t1": "t1", "t1w": "t1", "t1n": "t1", "native": "t1",
    "t1ce": "t1ce", "t1c": "t1ce", "t1gd": "t1ce", "t1-gd": "t1ce", "t1_gd": "t1ce",
    "t1wce": "t1ce", "t1_ce": "t1ce", "t1post": "t1ce", "t1-ce": "t1ce",
    "t2": "t2", "t2w": "t2",
    "flair": "flair", "t2f": "flair", "t2-flair": "flair", "t2_flair": "flair", "t2flair": "flair",
}


# region-based nnU-Net labels: the tumour core's file values tell where NCR is
CORE_VALUES_TO_SCHEME: dict[tuple[int, ...], str] = {(2, 3): "msd", (1, 3): "brats2023", (1, 4): "brats2017"}


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



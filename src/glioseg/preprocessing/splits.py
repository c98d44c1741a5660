"""Cross-validation folds and train/val splits that keep each patient on one side.

BraTS releases rename cases from year to year (``Brats17_TCIA_201_1`` = ``Brats18_TCIA01_201_1``
= ``BraTS20_Training_163`` = ``BraTS2021_01281``); the public name-mapping tables (2020 and 2021
layouts, several at once) say which IDs are one patient. Cases
are grouped by patient before splitting, and groups are spread over the folds stratum by stratum
(grade HGG/LGG when grades are given) so that each fold sees the same mix.

``splits.json``::

    {"folds": K, "seed": S, "mapping_files": [...], "stratified": true, "patients": {case_id: patient_id},
     "grades": {case_id: grade}, "splits": [{"fold": 0, "train": [...], "val": [...]}, ...]}
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.utils import atomic_write

MISSING_VALUES = frozenset({"", "na", "n/a", "nan", "none"})
RELEASE_COLUMN = re.compile(r"^brats[ _]?20\d\d$", re.IGNORECASE)  # BraTS2017 ... BraTS2021
MAPPING_LAYOUTS = ("the brats2020_name_mapping.csv layout (two or more columns whose names contain 'ID', e.g. "
                   "BraTS_2018_subject_ID,BraTS_2020_subject_ID) or the brats2021_name_mapping.csv layout (two "
                   "or more release columns, e.g. BraTS2021,BraTS2020,BraTS2019,BraTS2018,BraTS2017)")
UNKNOWN_GRADE = "unknown"


class SplitError(ValueError):
    """Splits cannot be made or read (bad table, too many folds, corrupt splits.json)."""


def _read_rows(path: Path | str) -> list[dict[str, str]]:
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SplitError(f"{path}: cannot read the CSV table ({exc}); check the path") from exc
    if not rows:
        raise SplitError(f"{path}: the table is empty; give a CSV with a header and one row per case")
    return rows


def _present(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in MISSING_VALUES


def _release_columns(columns: Sequence[str]) -> list[str]:
    """The ``BraTS2017`` ... ``BraTS2021`` columns of a brats2021_name_mapping.csv-like header."""
    return [c for c in columns if c and RELEASE_COLUMN.match(c.strip())]


def _id_columns(columns: Sequence[str]) -> list[str]:
    """The alias columns of a mapping table: release columns (2021 layout), else ``...ID...`` columns."""
    release = _release_columns(columns)
    return release if len(release) >= 2 else [c for c in columns if c and "id" in c.lower()]


def _mapping_rows(path: Path | str) -> list[list[str]]:
    """The aliases of each row of one mapping table (see :func:`read_patient_mapping`)."""
    rows = _read_rows(path)
    columns = _id_columns(list(rows[0]))
    if len(columns) < 2:
        raise SplitError(f"{path}: not a patient ID mapping (columns {[c.strip() for c in rows[0] if c]}); "
                         f"expected {MAPPING_LAYOUTS}")
    return [[row[c].strip() for c in columns if _present(row.get(c))] for row in rows]


def read_patient_mapping(paths: Path | str | Sequence[Path | str]) -> dict[str, str]:
    """Read ID-mapping tables: each row lists the IDs one patient has in several releases.

    Two layouts are read: ``brats2020_name_mapping.csv`` (one patient per row; every column whose
    name contains ``ID`` holds an alias, e.g. ``BraTS_2018_subject_ID``, ``TCGA_TCIA_subject_ID``)
    and ``brats2021_name_mapping.csv`` (the release columns ``BraTS2021``, ``BraTS2020`` ...
    ``BraTS2017``; its ``Local ID`` is a site's own number, not read). Empty and ``NA``/``N/A`` cells
    are skipped. Rows that share an alias, in one table or across tables, are one patient; its
    key is its ID seen first (tables in the order given, rows in order, columns left to right), so
    adding a table after another keeps the earlier table's keys (and splits).

    Args:
        paths: one CSV or several (e.g. the 2020 and the 2021 table).

    Returns:
        ``{any_id: patient_id}``.

    Raises:
        SplitError: an unreadable table, or one with fewer than two ID columns (the message names
            the file and the expected columns).
    """
    tables = [paths] if isinstance(paths, str | Path) else list(paths)
    return _merge_aliases(row for table in tables for row in _mapping_rows(table))


def _merge_aliases(rows: Iterable[list[str]]) -> dict[str, str]:
    """Union-find over rows of aliases: ``{alias: key}``, the key of a merged group being its
    earliest-seen ID (so adding a table never renames the patients an earlier table keyed)."""
    parent: dict[str, str] = {}
    seen: dict[str, int] = {}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for ids in rows:
        for i in ids:
            parent.setdefault(i, i)
            seen.setdefault(i, len(seen))
        for i in ids[1:]:
            a, b = sorted((find(i), find(ids[0])), key=seen.__getitem__)
            parent[b] = a
    return {i: find(i) for i in parent}


def read_grades(path: Path | str) -> dict[str, str]:
    """Read a grade table: one ``...ID...`` column per release and a ``Grade`` column.

    Returns:
        ``{id: grade}`` for every ID cell of every row with a grade.

    Raises:
        SplitError: unreadable table, or no Grade / ID column.
    """
    rows = _read_rows(path)
    grade_col = next((c for c in rows[0] if c and c.strip().lower() == "grade"), None)
    id_columns = [c for c in rows[0] if c and "id" in c.lower()]
    if grade_col is None or not id_columns:
        raise SplitError(f"{path}: needs a 'Grade' column and an ID column; columns are {list(rows[0])}")
    out = {}
    for row in rows:
        if _present(row.get(grade_col)):
            for c in id_columns:
                if _present(row.get(c)):
                    out[row[c].strip()] = row[grade_col].strip()
    return out


def group_by_patient(case_ids: Sequence[str], mapping: Mapping[str, str] | None) -> dict[str, str]:
    """Patient of each case: from the mapping (exact, then case-insensitive), else the case itself."""
    if not mapping:
        return {c: c for c in case_ids}
    lower = {k.lower(): v for k, v in mapping.items()}
    return {c: mapping.get(c, lower.get(c.lower(), c)) for c in case_ids}


def _case_grades(patients: Mapping[str, str], grades: Mapping[str, str],
                 mapping: Mapping[str, str] | None) -> dict[str, str]:
    """Grade of each case, looked up by its ID or by any alias of its patient."""
    by_patient: dict[str, str] = {}
    for alias, grade in grades.items():
        by_patient.setdefault((mapping or {}).get(alias, alias), grade)
    return {c: grades.get(c, by_patient.get(p, UNKNOWN_GRADE)) for c, p in patients.items()}


def _assign_folds(groups: dict[str, list[str]], strata: dict[str, str], folds: int,
                  rng: np.random.Generator) -> list[list[str]]:
    """Greedy balanced assignment of patient groups to folds, stratum by stratum."""
    members: list[list[str]] = [[] for _ in range(folds)]
    for stratum in sorted(set(strata.values())):
        names = sorted(g for g in groups if strata[g] == stratum)
        order = [names[i] for i in rng.permutation(len(names))]
        order.sort(key=lambda g: -len(groups[g]))  # big groups first; stable keeps the shuffle
        in_stratum = [0] * folds
        offset = int(rng.integers(folds))  # which fold wins ties rotates with the seed
        for g in order:
            f = min(range(folds), key=lambda k: (in_stratum[k], len(members[k]), (k - offset) % folds))
            members[f].extend(groups[g])
            in_stratum[f] += len(groups[g])
    return [sorted(m) for m in members]


def _check_split_args(ids: list[str], folds: int, val_fraction: float) -> None:
    """SplitError for no cases, duplicate IDs, ``folds < 1`` or a single split's bad ``val_fraction``."""
    if not ids:
        raise SplitError("no cases to split; preprocess a dataset first")
    if len(set(ids)) != len(ids):
        raise SplitError(f"duplicate case IDs: {sorted({c for c in ids if ids.count(c) > 1})}")
    if folds < 1:
        raise SplitError(f"folds must be >= 1, got {folds}")
    if folds == 1 and not 0 < val_fraction < 1:
        raise SplitError(f"val_fraction must be in (0, 1), got {val_fraction}")


def make_splits(case_ids: Sequence[str], folds: int = 5, seed: int = 0,
                mapping_csv: Path | str | Sequence[Path | str] | Mapping[str, str] | None = None,
                grades: Path | str | Mapping[str, str] | None = None,
                val_fraction: float = 0.2) -> dict[str, Any]:
    """K-fold cross-validation (``folds >= 2``) or one train/val split (``folds == 1``).

    Args:
        case_ids: the cases to split.
        folds: number of folds; 1 makes a single split with ``val_fraction`` of the cases in val.
        seed: shuffling seed (same inputs and seed -> same splits).
        mapping_csv: ID-mapping table(s) (a path, several paths, or ``{id: patient}``; see
            :func:`read_patient_mapping`); cases of one patient stay together, whichever releases
            their IDs come from. Without it each case is its own patient.
        grades: grade table (path or ``{id: grade}``); folds are stratified by grade.
        val_fraction: share of cases in val when ``folds == 1``.

    Returns:
        JSON-able dict (see the module docstring); ``splits[k]`` has sorted ``train`` / ``val``.

    Raises:
        SplitError: no cases, duplicate IDs, bad ``folds``/``val_fraction``, or more folds than
            patients.
    """
    ids = list(case_ids)
    _check_split_args(ids, folds, val_fraction)
    mapping = mapping_csv if isinstance(mapping_csv, Mapping) or mapping_csv is None else \
        read_patient_mapping(mapping_csv)
    grade_table = read_grades(grades) if isinstance(grades, str | Path) else grades
    patients = group_by_patient(ids, mapping)
    case_grades = _case_grades(patients, grade_table, mapping) if grade_table else {c: UNKNOWN_GRADE for c in ids}
    groups: dict[str, list[str]] = {}
    for c in sorted(ids):
        groups.setdefault(patients[c], []).append(c)
    n_parts = folds if folds > 1 else max(2, round(1 / val_fraction))
    if n_parts > len(groups):
        raise SplitError(f"{n_parts} folds need at least {n_parts} patients, got {len(groups)}; use fewer folds")
    strata = {g: case_grades[members[0]] for g, members in groups.items()}
    parts = _assign_folds(groups, strata, n_parts, np.random.default_rng(seed))
    used = parts if folds > 1 else parts[:1]
    splits = [{"fold": k, "train": sorted(set(ids) - set(val)), "val": val} for k, val in enumerate(used)]
    return {"folds": folds, "seed": seed, "n_cases": len(ids), "n_patients": len(groups),
            "mapping_files": _table_names(mapping_csv), "stratified": bool(grade_table), "patients": patients,
            "grades": case_grades, "splits": splits}


def _table_names(tables: Path | str | Sequence[Path | str] | Mapping[str, str] | None) -> list[str]:
    """The mapping files named in ``splits.json`` (none for an in-memory mapping)."""
    if tables is None or isinstance(tables, Mapping):
        return []
    return [str(tables)] if isinstance(tables, str | Path) else [str(t) for t in tables]


def save_splits(splits: Mapping[str, Any], path: Path | str) -> Path:
    """Write splits as JSON, atomically."""
    return atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(splits, indent=1)))


def load_splits(path: Path | str) -> dict[str, Any]:
    """Read and check a ``splits.json``.

    Raises:
        SplitError: missing, not JSON, malformed, or a case on both sides of a fold.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SplitError(f"{path}: not found; make it with `glioseg split PREPROCESSED`") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SplitError(f"{path}: not valid JSON ({exc}); make it again with `glioseg split`") from exc
    _check_splits(data, path)
    return data


def _check_splits(data: Any, path: Path) -> None:
    """SplitError unless ``data`` has a non-empty ``splits`` list of disjoint train/val folds."""
    if not isinstance(data, dict) or not isinstance(data.get("splits"), list) or not data["splits"]:
        raise SplitError(f"{path}: no 'splits' list; make it again with `glioseg split`")
    for s in data["splits"]:
        if not isinstance(s, dict) or not {"train", "val"} <= set(s):
            raise SplitError(f"{path}: each split needs 'train' and 'val' lists")
        both = set(s["train"]) & set(s["val"])
        if both:
            raise SplitError(f"{path}: fold {s.get('fold')} has cases on both sides: {sorted(both)}")


def get_fold(splits: Mapping[str, Any], fold: int) -> tuple[list[str], list[str]]:
    """``(train, val)`` case IDs of one fold.

    Raises:
        SplitError: no such fold.
    """
    n = len(splits["splits"])
    if not 0 <= fold < n:
        raise SplitError(f"fold {fold} does not exist; the splits have folds 0..{n - 1}")
    s = splits["splits"][fold]
    return list(s["train"]), list(s["val"])

"""The BraTS clinical tables: survival (``BraTS18ID,Age,Survival,ResectionStatus``) and grade
(``BraTS18ID,Grade``), and the BraTS survival classes.

Survival text. The BraTS 2018-2020 tables give overall survival in days; a few entries are text
such as ``ALIVE (361 days later)``: the patient was alive at the last follow-up, so the number is a
lower bound (right-censored). :func:`parse_survival` *parses* such text into
``(361, event=False)``. The regression models and every CV metric use only deceased patients
(``event=True``), as BraTS scores only them; a Cox model could use censored patients as such, and
``glioseg survival fit`` reports how many it left out. Other text (``NA``, empty) means unknown and the
row is excluded, which the fit also reports.

Classes (BraTS, Bakas et al. 2018, arXiv:1811.02629): short < 10 months, mid 10-15 months,
long > 15 months, with months of 30 days as the challenge's evaluation uses: short < 300 days,
mid 300-450 days, long > 450 days.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from glioseg.radiomics.errors import RadiomicsError

SHORT_DAYS, LONG_DAYS = 300.0, 450.0  # 10 and 15 months of 30 days
CLASSES: tuple[str, ...] = ("short", "mid", "long")
ID_COLUMN, AGE_COLUMN, SURVIVAL_COLUMN, RESECTION_COLUMN, GRADE_COLUMN = (
    "BraTS18ID", "Age", "Survival", "ResectionStatus", "Grade")
GRADES: tuple[str, ...] = ("LGG", "HGG")
_ALIVE = re.compile(r"^\s*alive\s*\(\s*(\d+(?:\.\d+)?)\s*days?(?:\s+later)?\s*\)\s*$", re.IGNORECASE)


def survival_class(days: float) -> str:
    """BraTS class of a survival in days: ``short`` (< 300), ``mid`` (300-450) or ``long`` (> 450)."""
    if days < SHORT_DAYS:
        return "short"
    return "mid" if days <= LONG_DAYS else "long"


def parse_survival(text: str) -> tuple[float, bool] | None:
    """A Survival cell -> ``(days, event)``; ``event`` is False for a censored ``ALIVE (N days later)``.

    Args:
        text: e.g. ``"412"``, ``"412.0"``, ``"ALIVE (361 days later)"``, ``"NA"``, ``""``.

    Returns:
        ``(days, event)``, or None when the survival is unknown (NA, empty).

    Raises:
        ValueError: any other text, or a negative or non-finite number.
    """
    cell = text.strip()
    if cell.upper() in ("", "NA", "N/A", "NAN"):
        return None
    alive = _ALIVE.match(cell)
    if alive:
        return float(alive.group(1)), False
    try:
        days = float(cell)
    except ValueError:
        raise ValueError(f"survival {text!r} is neither a number of days, nor 'ALIVE (N days later)', nor NA") from None
    if not math.isfinite(days) or days < 0:
        raise ValueError(f"survival {text!r} must be a finite number of days >= 0")
    return days, True


@dataclass(frozen=True)
class Patient:
    """One row of the survival table.

    Attributes:
        case_id: BraTS18ID.
        age: years.
        days: survival in days, or None when unknown.
        event: True when ``days`` is the death, False when censored (alive at ``days``).
        resection: GTR, STR or NA.
    """

    case_id: str
    age: float
    days: float | None
    event: bool
    resection: str


def _read_rows(path: Path, required: Sequence[str], what: str) -> list[dict[str, str]]:
    """The rows of a CSV that has ``required`` columns; RadiomicsError naming the file and the fix."""
    if not path.is_file():
        raise RadiomicsError(f"{path}: {what} file not found; give the BraTS table ({','.join(required)})")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in required if c not in header]
            rows = [] if missing else list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RadiomicsError(f"{path}: not a text CSV ({type(exc).__name__}); give the BraTS {what} table "
                             f"({','.join(required)})") from None
    if missing:
        raise RadiomicsError(f"{path}: {what} table lacks column(s) {', '.join(missing)} (has "
                             f"{', '.join(header) or 'no header'}); give a CSV with the header "
                             f"{','.join(required)}")
    for n, row in enumerate(rows, start=2):
        if None in row:  # DictReader files the cells past the header under the key None
            raise RadiomicsError(f"{path}: line {n}: {len(row[None])} cell(s) more than the header's "
                                 f"{len(header)}; remove them or quote a cell that holds a comma")
    return [{k.strip(): (v or "").strip() for k, v in row.items()} for row in rows]


def read_survival_table(path: Path | str, need_survival: bool = True) -> dict[str, Patient]:
    """Read the BraTS survival table.

    Args:
        path: CSV with ``BraTS18ID,Age`` and (when ``need_survival``) ``Survival``; ResectionStatus optional.
        need_survival: require the Survival column (fitting); prediction needs only the age.

    Returns:
        case ID -> patient.

    Raises:
        RadiomicsError: missing file or columns, a repeated ID, an age or survival that does not parse.
    """
    path = Path(path)
    required = (ID_COLUMN, AGE_COLUMN, SURVIVAL_COLUMN) if need_survival else (ID_COLUMN, AGE_COLUMN)
    patients: dict[str, Patient] = {}
    for n, row in enumerate(_read_rows(path, required, "clinical"), start=2):
        case_id = row[ID_COLUMN]
        if case_id in patients:
            raise RadiomicsError(f"{path}: line {n}: case {case_id} appears twice; keep one row per patient")
        try:
            age = float(row[AGE_COLUMN])
            if not math.isfinite(age) or age < 0:
                raise ValueError
        except ValueError:
            raise RadiomicsError(f"{path}: line {n}: case {case_id}: Age {row[AGE_COLUMN]!r} is not a number of "
                                 "years; fix the cell") from None
        try:
            parsed = parse_survival(row.get(SURVIVAL_COLUMN, ""))
        except ValueError as exc:
            raise RadiomicsError(f"{path}: line {n}: case {case_id}: {exc}; fix the cell") from None
        days, event = parsed if parsed is not None else (None, False)
        patients[case_id] = Patient(case_id, age, days, event, row.get(RESECTION_COLUMN) or "NA")
    return patients


def read_grade_table(path: Path | str) -> dict[str, str]:
    """Read ``BraTS18ID,Grade`` (HGG / LGG) -> case ID -> grade.

    Raises:
        RadiomicsError: missing file or columns, a grade other than HGG/LGG, a repeated ID.
    """
    path = Path(path)
    grades: dict[str, str] = {}
    for n, row in enumerate(_read_rows(path, (ID_COLUMN, GRADE_COLUMN), "grade"), start=2):
        grade = row[GRADE_COLUMN].upper()
        if grade not in GRADES:
            raise RadiomicsError(f"{path}: line {n}: case {row[ID_COLUMN]}: Grade {row[GRADE_COLUMN]!r} is not "
                                 "HGG or LGG; fix the cell")
        if row[ID_COLUMN] in grades:
            raise RadiomicsError(f"{path}: line {n}: case {row[ID_COLUMN]} appears twice; keep one row per case")
        grades[row[ID_COLUMN]] = grade
    return grades

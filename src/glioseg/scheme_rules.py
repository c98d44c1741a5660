"""Deciding a label scheme from evidence: the layout's hint, the values present in every
segmentation, and anatomy (necrosis inside, edema outside). One set of rules serves one case
(:func:`case_scheme`, used by ``read_case``) and whole datasets
(:func:`glioseg.data.schemes.decide_dataset_scheme`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from glioseg.labels import (
    CANONICAL_NAMES,
    ED,
    ET,
    NCR,
    RC,
    SCHEMES,
    LabelScheme,
    LabelSchemeError,
    get_scheme,
)

ANATOMY_MIN_VOXELS = 10  # fewer NCR voxels on the tumour's outer border than this prove nothing


@dataclass(frozen=True)
class LabelStats:
    """What one segmentation tells about its label scheme.

    Attributes:
        values: distinct file values present (background included when present).
        border: file value -> voxels of that value with a background (0) 6-neighbour: the
            tumour's outer border, where edema belongs and necrosis does not.
    """

    values: frozenset[int]
    border: dict[int, int]


def distinct_values(labels: np.ndarray) -> np.ndarray:
    """Distinct values of a label map (bincount when they are small non-negative integers)."""
    if labels.dtype.kind in "ui" and labels.size:
        low, high = int(labels.min()), int(labels.max())
        if low >= 0 and high < 65536:
            return np.flatnonzero(np.bincount(labels.ravel(), minlength=high + 1))
    return np.unique(labels)


def label_stats(labels: np.ndarray) -> LabelStats:
    """Values and outer-border counts of an integer-valued label map.

    Args:
        labels: label map ``(X, Y, Z)`` in file values, any integer (or integer-valued float) dtype.

    Returns:
        Its :class:`LabelStats` (voxels outside the array count as background).
    """
    values = frozenset(int(v) for v in distinct_values(labels))
    tumour = labels != 0
    if not tumour.any():
        return LabelStats(values, {})
    box = tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(tumour))
    sub = np.pad(np.asarray(labels[box]), 1)
    background = sub == 0
    touches = np.zeros_like(background)
    for axis in range(sub.ndim):
        lo, hi = [slice(None)] * sub.ndim, [slice(None)] * sub.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        touches[tuple(lo)] |= background[tuple(hi)]
        touches[tuple(hi)] |= background[tuple(lo)]
    on_border = sub[touches & ~background]
    border = {int(v): int(n) for v, n in zip(*np.unique(on_border, return_counts=True), strict=True)}
    return LabelStats(values, border)


class SchemeDecision(NamedTuple):
    """The label scheme of a set of segmentations and why.

    Attributes:
        scheme: the scheme, or None when nothing decides it (no segmentation, no layout evidence).
        evidence: one line: the option, layout or dataset.json and the values that decided it.
    """

    scheme: LabelScheme | None
    evidence: str


def resolve_scheme(stats: Sequence[LabelStats], hint: str | None = None, hint_evidence: str = "",
                   label_scheme: str | LabelScheme | None = None, flag: str = "--label-scheme",
                   context: str = "", anatomy: bool = True) -> SchemeDecision:
    """Decide one label scheme for a set of segmentations: the one implementation of the rules.

    Rules: a given scheme wins. Otherwise the layout's scheme (``hint``), checked against the
    values: BraTS 2023 naming becomes BraTS 2024 only when 3 (ET) and 4 (RC) both occur, 4 without
    any 3 is refused (it is BraTS 2017-21's ET); a scheme that fits no segmentation is refused.
    Without a hint the values decide, and are refused when schemes that read them differently
    fit them (1/2/3 is BraTS 2023 or MSD). Finally, when ``anatomy`` is set, necrosis lying on the
    tumour's outer border more than edema means NCR and ED are swapped: refused.

    Args:
        stats: one :class:`LabelStats` per segmentation.
        hint: scheme the layout or dataset.json states, or None.
        hint_evidence: where ``hint`` comes from, for the messages (e.g. ``"BraTS 2023+ file names"``).
        label_scheme: the scheme the user gave, or None.
        flag: the option named in the messages.
        context: prefix of the messages (e.g. ``"predictions in /x"``), or empty.
        anatomy: apply the swapped-NCR/ED check (off for predictions, which are being judged).

    Returns:
        The decision (scheme None only without segmentations and without a hint).

    Raises:
        LabelSchemeError: unknown names, or contradictions; one line naming the evidence and the
            ``flag`` value(s) to pass.
    """
    if label_scheme is not None:
        given = get_scheme(label_scheme)
        return SchemeDecision(given, f"{flag} {given.name}")
    present = set().union(*(s.values for s in stats)) - {0}
    seen = f"values {_values_text(present)} in {len(stats)} segmentation(s)" if stats else "no segmentation"
    evidence = "; ".join(e for e in (hint_evidence, seen) if e)
    prefix = f"{context}: " if context else ""
    if hint is not None:
        scheme: LabelScheme | None = _scheme_of_hint(get_scheme(hint), stats, evidence, flag, prefix)
    else:
        scheme = _scheme_of_values(present, stats, evidence, flag, prefix)
    if scheme is not None and anatomy:
        _check_anatomy(scheme, stats, evidence, flag, prefix)
    return SchemeDecision(scheme, evidence + (f": {scheme.name}" if scheme is not None else ""))


def _values_text(values: Iterable[int]) -> str:
    return ",".join(str(v) for v in sorted(values)) or "none"


def _plausible(scheme: LabelScheme, present: set[int]) -> bool:
    """The values fit the scheme, and a resection cavity never comes without any ET."""
    rc_without_et = RC in scheme.to_file and scheme.to_file[RC] in present and scheme.to_file[ET] not in present
    return present <= scheme.file_values and not rc_without_et


def _scheme_of_hint(hinted: LabelScheme, stats: Sequence[LabelStats], evidence: str, flag: str,
                    prefix: str) -> LabelScheme:
    """The layout's scheme (BraTS 2024 for 2023 naming with 3 and 4), checked against the values.

    Segmentations with values outside it are left to per-case errors, unless none fits.
    """
    options = [hinted, SCHEMES["brats2024"]] if hinted.name == "brats2023" else [hinted]
    fitting = [s for s in stats if any(s.values - {0} <= o.file_values for o in options)]
    if stats and not fitting:
        present = set().union(*(s.values for s in stats)) - {0}
        raise LabelSchemeError(f"{prefix}{evidence}: unexpected label values {sorted(present - hinted.file_values)} "
                               f"for {hinted.name} ({hinted.description}) in every segmentation; "
                               f"{_ways_out(present, stats, flag)}")
    ok = set().union(*(s.values for s in fitting)) - {0}
    for option in options:
        if _plausible(option, ok):
            return option
    raise LabelSchemeError(
        f"{prefix}{evidence}: 4 without any 3 is BraTS 2017-21's ET, not BraTS 2024's resection cavity (which "
        f"comes with ET 3); pass {flag} brats2017 if 4 is ET, or {flag} brats2024 if it is a resection cavity")


def _readings(present: set[int]) -> list[list[LabelScheme]]:
    """Plausible schemes for the values, grouped by how they read them (same canonical labels)."""
    groups: dict[tuple[int, ...], list[LabelScheme]] = {}
    for scheme in SCHEMES.values():
        if _plausible(scheme, present):
            canon = scheme.to_canonical(np.array(sorted(present), dtype=np.int64))
            groups.setdefault(tuple(int(c) for c in canon), []).append(scheme)
    return list(groups.values())


def _ways_out(present: set[int], stats: Sequence[LabelStats], flag: str) -> str:
    """'pass --label-scheme X or Y ...' for the schemes that fit the values, or 'fix the segmentations'."""
    groups = _readings(present)
    if not groups:
        return (f"the values match no known scheme ({'; '.join(s.description for s in SCHEMES.values())}): "
                "fix the segmentations")
    names = " or ".join(g[0].name for g in groups)
    return f"pass {flag} {names} if the dataset uses another scheme{_suggestion(groups, stats)}, or fix the " \
        "segmentations"


def _suggestion(groups: list[list[LabelScheme]], stats: Sequence[LabelStats]) -> str:
    """'; the tumour border (edema outside) suggests X' when exactly one reading puts edema outside."""
    fine = [g[0].name for g in groups if _swap_counts(g[0], stats)[2] and not looks_swapped(g[0], stats)]
    return f" (the tumour border, where edema lies, suggests {fine[0]})" if len(fine) == 1 else ""


def _scheme_of_values(present: set[int], stats: Sequence[LabelStats], evidence: str, flag: str,
                      prefix: str) -> LabelScheme | None:
    """The scheme the values alone decide, or None without segmentations."""
    if not stats:
        return None
    groups = _readings(present)
    if not groups:
        raise LabelSchemeError(f"{prefix}{evidence}: {_ways_out(present, stats, flag)}")
    if len(groups) > 1:
        differ = "; ".join(_meanings(v, groups) for v in sorted(present) if len(_meanings_set(v, groups)) > 1)
        raise LabelSchemeError(
            f"{prefix}{evidence}, and neither file names nor dataset.json name the scheme: "
            f"{' and '.join('/'.join(s.name for s in g) for g in groups)} read them differently ({differ}); "
            f"pass {flag} {' or '.join(g[0].name for g in groups)}{_suggestion(groups, stats)}")
    return groups[0][0]


def _meanings_set(value: int, groups: list[list[LabelScheme]]) -> list[str]:
    names = []
    for group in groups:
        canon = int(group[0].to_canonical(np.array([value]))[0])
        if CANONICAL_NAMES[canon] not in names:
            names.append(CANONICAL_NAMES[canon])
    return names


def _meanings(value: int, groups: list[list[LabelScheme]]) -> str:
    return f"{value} = {' or '.join(_meanings_set(value, groups))}"


def _swap_counts(scheme: LabelScheme, stats: Sequence[LabelStats]) -> tuple[int, int, bool]:
    """Border voxels of the scheme's NCR and ED values over all segmentations, and whether ED occurs."""
    ncr, ed = scheme.to_file[NCR], scheme.to_file[ED]
    on_border_ncr = sum(s.border.get(ncr, 0) for s in stats)
    on_border_ed = sum(s.border.get(ed, 0) for s in stats)
    return on_border_ncr, on_border_ed, any(ed in s.values for s in stats)


def looks_swapped(scheme: LabelScheme, stats: Sequence[LabelStats]) -> bool:
    """Whether, read with ``scheme``, necrosis lies on the tumour's outer border more than edema
    (which surrounds the core) over these segmentations: NCR and ED look swapped."""
    ncr, ed, has_ed = _swap_counts(scheme, stats)
    return has_ed and ncr > max(ed, ANATOMY_MIN_VOXELS)


def _check_anatomy(scheme: LabelScheme, stats: Sequence[LabelStats], evidence: str, flag: str, prefix: str) -> None:
    """LabelSchemeError when the scheme's NCR and ED values look swapped (see :func:`_looks_swapped`)."""
    if not looks_swapped(scheme, stats):
        return
    ncr, ed = scheme.to_file[NCR], scheme.to_file[ED]
    on_ncr, on_ed, _ = _swap_counts(scheme, stats)
    other = next((s for s in SCHEMES.values() if s.to_file.get(NCR) == ed and s.to_file.get(ED) == ncr
                  and s.to_file.get(ET) == scheme.to_file[ET]), None)
    way = f"pass {flag} {other.name} if {ed} is necrosis and {ncr} edema, or pass" if other is not None \
        else "fix them, or pass"
    raise LabelSchemeError(
        f"{prefix}{evidence}, but read so, {ncr} (NCR) and {ed} (edema) look swapped: {on_ncr} voxels of {ncr} and "
        f"only {on_ed} of {ed} lie on the tumour's outer border, where edema belongs; "
        f"{way} {flag} {scheme.name} to read the files as they are")


def detect_scheme(
    values: Iterable[int], layout_hint: str | None = None, context: str = ""
) -> LabelScheme:
    """Decide the label scheme of one segmentation from its values and the layout's scheme.

    :func:`resolve_scheme` for a single segmentation known by its values only (no anatomy check).

    Args:
        values: distinct label values found in the segmentation(s).
        layout_hint: scheme that the folder layout suggests (``"brats2017"`` for
            ``_seg`` files, ``"brats2023"`` for ``-seg`` files, ``"msd"`` for Task01), or None.
        context: case/file named in the error message.

    Returns:
        The scheme.

    Raises:
        LabelSchemeError: the values contradict the layout's scheme or every scheme, or leave it
            undecided.
    """
    stats = [LabelStats(frozenset(int(v) for v in values), {})]
    evidence = f"the layout's scheme {layout_hint}" if layout_hint is not None else ""
    return _decided(resolve_scheme(stats, layout_hint, evidence, context=context, anatomy=False))


def case_scheme(labels: np.ndarray, hint: str | None = None, hint_evidence: str = "", context: str = "") -> LabelScheme:
    """The scheme of one segmentation on its own (when no dataset-wide decision was made).

    Args:
        labels: the segmentation's file values, any shape, integer-valued.
        hint, hint_evidence: the layout's scheme and where it comes from (see :func:`resolve_scheme`).
        context: case/file named in the error message.

    Raises:
        LabelSchemeError: as :func:`resolve_scheme`.
    """
    return _decided(resolve_scheme([label_stats(labels)], hint, hint_evidence, context=context))


def _decided(decision: SchemeDecision) -> LabelScheme:
    if decision.scheme is None:  # internal: one segmentation always decides or raises
        raise LabelSchemeError(f"no label scheme decided ({decision.evidence})")
    return decision.scheme



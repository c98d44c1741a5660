"""Label schemes of the BraTS releases and MSD Task01, and the WT/TC/ET regions.

Everything inside glioseg uses one *canonical* labelling:

==========  =====  ==========================================================
canonical   name   meaning
==========  =====  ==========================================================
0           BG     background
1           NCR    necrotic / non-enhancing tumour core (BraTS 2023: NETC)
2           ED     peritumoral edema (BraTS 2023: SNFH)
3           ET     enhancing tumour
4           RC     resection cavity (BraTS 2024 post-treatment only)
==========  =====  ==========================================================

Files use the labels of their release; :class:`LabelScheme` converts both ways.
Regions follow the BraTS rules: WT = NCR+ED+ET, TC = NCR+ET, ET = ET (RC is in none).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

BG, NCR, ED, ET, RC = 0, 1, 2, 3, 4
CANONICAL_NAMES: dict[int, str] = {BG: "BG", NCR: "NCR", ED: "ED", ET: "ET", RC: "RC"}

NUM_LABEL_CLASSES = 4  # softmax classes of the "labels" target: BG, NCR, ED, ET (RC trains as BG)


class Region(str, enum.Enum):
    """BraTS evaluation regions, in the order of the network's output channels."""

    WT = "WT"
    TC = "TC"
    ET = "ET"


REGIONS: tuple[Region, ...] = (Region.WT, Region.TC, Region.ET)
REGION_LABELS: dict[Region, tuple[int, ...]] = {
    Region.WT: (NCR, ED, ET),
    Region.TC: (NCR, ET),
    Region.ET: (ET,),
}


class LabelSchemeError(ValueError):
    """The label scheme is unknown, or cannot be decided from the data."""


@dataclass(frozen=True)
class LabelScheme:
    """How one release writes the canonical labels in its files.

    Attributes:
        name: registry key, e.g. ``"brats2017"``.
        description: one line for humans.
        to_file: canonical label -> file value, for every label the release has.
    """

    name: str
    description: str
    to_file: dict[int, int]

    @property
    def file_values(self) -> frozenset[int]:
        """Label values that may appear in a file of this scheme (background included)."""
        return frozenset(self.to_file.values())

    def to_canonical(self, labels: np.ndarray, context: str = "") -> np.ndarray:
        """Map a label map from this scheme's file values to canonical labels.

        Args:
            labels: integer array of any shape and integer dtype.
            context: case/file named in the error message.

        Returns:
            uint8 array of the same shape with canonical labels.

        Raises:
            LabelSchemeError: a value that the scheme does not define is present.
        """
        lut = np.full(256, 255, dtype=np.uint8)
        for canon, value in self.to_file.items():
            lut[value] = canon
        values = np.asarray(labels)
        if values.size and (values.min() < 0 or values.max() > 255):
            raise LabelSchemeError(
                f"{context}: label values outside 0..255 ({values.min()}..{values.max()}); "
                f"{self.name} expects {sorted(self.file_values)}"
            )
        out = lut[values.astype(np.int64, copy=False)]
        if (out == 255).any():
            bad = sorted(set(np.unique(values).tolist()) - set(self.file_values))
            raise LabelSchemeError(
                f"{context}: unexpected label values {bad} for scheme {self.name} "
                f"(expects {sorted(self.file_values)}); pass the right --label-scheme"
            )
        return out

    def from_canonical(self, labels: np.ndarray) -> np.ndarray:
        """Map canonical labels to this scheme's file values.

        Args:
            labels: uint8 canonical label map, any shape.

        Returns:
            uint8 array of the same shape in this scheme. Canonical labels the scheme lacks
            (RC outside BraTS 2024) become background.
        """
        lut = np.zeros(256, dtype=np.uint8)
        for canon, value in self.to_file.items():
            lut[canon] = value
        return lut[np.asarray(labels).astype(np.uint8, copy=False)]


SCHEMES: dict[str, LabelScheme] = {
    "brats2017": LabelScheme(
        "brats2017", "BraTS 2017-2021: 1 NCR/NET, 2 ED, 4 ET", {BG: 0, NCR: 1, ED: 2, ET: 4}
    ),
    "brats2023": LabelScheme(
        "brats2023", "BraTS 2023+ GLI: 1 NETC, 2 SNFH, 3 ET", {BG: 0, NCR: 1, ED: 2, ET: 3}
    ),
    "brats2024": LabelScheme(
        "brats2024",
        "BraTS 2024 post-treatment: 1 NETC, 2 SNFH, 3 ET, 4 RC",
        {BG: 0, NCR: 1, ED: 2, ET: 3, RC: 4},
    ),
    "msd": LabelScheme(
        "msd", "MSD Task01: 1 edema, 2 non-enhancing tumour, 3 enhancing tumour",
        {BG: 0, ED: 1, NCR: 2, ET: 3},
    ),
}
SCHEME_ALIASES: dict[str, str] = {
    "brats2018": "brats2017", "brats2019": "brats2017", "brats2020": "brats2017",
    "brats2021": "brats2017", "canonical": "brats2023", "gli": "brats2023",
    "brats-gli": "brats2023", "task01": "msd", "msd-task01": "msd",
}


def get_scheme(name: str | LabelScheme) -> LabelScheme:
    """Look a scheme up by name or alias.

    Raises:
        LabelSchemeError: unknown name; the message lists the valid ones.
    """
    if isinstance(name, LabelScheme):
        return name
    key = SCHEME_ALIASES.get(name.lower(), name.lower())
    if key not in SCHEMES:
        raise LabelSchemeError(
            f"unknown label scheme {name!r}; choose one of {sorted(SCHEMES)} "
            f"(aliases: {sorted(SCHEME_ALIASES)})"
        )
    return SCHEMES[key]


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


def labels_to_regions(labels: np.ndarray) -> np.ndarray:
    """Canonical label map -> stacked binary regions.

    Args:
        labels: canonical labels, shape ``(X, Y, Z)`` (any leading dims allowed).

    Returns:
        bool array ``(3, X, Y, Z)`` in the order WT, TC, ET.
    """
    return np.stack([np.isin(labels, REGION_LABELS[r]) for r in REGIONS])


def regions_to_labels(regions: np.ndarray) -> np.ndarray:
    """Stacked binary regions (WT, TC, ET) -> canonical labels.

    The hierarchy is enforced: ET wins, then the rest of TC is NCR, then the rest of WT is ED.
    An ET or TC voxel outside WT still counts as tumour.

    Args:
        regions: bool-like ``(3, X, Y, Z)``.

    Returns:
        uint8 ``(X, Y, Z)`` canonical labels.
    """
    wt, tc, et = (np.asarray(regions[i], dtype=bool) for i in range(3))
    out = np.zeros(wt.shape, dtype=np.uint8)
    out[wt] = ED
    out[tc] = NCR
    out[et] = ET
    return out


TARGETS = ("regions", "labels")


def check_target(target: str) -> None:
    """Raise ValueError for an unknown target kind."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {list(TARGETS)}")


def probabilities_to_labels(probs: np.ndarray, target: str = "regions",
                            thresholds: Sequence[float] = (0.5, 0.5, 0.5)) -> np.ndarray:
    """Probabilities -> canonical labels (no small-ET rule).

    Args:
        probs: float ``(3, X, Y, Z)`` WT/TC/ET probabilities (regions), or ``(K, X, Y, Z)``
            softmax probabilities of canonical labels 0..K-1 (labels).
        target: ``"regions"`` or ``"labels"``.
        thresholds: per-region thresholds (regions only); a voxel is in a region when its
            probability is >= the threshold.

    Returns:
        uint8 ``(X, Y, Z)`` canonical labels.

    Raises:
        ValueError: unknown target or wrong channel count.
    """
    check_target(target)
    if target == "labels":
        if probs.ndim != 4 or probs.shape[0] < 2:
            raise ValueError(f"label probabilities must be (K>=2, X, Y, Z); got {probs.shape}")
        return np.argmax(probs, axis=0).astype(np.uint8)
    if probs.ndim != 4 or probs.shape[0] != 3:
        raise ValueError(f"region probabilities must be (3, X, Y, Z) for WT, TC, ET; got {probs.shape}")
    regions = np.stack([probs[i] >= thresholds[i] for i in range(3)])
    return regions_to_labels(regions)


def output_channels(target: str) -> int:
    """Network output channels for a target mode (3 regions or 4 labels)."""
    check_target(target)
    return len(REGIONS) if target == "regions" else NUM_LABEL_CLASSES



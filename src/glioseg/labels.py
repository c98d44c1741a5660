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
from collections.abc import Sequence
from dataclasses import dataclass

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



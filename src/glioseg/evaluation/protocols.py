"""The BraTS scoring protocols, one table: which official code each reproduces and its parameters.

``glioseg evaluate --protocol NAME`` scores by one of these; the report and the summary JSON
record the chosen row (:meth:`Protocol.parameters`). The rules changed three times:

- ``brats2021``: the 2017-2021 legacy rules (CaPTk / medpy ``Hausdorff95``): one Dice and HD95
  per case and region; both masks empty -> Dice 1 / HD95 0, exactly one empty -> Dice 0 / HD95
  373.13 mm. The optional lesion-wise columns (``--lesion-wise``) follow ``brats2023``.
- ``brats2023`` / ``brats2024``: the lesion-wise rules of the BraTS 2023 and 2024 GLI code
  (rachitsaluja/BraTS-2023-Metrics, BraTS-2024-Metrics): ground-truth lesions grouped by 3
  dilations, ground-truth lesions up to a size threshold (mm^3) not scored, predicted lesions
  matched greedily (every prediction touching a dilated lesion), each missed or false lesion
  Dice 0 / HD95 374 mm. 2023 drops lesions <= 50 mm^3; 2024 <= 20 mm^3 (WT, TC) and <= 10 mm^3
  (ET).
- ``brats2025``: ``brats-evaluation`` 0.0.10 on ``panoptica`` (config ``gli``): 26-connected
  lesions without dilation, one-to-one matching (maximum bipartite matching on Dice, any
  overlap), lesion-wise Dice/HD95 over matched pairs only, detection scored as F1 =
  TP / (TP + (FP + FN) / 2), cases with both masks empty NaN and so dropped from the mean.

Where glioseg does not reproduce the official numbers exactly, :attr:`Protocol.differences`
says so; the parity tests (``tests/evaluation/test_protocol_parity.py``) assert both the
equalities and the documented differences.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from glioseg.labels import Region

HD95_LEGACY_EMPTY_MM = 373.13  # diagonal of the 240x240x155 1-mm grid (BraTS 2017-2021)
HD95_LESION_MISS_MM = 374.0  # BraTS 2023/2024 penalty for a missed or false lesion, and for inf
HD95_PANOPTICA_EMPTY_MM = 373.0  # brats-evaluation's metrics_parser replacement of an inf global HD95
MATCHINGS = ("greedy-dilated-overlap", "one-to-one")
HD95_DEFINITIONS = ("max-directed-p95", "pooled-p95")


class ProtocolError(ValueError):
    """An unknown protocol name (the message lists the valid ones)."""


@dataclass(frozen=True)
class Protocol:
    """The scoring rules of one BraTS protocol.

    Attributes:
        name: protocol name (the challenge year whose official code it reproduces).
        official_code: the code it reproduces.
        official_version: its version (package version or commit).
        lesion_wise: whether lesion-wise scores belong to the protocol.
        matching: ``greedy-dilated-overlap`` (every predicted lesion touching a dilated ground-
            truth lesion matches it, many-to-many) or ``one-to-one`` (bipartite on Dice).
        dilation: dilations (18-connected) grouping and matching ground-truth lesions.
        min_lesion_mm3: region -> ground-truth lesions of at most this volume are not scored.
        lesion_average: what the lesion-wise Dice/HD95 average over.
        hd95: ``max-directed-p95`` (larger of the two directed 95th percentiles) or ``pooled-p95``
            (95th percentile of both directions' distances together), voxel-face surfaces.
        hd95_one_empty_mm: case HD95 when exactly one mask is empty (and, for ``brats2025``,
            when the masks do not overlap).
        lesion_miss_hd95_mm: HD95 of a missed or false lesion (``inf``: brats-evaluation's
            lesion-wise HD95 when no lesion is matched).
        both_empty: what a region with both masks empty scores.
        failure_hd95_mm: HD95 of a missing or unreadable prediction.
        detection: how lesion detection is scored.
        differences: where glioseg's numbers may differ from the official code's, and why.
    """

    name: str
    official_code: str
    official_version: str
    lesion_wise: bool
    matching: str
    dilation: int
    min_lesion_mm3: tuple[tuple[str, float], ...]
    lesion_average: str
    hd95: str
    hd95_one_empty_mm: float
    lesion_miss_hd95_mm: float
    both_empty: str
    failure_hd95_mm: float
    detection: str
    differences: str

    def __post_init__(self) -> None:
        if self.matching not in MATCHINGS:
            raise ValueError(f"protocol {self.name}: matching {self.matching!r} not in {MATCHINGS}")
        if self.hd95 not in HD95_DEFINITIONS:
            raise ValueError(f"protocol {self.name}: hd95 {self.hd95!r} not in {HD95_DEFINITIONS}")
        if self.dilation < 0 or {r for r, _ in self.min_lesion_mm3} != {r.value for r in Region}:
            raise ValueError(f"protocol {self.name}: needs a dilation >= 0 and a threshold per region")

    @property
    def drops_empty(self) -> bool:
        """True when regions with both masks empty score NaN (dropped from means)."""
        return self.matching == "one-to-one"

    def min_lesion(self, region: Region) -> float:
        """Lesion size threshold of a region (mm^3): ground-truth lesions up to it are not scored."""
        return dict(self.min_lesion_mm3)[region.value]

    def parameters(self) -> dict[str, object]:
        """The row as a JSON-able dict (``inf`` written as the string ``"inf"``)."""
        row = asdict(self)
        row["min_lesion_mm3"] = dict(self.min_lesion_mm3)
        return {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in row.items()}


def _thresholds(wt: float, tc: float, et: float) -> tuple[tuple[str, float], ...]:
    return ((Region.WT.value, wt), (Region.TC.value, tc), (Region.ET.value, et))


_GREEDY = "every ground-truth lesion above the threshold, plus one entry per false-positive lesion"
PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol(
        name="brats2021", official_code="CaPTk BraTS 2017-2021 evaluation (medpy Hausdorff95)",
        official_version="CaPTk 1.8", lesion_wise=False, matching="greedy-dilated-overlap", dilation=3,
        min_lesion_mm3=_thresholds(50, 50, 50), lesion_average=_GREEDY + " (only with --lesion-wise)",
        hd95="max-directed-p95", hd95_one_empty_mm=HD95_LEGACY_EMPTY_MM, lesion_miss_hd95_mm=HD95_LESION_MISS_MM,
        both_empty="Dice 1, HD95 0", failure_hd95_mm=HD95_LEGACY_EMPTY_MM, detection="lesion TP/FP/FN counts",
        differences="CaPTk's medpy CLI pools both directions before the 95th percentile; glioseg takes the "
                    "larger directed percentile (MONAI's definition): can differ by about a voxel"),
    Protocol(
        name="brats2023", official_code="rachitsaluja/BraTS-2023-Metrics (BraTS-GLI)",
        official_version="git 0c603fc", lesion_wise=True, matching="greedy-dilated-overlap", dilation=3,
        min_lesion_mm3=_thresholds(50, 50, 50), lesion_average=_GREEDY, hd95="max-directed-p95",
        hd95_one_empty_mm=HD95_LESION_MISS_MM, lesion_miss_hd95_mm=HD95_LESION_MISS_MM,
        both_empty="Dice 1, HD95 0 (no lesion at all: lesion-wise Dice 1, HD95 0)",
        failure_hd95_mm=HD95_LESION_MISS_MM, detection="lesion TP/FP/FN counts",
        differences="the official HD95 weights surface distances by surfel area (DeepMind surface-distance); "
                    "glioseg uses voxel-face surfaces: HD95 differs by up to about one voxel (max 1.14 mm "
                    "on the shared test cases), Dice and lesion counts are equal"),
    Protocol(
        name="brats2024", official_code="rachitsaluja/BraTS-2024-Metrics (metrics_GLI.py)",
        official_version="git 9e8879a", lesion_wise=True, matching="greedy-dilated-overlap", dilation=3,
        min_lesion_mm3=_thresholds(20, 20, 10), lesion_average=_GREEDY, hd95="max-directed-p95",
        hd95_one_empty_mm=HD95_LESION_MISS_MM, lesion_miss_hd95_mm=HD95_LESION_MISS_MM,
        both_empty="Dice 1, HD95 0 (no lesion at all: lesion-wise Dice 1, HD95 0)",
        failure_hd95_mm=HD95_LESION_MISS_MM, detection="lesion TP/FP/FN counts",
        differences="as brats2023 (surfel-area HD95); also, the 2024 code merges ET lesions that touch one "
                    "NCR/RC lesion into one lesion, which glioseg does not: ET lesion counts can differ "
                    "when ET lesions more than 3 voxels apart touch one necrosis"),
    Protocol(
        name="brats2025", official_code="brats-evaluation (config gli) on panoptica",
        official_version="brats-evaluation 0.0.10, panoptica 2.1.7", lesion_wise=True, matching="one-to-one",
        dilation=0, min_lesion_mm3=_thresholds(0, 0, 0),
        lesion_average="matched lesion pairs only (false and missed lesions enter the F1, not the Dice)",
        hd95="pooled-p95", hd95_one_empty_mm=HD95_PANOPTICA_EMPTY_MM, lesion_miss_hd95_mm=math.inf,
        both_empty="NaN: the case is dropped from that region's mean", failure_hd95_mm=HD95_PANOPTICA_EMPTY_MM,
        detection="F1 = TP / (TP + (FP + FN) / 2) per case and region",
        differences="brats-evaluation computes every HD95 in voxel units (evaluate_single_exam passes no "
                    "spacing to panoptica, whose global metrics ignore it anyway); glioseg applies the "
                    "spacing: equal on 1-mm grids such as BraTS, larger in mm elsewhere"),
)}
DEFAULT_PROTOCOL = "brats2021"


def get_protocol(name: str | Protocol) -> Protocol:
    """A protocol by name.

    Raises:
        ProtocolError: unknown name (the message lists the valid ones).
    """
    if isinstance(name, Protocol):
        return name
    if name not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def protocol_help() -> str:
    """One line per protocol naming the official code it reproduces (for ``--help``)."""
    return "; ".join(f"{p.name} = {p.official_code} {p.official_version}" for p in PROTOCOLS.values())

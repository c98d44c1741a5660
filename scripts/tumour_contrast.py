"""How strongly each channel shows the tumour: the contrast measure behind RandomChannelCNR (docs/recipe.md).

    python scripts/tumour_contrast.py PREPROCESSED [--dice CV_CASES_CSV] [-o CSV]

PREPROCESSED is a `glioseg preprocess` output with segmentations (channels z-scored inside the
brain). Per case and channel it prints the tumour-to-brain gap, the mean z inside the whole tumour
minus the mean z in the rest of the brain, and the sd of the rest of the brain. With --dice (the
`cv_cases.csv` of `glioseg cv`, or any CSV with case_id and dice_WT columns) the out-of-fold WT
Dice is printed beside them, and the cases are sorted by their weakest FLAIR/T2 gap.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from glioseg.data.nifti import MODALITIES
from glioseg.preprocessing.cache import list_preprocessed, load_preprocessed
from glioseg.preprocessing.normalize import brain_mask


def channel_contrast(image: np.ndarray, label: np.ndarray) -> list[tuple[float, float]]:
    """(tumour-to-brain gap, normal-brain sd) per channel.

    Args:
        image: float ``(C, X, Y, Z)`` z-scored inside the brain, 0 outside.
        label: ``(X, Y, Z)`` labels, tumour > 0.

    Returns:
        One ``(gap, sd)`` per channel; NaN when the case has no tumour or no normal brain.
    """
    tumour = label > 0
    normal = brain_mask(image) & ~tumour
    if not tumour.any() or not normal.any():
        return [(float("nan"), float("nan"))] * image.shape[0]
    return [(float(ch[tumour].mean() - ch[normal].mean()), float(ch[normal].std())) for ch in image]


def read_dice(path: Path) -> dict[str, float]:
    """case_id -> dice_WT of a cases CSV."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"case_id", "dice_WT"} <= set(rows[0]):
        raise SystemExit(f"{path}: needs the columns case_id and dice_WT (the cv_cases.csv of `glioseg cv`)")
    return {r["case_id"]: float(r["dice_WT"]) for r in rows if r["dice_WT"] not in ("", "nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preprocessed", type=Path)
    parser.add_argument("--dice", type=Path, default=None, help="cases CSV with case_id, dice_WT")
    parser.add_argument("-o", "--out", type=Path, default=None, help="write the table as CSV too")
    args = parser.parse_args()
    cases = list_preprocessed(args.preprocessed)
    if not cases:
        raise SystemExit(f"{args.preprocessed}: no preprocessed cases; run `glioseg preprocess` first")
    dice = read_dice(args.dice) if args.dice else {}
    header = ["case_id", *[f"gap_{m}" for m in MODALITIES], *[f"sd_{m}" for m in MODALITIES], "dice_WT"]
    rows = []
    for case_id in cases:
        pc = load_preprocessed(args.preprocessed, case_id)
        if pc.label is None:
            raise SystemExit(f"{case_id}: preprocessed without a segmentation; the gap needs the tumour")
        stats = channel_contrast(np.asarray(pc.image), np.asarray(pc.label))
        rows.append([case_id, *[g for g, _ in stats], *[s for _, s in stats], dice.get(case_id, float("nan"))])
    flair, t2 = 1 + MODALITIES.index("flair"), 1 + MODALITIES.index("t2")
    rows.sort(key=lambda r: min(r[flair], r[t2]))
    print("  ".join(f"{h:>10}" if i else f"{h:<24}" for i, h in enumerate(header)))
    for r in rows:
        print("  ".join(f"{v:>10.2f}" if i else f"{v:<24}" for i, v in enumerate(r)))
    if args.out:
        with args.out.open("w", newline="") as fh:
            csv.writer(fh).writerows([header, *rows])


if __name__ == "__main__":
    main()

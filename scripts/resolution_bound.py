"""Upper bound of a coarse-resolution stage: Dice of the ground truth after a round trip through
a coarser preprocessed grid (one-hot resampling there, restoration back to the 1 mm grid).

    python scripts/resolution_bound.py PRE_COARSE PRE_FULL

PRE_COARSE and PRE_FULL are `glioseg preprocess` outputs of the same cases (e.g. --spacing 2 and
none). Prints the mean Dice per region over the cases.
"""

from __future__ import annotations

import argparse

import numpy as np

from glioseg.labels import REGIONS, labels_to_regions
from glioseg.preprocessing.cache import list_preprocessed, load_preprocessed
from glioseg.preprocessing.restore import restore_to_case_grid
from glioseg.utils import dice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("coarse")
    parser.add_argument("full")
    args = parser.parse_args()
    rows = []
    for case_id in list_preprocessed(args.coarse):
        coarse, full = load_preprocessed(args.coarse, case_id), load_preprocessed(args.full, case_id)
        if coarse.label is None or full.label is None:
            raise SystemExit(f"{case_id}: preprocessed without a segmentation; the bound needs labels")
        back = labels_to_regions(restore_to_case_grid(np.asarray(coarse.label), coarse.meta, order=0))
        truth = labels_to_regions(restore_to_case_grid(np.asarray(full.label), full.meta, order=0))
        rows.append([dice(back[i], truth[i]) for i in range(3)])
    mean = np.mean(rows, axis=0)
    print(f"{len(rows)} cases, ground truth round trip through {args.coarse}:")
    print("  ".join(f"{r.value} Dice {m:.4f}" for r, m in zip(REGIONS, mean, strict=True)))


if __name__ == "__main__":
    main()

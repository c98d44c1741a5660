import numpy as np
import pytest

from glioseg.labels import ED, ET, NCR, RC, SCHEMES, LabelSchemeError, get_scheme, labels_to_regions, regions_to_labels
from glioseg.scheme_rules import detect_scheme, label_stats, resolve_scheme


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_scheme_round_trip(name):
    scheme = SCHEMES[name]
    canon = np.array(sorted(scheme.to_file), dtype=np.uint8)
    on_file = scheme.from_canonical(canon)
    assert np.array_equal(scheme.to_canonical(on_file), canon)


def test_known_file_values():
    assert get_scheme("brats2018").to_canonical(np.array([0, 1, 2, 4])).tolist() == [0, NCR, ED, ET]
    assert get_scheme("msd").to_canonical(np.array([0, 1, 2, 3])).tolist() == [0, ED, NCR, ET]
    assert get_scheme("brats2024").to_canonical(np.array([4])).tolist() == [RC]


def test_unexpected_value_names_context():
    with pytest.raises(LabelSchemeError, match=r"case X.*\[3\]"):
        get_scheme("brats2017").to_canonical(np.array([0, 3]), "case X")


def test_unknown_scheme_lists_valid():
    with pytest.raises(LabelSchemeError, match="brats2017"):
        get_scheme("nope")


def test_detect():
    assert detect_scheme([0, 1, 2, 4]).name == "brats2017"
    assert detect_scheme([0, 1, 2, 3, 4]).name == "brats2024"
    assert detect_scheme([0, 3]).name == "brats2023"  # every scheme with 3 reads it as ET
    assert detect_scheme([0, 1, 2, 3], layout_hint="msd").name == "msd"
    assert detect_scheme([0, 1, 2, 3], layout_hint="brats2023").name == "brats2023"
    assert detect_scheme([0, 1, 2, 3, 4], layout_hint="brats2023").name == "brats2024"
    assert detect_scheme([0, 2], layout_hint="brats2017").name == "brats2017"
    with pytest.raises(LabelSchemeError, match="--label-scheme brats2023 or msd"):
        detect_scheme([0, 1, 2, 3])  # BraTS 2023 and MSD read 1 and 2 differently: never guessed
    with pytest.raises(LabelSchemeError, match="--label-scheme"):
        detect_scheme([0, 1, 2])
    with pytest.raises(LabelSchemeError, match="--label-scheme brats2017 if 4 is ET"):
        detect_scheme([0, 1, 2, 4], layout_hint="brats2023")  # not BraTS 2024 with RC and no ET
    with pytest.raises(LabelSchemeError, match=r"unexpected label values \[3\] for brats2017 .*in every segmentation"):
        detect_scheme([0, 1, 3], layout_hint="brats2017")


def _shells() -> np.ndarray:
    """Concentric cubes: NCR inside ET inside ED, 9^3 in an 11^3 background."""
    labels = np.zeros((11, 11, 11), np.uint8)
    labels[1:10, 1:10, 1:10] = ED
    labels[3:8, 3:8, 3:8] = ET
    labels[4:7, 4:7, 4:7] = NCR
    return labels


def test_label_stats_counts_the_outer_border_by_hand():
    stats = label_stats(SCHEMES["brats2017"].from_canonical(_shells()))
    assert stats.values == frozenset({0, 1, 2, 4})
    assert stats.border == {2: 9**3 - 7**3}  # only the outer layer of edema touches background
    edge = np.ones((3, 3, 3), np.uint8)  # the array's edge counts as background
    assert label_stats(edge).border == {1: 26} and label_stats(np.zeros((2, 2), np.uint8)).border == {}


def test_resolve_scheme_rules():
    right = label_stats(SCHEMES["brats2023"].from_canonical(_shells()))
    assert resolve_scheme([right], "brats2023", "names").scheme.name == "brats2023"
    assert resolve_scheme([right], label_scheme="msd").evidence == "--label-scheme msd"  # the user's word wins
    assert resolve_scheme([], "msd").scheme.name == "msd" and resolve_scheme([]).scheme is None
    swapped = label_stats(SCHEMES["msd"].from_canonical(_shells()))  # 1 edema outside, read as 2023: NCR outside
    with pytest.raises(LabelSchemeError, match=r"look swapped.*--label-scheme msd if 2 is necrosis"):
        resolve_scheme([swapped], "brats2023", "names")
    assert resolve_scheme([swapped], "brats2023", anatomy=False).scheme.name == "brats2023"
    with pytest.raises(LabelSchemeError, match="suggests msd"):
        resolve_scheme([swapped])
    with pytest.raises(LabelSchemeError, match=r"^predictions in x: .*--pred-label-scheme brats2017"):
        resolve_scheme([label_stats(np.array([[[0, 1, 4]]]))], "brats2023", flag="--pred-label-scheme",
                       context="predictions in x")


def test_regions_round_trip():
    labels = np.array([0, NCR, ED, ET, RC], dtype=np.uint8)
    regions = labels_to_regions(labels)
    assert regions.tolist() == [[0, 1, 1, 1, 0], [0, 1, 0, 1, 0], [0, 0, 0, 1, 0]]
    assert regions_to_labels(regions).tolist() == [0, NCR, ED, ET, 0]

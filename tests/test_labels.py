import numpy as np
import pytest

from glioseg.labels import (
    ED,
    ET,
    NCR,
    RC,
    SCHEMES,
    LabelSchemeError,
    detect_scheme,
    get_scheme,
    labels_to_regions,
    regions_to_labels,
)


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
    assert detect_scheme([0, 1, 2, 3]).name == "brats2023"
    assert detect_scheme([0, 1, 2, 3, 4]).name == "brats2024"
    assert detect_scheme([0, 1, 2, 3], layout_hint="msd").name == "msd"
    assert detect_scheme([0, 2], layout_hint="brats2017").name == "brats2017"
    with pytest.raises(LabelSchemeError, match="--label-scheme"):
        detect_scheme([0, 1, 2])


def test_regions_round_trip():
    labels = np.array([0, NCR, ED, ET, RC], dtype=np.uint8)
    regions = labels_to_regions(labels)
    assert regions.tolist() == [[0, 1, 1, 1, 0], [0, 1, 0, 1, 0], [0, 0, 0, 1, 0]]
    assert regions_to_labels(regions).tolist() == [0, NCR, ED, ET, 0]

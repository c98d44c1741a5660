"""Every layout is found and read, with channels in the order T1, T1ce, T2, FLAIR."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from glioseg.data.layouts import case_from_files, find_cases
from glioseg.data.naming import DatasetError
from glioseg.data.nifti import MODALITIES, read_case
from glioseg.data.synthetic import make_synthetic_case

SHAPE = (24, 24, 24)


def phantom(seed, index, shape=SHAPE):
    image, label = make_synthetic_case(shape, seed=np.random.default_rng((seed, index)))
    return np.rint(image), label


def assert_reads_as_phantoms(cases, seed=0, scheme=None):
    for index, files in enumerate(cases):
        case = read_case(files, scheme)
        image, label = phantom(seed, index, case.image.shape[1:])
        for c, modality in enumerate(MODALITIES):  # channel order T1, T1ce, T2, FLAIR
            assert np.array_equal(case.image[c], image[c]), (files.case_id, modality)
        assert np.array_equal(case.label, label)


def test_brats2017(synthetic_dataset):
    cases = find_cases(synthetic_dataset)
    assert [c.case_id for c in cases] == [f"Brats18_SYN_{i:03d}_1" for i in range(3)]
    for c in cases:
        assert c.layout == "brats2017" and c.scheme_hint == "brats2017" and not c.problems
        assert {m: s.path.name for m, s in c.images.items()} == {
            m: f"{c.case_id}_{m}.nii.gz" for m in MODALITIES}
        assert c.label.name == f"{c.case_id}_seg.nii.gz"
    assert_reads_as_phantoms(cases)
    assert read_case(cases[0]).scheme.name == "brats2017"


def test_brats2017_nested(make_synthetic_dataset):
    root = make_synthetic_dataset("brats2017", n_cases=3, shape=SHAPE, nested=True)
    cases = find_cases(root)
    assert [c.images["t1"].path.parent.parent.name for c in cases] == ["HGG", "LGG", "HGG"]
    assert_reads_as_phantoms(cases)


def test_brats2023(make_synthetic_dataset):
    cases = find_cases(make_synthetic_dataset("brats2023", shape=SHAPE))
    assert [c.case_id for c in cases] == ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"]
    assert cases[0].images["flair"].path.name.endswith("-t2f.nii.gz") and cases[0].layout == "brats2023"
    assert cases[0].images["t1ce"].path.name.endswith("-t1c.nii.gz")
    assert_reads_as_phantoms(cases)
    assert read_case(cases[0]).scheme.name == "brats2023"


def test_msd_4d_channel_order(make_synthetic_dataset):
    root = make_synthetic_dataset("msd", shape=SHAPE)
    cases = find_cases(root)
    assert [c.case_id for c in cases] == ["BRATS_000", "BRATS_001"] and cases[0].layout == "msd"
    assert {m: s.volume for m, s in cases[0].images.items()} == {"flair": 0, "t1": 1, "t1ce": 2, "t2": 3}
    assert nib.load(cases[0].images["t1"].path).shape == (*SHAPE, 4)
    assert_reads_as_phantoms(cases)
    assert read_case(cases[0]).scheme.name == "msd"


def test_msd_without_dataset_json_uses_task01_order(make_synthetic_dataset, tmp_path):
    root = tmp_path / "msd"
    shutil.copytree(make_synthetic_dataset("msd", shape=SHAPE), root)
    (root / "dataset.json").unlink()
    assert_reads_as_phantoms(find_cases(root))


@pytest.mark.parametrize("order", [("flair", "t1", "t1ce", "t2"), ("t2", "flair", "t1ce", "t1")])
def test_nnunet_channel_names(make_synthetic_dataset, order):
    root = make_synthetic_dataset("nnunet", shape=SHAPE, channel_order=order)
    cases = find_cases(root)
    assert [c.case_id for c in cases] == ["BraTS_00000", "BraTS_00001"] and cases[0].layout == "nnunet"
    assert {m: s.path.name[-11:-7] for m, s in cases[0].images.items()} == {
        m: f"{order.index(m):04d}" for m in MODALITIES}
    assert cases[0].scheme_hint == "brats2023"
    assert_reads_as_phantoms(cases)


MSD_LABEL_NAMES = {
    "v1": {"modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
           "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}},
    "v2_regions": {"channel_names": {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"},
                   "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}},
}


@pytest.mark.parametrize("meta", MSD_LABEL_NAMES.values(), ids=MSD_LABEL_NAMES.keys())
def test_nnunet_dataset_json_labels_name_the_msd_scheme(make_synthetic_dataset, tmp_path, meta):
    root = tmp_path / "nn"
    shutil.copytree(make_synthetic_dataset("nnunet", shape=SHAPE, scheme="msd"), root)
    (root / "dataset.json").write_text(json.dumps(meta))
    cases = find_cases(root)
    assert cases[0].scheme_hint == "msd"  # values 0-3 alone would read as brats2023
    assert_reads_as_phantoms(cases)


def test_single_case_file_by_file(synthetic_dataset):
    files = find_cases(synthetic_dataset)[1]
    paths = [files.images[m].path for m in MODALITIES]
    case = case_from_files(*paths, seg=files.label)
    assert case.case_id == files.case_id and case.layout == "files" and case.scheme_hint is None
    got = read_case(case)
    image, label = phantom(0, 1, (48, 48, 48))
    assert np.array_equal(got.image, image) and np.array_equal(got.label, label)
    assert got.scheme.name == "brats2017"  # value 4 decides
    assert case_from_files(*paths, case_id="mine").case_id == "mine"


def test_case_folder_as_root(synthetic_dataset):
    cases = find_cases(synthetic_dataset / "Brats18_SYN_002_1")
    assert [c.case_id for c in cases] == ["Brats18_SYN_002_1"]


def test_flat_folder_of_several_cases(synthetic_dataset, tmp_path):
    for path in synthetic_dataset.rglob("*.nii.gz"):
        shutil.copy(path, tmp_path / path.name)
    cases = find_cases(tmp_path)
    assert [c.case_id for c in cases] == [f"Brats18_SYN_{i:03d}_1" for i in range(3)]
    assert all(not c.problems and len(c.images) == 4 for c in cases)


def test_duplicates_are_recorded_not_raised(synthetic_dataset, tmp_path):
    shutil.copytree(synthetic_dataset, tmp_path / "d")
    first = tmp_path / "d" / "Brats18_SYN_000_1" / "Brats18_SYN_000_1_t1.nii.gz"
    nib.save(nib.load(first), str(first.with_suffix("")))
    cases = find_cases(tmp_path / "d")
    assert len(cases) == 3 and "duplicate 't1'" in cases[0].problems[0]
    assert not cases[1].problems and not cases[2].problems


def test_nnunet_duplicate_channel(make_synthetic_dataset, tmp_path):
    root = tmp_path / "nn"
    shutil.copytree(make_synthetic_dataset("nnunet", shape=SHAPE), root)
    src = root / "imagesTr" / "BraTS_00001_0002.nii.gz"
    nib.save(nib.load(src), str(src.with_suffix("")))
    cases = find_cases(root)
    assert not cases[0].problems and "duplicate channel 0002" in cases[1].problems[0]


def test_missing_modality_is_returned(synthetic_dataset, tmp_path):
    shutil.copytree(synthetic_dataset, tmp_path / "d")
    (tmp_path / "d" / "Brats18_SYN_001_1" / "Brats18_SYN_001_1_t2.nii.gz").unlink()
    cases = find_cases(tmp_path / "d")
    assert sorted(cases[1].images) == ["flair", "t1", "t1ce"] and len(cases[0].images) == 4


def test_hidden_and_foreign_files_ignored(synthetic_dataset, tmp_path):
    shutil.copytree(synthetic_dataset, tmp_path / "d")
    folder = tmp_path / "d" / "Brats18_SYN_000_1"
    (folder / "._Brats18_SYN_000_1_t1.nii.gz").write_bytes(b"mac resource fork")
    (folder / "notes.txt").write_text("hello")
    (folder / "Brats18_SYN_000_1_mask.nii.gz").write_bytes(b"")
    cases = find_cases(tmp_path / "d")
    assert len(cases) == 3 and not cases[0].problems
    assert cases[0].images["t1"].path.name == "Brats18_SYN_000_1_t1.nii.gz"


def test_forced_layout(synthetic_dataset, make_synthetic_dataset):
    assert len(find_cases(synthetic_dataset, layout="brats2017")) == 3
    with pytest.raises(DatasetError, match="no cases found"):
        find_cases(synthetic_dataset, layout="brats2023")
    msd = make_synthetic_dataset("msd", shape=SHAPE)
    assert find_cases(msd, layout="msd")[0].layout == "msd"
    with pytest.raises(DatasetError, match="unknown layout"):
        find_cases(synthetic_dataset, layout="brats")


def test_dataset_errors(tmp_path, make_synthetic_dataset, synthetic_dataset):
    with pytest.raises(DatasetError, match="not a folder"):
        find_cases(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no cases found"):
        find_cases(tmp_path)
    nn = tmp_path / "nn"
    shutil.copytree(make_synthetic_dataset("nnunet", shape=SHAPE), nn)
    (nn / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        find_cases(nn)
    (nn / "dataset.json").write_text("{}")
    with pytest.raises(DatasetError, match="channel_names"):
        find_cases(nn)
    (nn / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "ADC", "2": "T2", "3": "FLAIR"}}))
    with pytest.raises(DatasetError, match="unknown channel name 'ADC'"):
        find_cases(nn)
    (nn / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2", "2": "FLAIR"}}))
    with pytest.raises(DatasetError, match=r"lacks \['t1ce'\]"):
        find_cases(nn)
    twice = tmp_path / "twice"
    shutil.copytree(synthetic_dataset / "Brats18_SYN_000_1", twice / "HGG" / "Brats18_SYN_000_1")
    shutil.copytree(synthetic_dataset / "Brats18_SYN_000_1", twice / "LGG" / "Brats18_SYN_000_1")
    with pytest.raises(DatasetError, match="appears twice"):
        find_cases(twice)

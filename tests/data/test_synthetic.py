import nibabel as nib
import numpy as np
import pytest

from glioseg.data.layouts import find_cases
from glioseg.data.nifti import read_case
from glioseg.data.synthetic import default_affine, make_synthetic_case, write_synthetic_dataset
from glioseg.labels import ED, ET, NCR

T1, T1CE, T2, FLAIR = range(4)


def test_case_shapes_and_dtypes():
    image, label = make_synthetic_case((32, 40, 36), seed=1)
    assert image.shape == (4, 32, 40, 36) and image.dtype == np.float32
    assert label.shape == (32, 40, 36) and label.dtype == np.uint8
    assert set(np.unique(label).tolist()) == {0, NCR, ED, ET}


def test_seeded_and_random():
    a_img, a_lab = make_synthetic_case(seed=5)
    b_img, b_lab = make_synthetic_case(seed=5)
    _c_img, c_lab = make_synthetic_case(seed=6)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_lab, c_lab)
    centroids = [np.argwhere(make_synthetic_case(seed=s)[1] > 0).mean(axis=0) for s in range(4)]
    assert np.ptp(np.array(centroids), axis=0).max() > 2.0  # tumours move between seeds
    sizes = [int((make_synthetic_case(seed=s)[1] > 0).sum()) for s in range(4)]
    assert max(sizes) > 1.2 * min(sizes)


def test_background_is_zero_and_brain_positive():
    image, label = make_synthetic_case(seed=2)
    brain = image[0] > 0
    assert brain.mean() > 0.1 and (~brain).mean() > 0.1
    assert np.array_equal(brain, (image > 0).all(axis=0))  # same brain mask on every channel
    assert brain[label > 0].all()  # tumour lies inside the brain
    assert image[:, 0, 0, 0].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_modality_signatures():
    image, label = make_synthetic_case((48, 48, 48), seed=3)
    mean = {k: image[:, label == k].mean(axis=1) for k in (ED, ET, NCR)}
    healthy = image[:, (label == 0) & (image[0] > 0)].mean(axis=1)
    assert mean[ED][FLAIR] > 1.5 * healthy[FLAIR] and mean[ED][T2] > 1.5 * healthy[T2]
    assert mean[ET][T1CE] > 1.5 * max(healthy[T1CE], mean[ED][T1CE], mean[NCR][T1CE])
    assert mean[NCR][T1CE] < 0.6 * mean[ET][T1CE] and mean[NCR][T1CE] < healthy[T1CE]


def test_healthy_and_bad_shape():
    _, label = make_synthetic_case((24, 24, 24), seed=0, tumour=False)
    assert not label.any()
    with pytest.raises(ValueError, match="16"):
        make_synthetic_case((8, 32, 32))
    with pytest.raises(ValueError, match="3 axes"):
        make_synthetic_case((32, 32))


def test_noise_and_bias_switch_off():
    image, label = make_synthetic_case((24, 24, 24), seed=0, noise=0.0, bias=0.0)
    brain = image[0] > 0
    for k in (ED, ET, NCR):  # piecewise constant without noise and bias
        assert np.ptp(image[:, label == k], axis=1).max() == 0.0
    noisy, _ = make_synthetic_case((24, 24, 24), seed=0)
    assert np.ptp(noisy[:, label == ED], axis=1).min() > 0.0
    assert brain.any()


def test_brats2017_files(synthetic_dataset):
    folders = sorted(p for p in synthetic_dataset.iterdir() if p.is_dir())
    assert len(folders) == 3
    case_id = folders[0].name
    names = sorted(p.name for p in folders[0].iterdir())
    assert names == sorted(f"{case_id}_{s}.nii.gz" for s in ("t1", "t1ce", "t2", "flair", "seg"))
    t1 = nib.load(folders[0] / f"{case_id}_t1.nii.gz")
    seg = nib.load(folders[0] / f"{case_id}_seg.nii.gz")
    assert t1.get_data_dtype() == np.int16 and seg.get_data_dtype() == np.uint8
    assert nib.aff2axcodes(t1.affine) == ("L", "P", "S")
    assert np.allclose(t1.affine, default_affine((48, 48, 48))) and not np.allclose(t1.affine, np.eye(4))
    assert int(t1.header["qform_code"]) == 1 and int(t1.header["sform_code"]) == 1
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) == {0, 1, 2, 4}
    assert not list(synthetic_dataset.rglob(".*"))  # no temporary files left


@pytest.mark.parametrize("layout,scheme,values", [
    ("brats2017", "brats2023", {0, 1, 2, 3}),
    ("brats2023", None, {0, 1, 2, 3}),
    ("msd", None, {0, 1, 2, 3}),
    ("brats2023", "brats2017", {0, 1, 2, 4}),
])
def test_scheme_on_disk(tmp_path, layout, scheme, values):
    write_synthetic_dataset(tmp_path, 1, layout=layout, scheme=scheme, shape=(24, 24, 24))
    segs = [p for p in tmp_path.rglob("*.nii.gz") if "seg" in p.name or p.parent.name == "labelsTr"]
    assert len(segs) == 1
    assert set(np.unique(np.asarray(nib.load(segs[0]).dataobj)).tolist()) == values


def test_written_case_reads_back_as_the_phantom(tmp_path):
    # an affine that permutes axes (on-disk order A, S, L) and is not 1 mm
    affine = np.array([[0, 0, -1.2, 30], [0.9, 0, 0, -20], [0, 1.1, 0, 5], [0, 0, 0, 1]], dtype=float)
    write_synthetic_dataset(tmp_path, 2, layout="brats2023", shape=(20, 24, 28), seed=4, affine=affine)
    cases = find_cases(tmp_path)
    first = nib.load(cases[0].images["t1"].path)
    assert first.shape == (24, 28, 20) and nib.aff2axcodes(first.affine) == ("A", "S", "L")
    for index, files in enumerate(cases):
        case = read_case(files)
        image, label = make_synthetic_case((20, 24, 28), seed=np.random.default_rng((4, index)))
        assert np.array_equal(case.image, np.rint(image)) and np.array_equal(case.label, label)
        assert np.allclose(case.geometry.canonical_spacing, (1.2, 0.9, 1.1))


def test_nested_and_bad_arguments(tmp_path):
    write_synthetic_dataset(tmp_path / "n", 3, nested=True, shape=(20, 20, 20))
    assert sorted(p.name for p in (tmp_path / "n").iterdir()) == ["HGG", "LGG"]
    assert len(list((tmp_path / "n" / "HGG").iterdir())) == 2
    with pytest.raises(ValueError, match="brats2017"):
        write_synthetic_dataset(tmp_path / "x", 1, layout="nope")
    with pytest.raises(ValueError, match="n_cases"):
        write_synthetic_dataset(tmp_path / "x", 0)
    with pytest.raises(ValueError, match="channel_order"):
        write_synthetic_dataset(tmp_path / "x", 1, layout="msd", channel_order=("t1", "t1", "t2", "flair"))
    with pytest.raises(ValueError, match="label scheme"):
        write_synthetic_dataset(tmp_path / "x", 1, scheme="nope")
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").rglob("*.nii.gz"))

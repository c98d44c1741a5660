"""Reading cases and writing label maps: canonical arrays in, the input's exact geometry out."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from glioseg.data.layouts import case_from_files, find_cases
from glioseg.data.nifti import CaseError, CaseFiles, ImageSource, make_label_image, read_case, write_image, write_seg
from glioseg.data.synthetic import make_synthetic_case, write_synthetic_dataset
from glioseg.labels import SCHEMES, LabelSchemeError

SHAPE = (24, 28, 20)
# header fields that legitimately differ between an int16 image and its uint8 label map
DTYPE_FIELDS = {"datatype", "bitpix", "scl_slope", "scl_inter", "cal_min", "cal_max", "glmin", "glmax"}


def rotation(ax: float, az: float) -> np.ndarray:
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx


def oblique_affine() -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = rotation(0.17, 0.35) @ np.diag([-0.9, 1.1, 1.3])  # LAS-ish, rotated, anisotropic
    affine[:3, 3] = (12.5, -30.0, 7.25)
    return affine


AFFINES = {
    "lps": None,  # synth default: 1 mm LPS with an offset origin
    "permuted": np.array([[0, 0, -1.2, 30], [0.9, 0, 0, -20], [0, 1.1, 0, 5], [0, 0, 0, 1]], dtype=float),
    "oblique": oblique_affine(),
}


@pytest.fixture(scope="module", params=sorted(AFFINES))
def written(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"io_{request.param}")
    write_synthetic_dataset(root, 1, layout="brats2017", shape=SHAPE, seed=3, affine=AFFINES[request.param])
    return request.param, find_cases(root)[0]


def test_read_case_is_canonical(written):
    _name, files = written
    case = read_case(files)
    image, label = make_synthetic_case(SHAPE, seed=np.random.default_rng((3, 0)))
    assert case.image.dtype == np.float32 and case.image.shape == (4, *SHAPE)
    assert case.label.dtype == np.uint8 and case.label.shape == SHAPE
    assert np.array_equal(case.image, np.rint(image)) and np.array_equal(case.label, label)
    assert case.scheme.name == "brats2017" and case.case_id == files.case_id
    assert nib.aff2axcodes(case.geometry.canonical_affine) == ("R", "A", "S")
    assert case.geometry.canonical_shape == SHAPE
    disk = nib.load(files.images["t1"].path)
    assert case.geometry.shape == disk.shape and np.allclose(case.geometry.affine, disk.affine)
    assert "".join(case.geometry.axcodes) != "RAS"


def test_write_seg_keeps_geometry_and_header(written, tmp_path):
    _, files = written
    case = read_case(files)
    out = write_seg(case.label, case.geometry, tmp_path / "pred.nii.gz", "brats2017")
    src_seg, src_t1, new = nib.load(files.label), nib.load(files.images["t1"].path), nib.load(out)
    assert new.get_data_dtype() == np.uint8 and new.shape == src_t1.shape
    assert np.array_equal(np.asarray(new.dataobj), np.asarray(src_seg.dataobj))
    assert np.array_equal(new.affine, src_t1.affine)
    for code in ("qform_code", "sform_code"):
        assert int(new.header[code]) == int(src_t1.header[code])
    assert np.allclose(new.header.get_qform(), src_t1.header.get_qform(), atol=1e-6)
    assert np.allclose(new.header.get_sform(), src_t1.header.get_sform(), atol=1e-6)
    for key in set(src_t1.header.keys()) - DTYPE_FIELDS:
        assert np.array_equal(new.header[key], src_t1.header[key]), key


def test_simpleitk_sees_the_same_grid(written, tmp_path):
    _, files = written
    case = read_case(files)
    out = write_seg(case.label, case.geometry, tmp_path / "pred.nii.gz")
    ref, new = sitk.ReadImage(str(files.images["t1"].path)), sitk.ReadImage(str(out))
    assert new.GetSize() == ref.GetSize()
    assert np.allclose(new.GetOrigin(), ref.GetOrigin(), atol=1e-5)
    assert np.allclose(new.GetSpacing(), ref.GetSpacing(), atol=1e-5)
    assert np.allclose(new.GetDirection(), ref.GetDirection(), atol=1e-6)
    assert new.GetPixelID() == sitk.sitkUInt8
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(files.label)))
    assert np.array_equal(sitk.GetArrayFromImage(new), seg)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_scheme_round_trip_through_disk(synthetic_dataset, tmp_path, scheme):
    case = read_case(find_cases(synthetic_dataset)[0])
    out = write_seg(case.label, case.geometry, tmp_path / "seg.nii.gz", scheme)
    values = set(np.unique(np.asarray(nib.load(out).dataobj)).tolist())
    assert values == {SCHEMES[scheme].to_file[c] for c in (0, 1, 2, 3)}
    again = read_case(CaseFiles(case.case_id, case.files.images, out), label_scheme=scheme)
    assert np.array_equal(again.label, case.label)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.float32])
def test_label_dtype_on_disk_does_not_matter(synthetic_dataset, tmp_path, dtype):
    files = find_cases(synthetic_dataset)[0]
    src = nib.load(files.label)
    path = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(src.dataobj).astype(dtype), src.affine), str(path))
    case = read_case(CaseFiles(files.case_id, files.images, path, "brats2017", "brats2017"))
    assert case.label.dtype == np.uint8
    assert np.array_equal(case.label, read_case(files).label)


@pytest.mark.parametrize("codes", [(2, 1), (0, 1), (1, 0)])
def test_header_codes_kept(tmp_path, codes):
    qcode, scode = codes
    image, _label = make_synthetic_case(SHAPE, seed=1)
    affine = AFFINES["permuted"]
    hdr = nib.Nifti1Header()
    img = nib.Nifti1Image(image[0].transpose(1, 2, 0).astype(np.int16), affine, hdr)
    img.set_qform(affine, code=qcode)
    img.set_sform(affine, code=scode)
    paths = [tmp_path / f"c_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")]
    for p in paths:
        nib.save(img, str(p))
    case = read_case(case_from_files(*paths))
    out = write_seg(np.zeros(case.geometry.canonical_shape, np.uint8), case.geometry, tmp_path / "o.nii.gz")
    new = nib.load(out)
    assert (int(new.header["qform_code"]), int(new.header["sform_code"])) == codes
    assert np.allclose(new.affine, nib.load(paths[0]).affine)
    assert case.case_id == "c"


def test_write_image_float(synthetic_dataset, tmp_path):
    case = read_case(find_cases(synthetic_dataset)[1])
    prob = np.linspace(0, 1, case.label.size, dtype=np.float32).reshape(case.label.shape)
    out = write_image(prob, case.geometry, tmp_path / "prob.nii.gz")
    new = nib.load(out)
    assert new.get_data_dtype() == np.float32
    assert np.array_equal(case.geometry.to_canonical(np.asarray(new.dataobj)), prob)
    assert np.array_equal(new.affine, case.geometry.affine)


def test_make_label_image_rejects_wrong_shape(synthetic_dataset):
    case = read_case(find_cases(synthetic_dataset)[0])
    with pytest.raises(ValueError, match="shape"):
        make_label_image(np.zeros((3, 3, 3), np.uint8), case.geometry, "brats2017")


def test_read_label_false(synthetic_dataset):
    case = read_case(find_cases(synthetic_dataset)[0], read_label=False)
    assert case.label is None and case.scheme is None


def _damaged(synthetic_dataset, tmp_path, modality, data=None, affine=None, exists=True):
    files = find_cases(synthetic_dataset)[0]
    src = nib.load(files.images[modality].path)
    path = tmp_path / f"{modality}.nii.gz"
    if exists:
        new = src.get_fdata(dtype=np.float32) if data is None else data
        nib.save(nib.Nifti1Image(new, src.affine if affine is None else affine), str(path))
    images = dict(files.images, **{modality: ImageSource(path)})
    return CaseFiles(files.case_id, images, files.label, "brats2017", "brats2017"), path


def test_read_errors_name_case_and_file(synthetic_dataset, tmp_path):
    bad, path = _damaged(synthetic_dataset, tmp_path, "t2", exists=False)
    with pytest.raises(CaseError, match=rf"case {bad.case_id} \[{path}\]: file not found") as err:
        read_case(bad)
    assert err.value.case_id == bad.case_id and err.value.path == path
    nan = np.full((48, 48, 48), np.nan, np.float32)
    with pytest.raises(CaseError, match="t1ce contains NaN"):
        read_case(_damaged(synthetic_dataset, tmp_path, "t1ce", data=nan)[0])
    with pytest.raises(CaseError, match="co-register"):
        read_case(_damaged(synthetic_dataset, tmp_path, "flair", data=np.ones((48, 48, 40), np.float32))[0])
    with pytest.raises(CaseError, match="expected a 3-D volume"):
        read_case(_damaged(synthetic_dataset, tmp_path, "t1", data=np.ones((48, 48, 48, 2), np.float32))[0])
    files = find_cases(synthetic_dataset)[0]
    with pytest.raises(CaseError, match=r"missing modalities \['flair'\]"):
        read_case(CaseFiles(files.case_id, {k: v for k, v in files.images.items() if k != "flair"}))
    with pytest.raises(CaseError, match="duplicate"):
        read_case(CaseFiles(files.case_id, files.images, problems=("duplicate 't1' files; keep one",)))


def test_degenerate_affine_is_a_case_error(synthetic_dataset, tmp_path):
    files = find_cases(synthetic_dataset)[0]
    img = nib.Nifti1Image(np.ones((48, 48, 48), np.int16), None)
    img.header.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=1)
    path = tmp_path / "t1.nii.gz"
    nib.save(img, str(path))
    with pytest.raises(CaseError, match="degenerate"):
        read_case(CaseFiles(files.case_id, dict(files.images, t1=ImageSource(path))))


def test_unexpected_label_values(synthetic_dataset, tmp_path):
    files = find_cases(synthetic_dataset)[0]
    src = nib.load(files.label)
    data = np.asarray(src.dataobj).copy()
    data[data == 4] = 3
    path = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(data, src.affine), str(path))
    bad = CaseFiles(files.case_id, files.images, path, "brats2017", "brats2017")
    with pytest.raises(LabelSchemeError, match=rf"{files.case_id}.*unexpected label values \[3\]"):
        read_case(bad)
    assert read_case(bad, label_scheme="brats2023").label.max() == 3  # explicit scheme wins

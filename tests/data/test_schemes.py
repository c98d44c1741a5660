"""Label schemes are decided once per dataset and never misread: read right, or refused naming --label-scheme."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from glioseg.data.checks import check_dataset
from glioseg.data.layouts import find_cases
from glioseg.data.naming import LAYOUTS
from glioseg.data.nifti import read_case
from glioseg.data.schemes import decide_dataset_scheme
from glioseg.data.synthetic import make_synthetic_case, write_synthetic_dataset
from glioseg.evaluation.evaluate import evaluate_folder
from glioseg.labels import SCHEMES, LabelScheme, LabelSchemeError, get_scheme

SHAPE = (20, 20, 20)
N_CASES = 2
COMBINATIONS = [(layout, scheme) for layout in LAYOUTS for scheme in SCHEMES]


def phantom_labels(seed: int = 0) -> list[np.ndarray]:
    return [make_synthetic_case(SHAPE, seed=np.random.default_rng((seed, i)))[1] for i in range(N_CASES)]


def reads_right(scheme: LabelScheme, cases) -> bool:
    """Whether reading every case's segmentation with ``scheme`` gives the phantom's canonical labels."""
    try:
        return all(np.array_equal(read_case(c, scheme).label, truth) for c, truth in zip(cases, phantom_labels(),
                                                                                          strict=True))
    except LabelSchemeError:
        return False


def right_schemes(cases) -> set[str]:
    return {name for name in SCHEMES if reads_right(SCHEMES[name], cases)}


def assert_refused_usefully(message: str, cases) -> None:
    """One line that names --label-scheme and at least one scheme that would read the files right."""
    assert "\n" not in message and "--label-scheme" in message, message
    assert any(name in message for name in right_schemes(cases)), (message, right_schemes(cases))


def write(root: Path, layout: str, scheme: str, seed: int = 0) -> list:
    write_synthetic_dataset(root, N_CASES, layout=layout, scheme=scheme, shape=SHAPE, seed=seed)
    return find_cases(root)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Every layout x scheme, plus nnU-Net and MSD datasets whose dataset.json names no labels. Read-only."""
    out = {}
    for layout, scheme in [*COMBINATIONS, *(("nnunet-unnamed", s) for s in SCHEMES),
                           *(("msd-unnamed", s) for s in SCHEMES)]:
        root = tmp_path_factory.mktemp(f"{layout}_{scheme}")
        write_synthetic_dataset(root, N_CASES, layout=layout.split("-")[0], scheme=scheme, shape=SHAPE)
        if layout.endswith("unnamed"):
            meta = json.loads((root / "dataset.json").read_text())
            for key in ("labels", "glioseg_label_scheme"):
                meta.pop(key, None)
            (root / "dataset.json").write_text(json.dumps(meta))
        out[layout, scheme] = root
    return out


ALL = [*COMBINATIONS, *(("nnunet-unnamed", s) for s in SCHEMES), *(("msd-unnamed", s) for s in SCHEMES)]


@pytest.mark.parametrize("layout,scheme", ALL, ids=[f"{a}-{b}" for a, b in ALL])
def test_every_layout_and_scheme_is_read_right_or_refused(datasets, layout, scheme):
    root = datasets[layout, scheme]
    cases = find_cases(root)
    try:
        decision = decide_dataset_scheme(cases)
    except LabelSchemeError as exc:
        assert_refused_usefully(str(exc), cases)
        report = check_dataset(root)
        assert not report.ok and "--label-scheme" in report.errors[0]
        for case in cases:  # read on its own, a case is refused too, never misread
            with pytest.raises(LabelSchemeError, match="--label-scheme"):
                read_case(case)
        assert decide_dataset_scheme(cases, scheme).scheme.name == scheme  # the way out works
        assert check_dataset(root, label_scheme=scheme).ok
        return
    assert reads_right(decision.scheme, cases), (decision, right_schemes(cases))
    assert decision.evidence
    report = check_dataset(root)
    assert report.ok and report.scheme == decision.scheme.name and report.scheme_evidence == decision.evidence
    for case, truth in zip(cases, phantom_labels(), strict=True):
        try:
            assert np.array_equal(read_case(case).label, truth)  # alone: right, or refused
        except LabelSchemeError as exc:
            assert "--label-scheme" in str(exc)


def test_labels_1_2_4_in_brats2023_naming_are_not_read_as_brats2024(tmp_path):
    cases = write(tmp_path, "brats2023", "brats2017")  # ET written as 4, like BraTS 2017-21
    with pytest.raises(LabelSchemeError, match=r"brats2017.*brats2024") as err:
        decide_dataset_scheme(cases)
    assert "BraTS 2023+ file names" in str(err.value) and "4 without any 3" in str(err.value)
    with pytest.raises(LabelSchemeError, match="--label-scheme brats2017"):
        read_case(cases[0])  # today: read as brats2024, ET became resection cavity
    assert np.array_equal(read_case(cases[0], decide_dataset_scheme(cases, "brats2017").scheme).label,
                          phantom_labels()[0])


def test_brats2024_is_decided_from_3_and_4_across_cases(tmp_path):
    cases = write(tmp_path, "brats2023", "brats2023")
    seg = cases[1].label  # case 1 gets a resection cavity (4) instead of its ET; case 0 keeps ET (3)
    img = nib.load(seg)
    data = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.where(data == 3, 4, data).astype(np.uint8), img.affine, img.header), seg)
    decision = decide_dataset_scheme(find_cases(tmp_path))
    assert decision.scheme.name == "brats2024"
    assert check_dataset(tmp_path).scheme == "brats2024"
    with pytest.raises(LabelSchemeError, match="brats2024"):
        decide_dataset_scheme(find_cases(tmp_path)[1:])  # 4 without any 3: not silently RC


def test_msd_reader_uses_dataset_json_label_names(tmp_path):
    cases = write(tmp_path, "msd", "brats2023")  # 4-D MSD files whose labels are 1 NCR, 2 ED, 3 ET
    meta = json.loads((tmp_path / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "necrotic tumour core", "2": "peritumoral edema", "3": "enhancing"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    cases = find_cases(tmp_path)
    assert cases[0].scheme_hint == "brats2023" and "dataset.json" in cases[0].scheme_evidence
    assert np.array_equal(read_case(cases[0]).label, phantom_labels()[0])  # today: read as msd, NCR/ED swapped
    report = check_dataset(tmp_path)
    assert report.ok and report.scheme == "brats2023"


def test_msd_label_names_naming_no_scheme_leave_it_to_the_values(tmp_path):
    write(tmp_path, "msd", "msd")
    meta = json.loads((tmp_path / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "label one", "2": "label two", "3": "label three"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    cases = find_cases(tmp_path)
    assert cases[0].scheme_hint is None and "match no scheme" in cases[0].scheme_evidence
    with pytest.raises(LabelSchemeError, match="--label-scheme brats2023 or msd") as err:
        decide_dataset_scheme(cases)
    assert "suggests msd" in str(err.value)  # edema (1) surrounds the tumour


def test_swapped_necrosis_and_edema_are_refused(tmp_path):
    cases = write(tmp_path, "brats2017", "brats2017")
    for case in cases:  # a converter swapped 1 and 2
        img = nib.load(case.label)
        data = np.asarray(img.dataobj)
        swapped = np.array([0, 2, 1, 3, 4], dtype=np.uint8)[data]
        nib.save(nib.Nifti1Image(swapped, img.affine, img.header), case.label)
    with pytest.raises(LabelSchemeError, match="look swapped") as err:
        decide_dataset_scheme(cases)
    assert "--label-scheme brats2017" in str(err.value) and "\n" not in str(err.value)
    report = check_dataset(tmp_path)
    assert not report.ok and "look swapped" in report.errors[0]
    assert check_dataset(tmp_path, label_scheme="brats2017").ok  # the user's word is final


def test_no_labels_decides_from_the_layout_alone(tmp_path):
    for layout in LAYOUTS:
        write_synthetic_dataset(tmp_path / layout, 1, layout=layout, shape=SHAPE, with_labels=False)
    expect = {"brats2017": "brats2017", "brats2023": "brats2023", "msd": "msd", "nnunet": "brats2023"}
    for layout, name in expect.items():
        decision = decide_dataset_scheme(find_cases(tmp_path / layout))
        assert decision.scheme.name == name and "no segmentation" in decision.evidence


def test_plain_file_names_say_nothing_and_values_decide(tmp_path):
    write(tmp_path, "brats2017", "brats2017")
    for folder in (p for p in tmp_path.iterdir() if p.is_dir()):
        for path in folder.iterdir():
            path.rename(folder / path.name.replace(f"{folder.name}_", ""))
    cases = find_cases(tmp_path)
    assert cases[0].scheme_hint is None
    assert decide_dataset_scheme(cases).scheme.name == "brats2017"  # 4 without 3: BraTS 2017-21


def test_decision_with_given_scheme_and_unknown_name(synthetic_dataset):
    cases = find_cases(synthetic_dataset)
    decision = decide_dataset_scheme(cases, "brats2021")
    assert decision.scheme.name == "brats2017" and "--label-scheme" in decision.evidence
    with pytest.raises(LabelSchemeError, match="unknown label scheme"):
        decide_dataset_scheme(cases, "nope")


# ----------------------------------------------------------------------------- evaluate


def _predictions(cases, scheme: str, out: Path) -> Path:
    """Each case's phantom labels as a prediction written in ``scheme``."""
    out.mkdir()
    for case, truth in zip(cases, phantom_labels(), strict=True):
        img = nib.load(case.label)
        geometry = read_case(case, get_scheme(case.scheme_hint or "brats2017")).geometry
        data = get_scheme(scheme).from_canonical(geometry.from_canonical(truth))
        nib.save(nib.Nifti1Image(data, img.affine, img.header), out / f"{case.case_id}.nii.gz")
    return out


def test_evaluate_refuses_1_2_4_predictions_against_brats2023_ground_truth(tmp_path):
    cases = write(tmp_path / "gt", "brats2023", "brats2023")
    pred = _predictions(cases, "brats2017", tmp_path / "pred")
    with pytest.raises(LabelSchemeError, match="--pred-label-scheme brats2017"):
        evaluate_folder(pred, tmp_path / "gt")  # today: ET 0.000, no warning
    result = evaluate_folder(pred, tmp_path / "gt", pred_label_scheme="brats2017")
    assert not result.failed and all(c.mean_dice == 1.0 for c in result.cases)
    assert result.label_scheme == "brats2023" and result.pred_label_scheme == "brats2017"


def test_evaluate_decides_the_ground_truth_scheme_once(tmp_path):
    cases = write(tmp_path / "gt", "brats2023", "msd")  # MSD labels in BraTS 2023 names: swapped on its face
    pred = _predictions(cases, "msd", tmp_path / "pred")
    with pytest.raises(LabelSchemeError, match=r"look swapped.*--label-scheme msd"):
        evaluate_folder(pred, tmp_path / "gt")
    result = evaluate_folder(pred, tmp_path / "gt", label_scheme="msd")
    assert not result.failed and all(c.mean_dice == 1.0 for c in result.cases)


def test_evaluate_ground_truth_and_predictions_in_their_own_schemes(tmp_path):
    cases = write(tmp_path / "gt", "brats2017", "brats2017")
    pred = _predictions(cases, "brats2017", tmp_path / "pred")
    result = evaluate_folder(pred, tmp_path / "gt")
    assert not result.failed and all(c.mean_dice == 1.0 for c in result.cases)
    assert result.label_scheme == result.pred_label_scheme == "brats2017"
    assert "BraTS 2017-21 file names" in result.scheme_evidence


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
@pytest.mark.slow
def test_real_brats18_scheme_is_brats2017_without_contradiction(shared_brats18, tmp_path):
    cases = find_cases(shared_brats18)
    decision = decide_dataset_scheme(cases, workers=2)
    assert decision.scheme.name == "brats2017", decision
    for case in cases[:3]:  # each on its own too (the anatomy check holds per case)
        assert decide_dataset_scheme([case]).scheme.name == "brats2017"
    plain = tmp_path / "plain"
    for case in cases:  # plain names: the values (4, no 3) and the anatomy decide
        (plain / case.case_id).mkdir(parents=True)
        for path in [*(s.path for s in case.images.values()), case.label]:
            (plain / case.case_id / path.name.replace(f"{case.case_id}_", "")).symlink_to(path)
    assert decide_dataset_scheme(find_cases(plain)).scheme.name == "brats2017"
    shutil.rmtree(plain)

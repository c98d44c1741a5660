"""Case discovery never drops or merges cases silently: plain file names, mixed releases, symlinks, IDs."""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from glioseg.data.checks import check_dataset
from glioseg.data.layouts import case_from_files, find_cases
from glioseg.data.naming import BRATS2017_SUFFIX, BRATS2023_SUFFIX, DatasetError
from glioseg.data.nifti import MODALITIES, read_case
from glioseg.data.synthetic import make_synthetic_case, write_synthetic_dataset

SHAPE = (20, 20, 20)


def plain_names(folder: Path, layout: str = "brats2017") -> Path:
    """Rename ``<ID>_t1.nii.gz`` ... (or ``<ID>-t1n.nii.gz`` ...) in a case folder to ``t1.nii.gz`` ..."""
    sep, suffixes = ("_", BRATS2017_SUFFIX) if layout == "brats2017" else ("-", BRATS2023_SUFFIX)
    for suffix in (*suffixes.values(), "seg"):
        (folder / f"{folder.name}{sep}{suffix}.nii.gz").rename(folder / f"{suffix}.nii.gz")
    return folder


def brats(root: Path, n: int, layout: str = "brats2017", seed: int = 0) -> list[Path]:
    return write_synthetic_dataset(root, n, layout=layout, shape=SHAPE, seed=seed)


def phantom_label(seed: int, index: int) -> np.ndarray:
    return make_synthetic_case(SHAPE, seed=np.random.default_rng((seed, index)))[1]


# ----------------------------------------------------------------------------- item 3: IDs


@pytest.mark.parametrize("layout", ["brats2017", "brats2023"])
def test_plain_file_names_take_the_folder_name(tmp_path, layout):
    folders = brats(tmp_path / "data", 2, layout)
    renamed = tmp_path / "data" / "patient_A"
    plain_names(folders[0], layout).rename(renamed)  # patient_A/t1.nii.gz ... next to an ID-named case folder
    cases = find_cases(tmp_path / "data")
    assert [c.case_id for c in cases] == sorted(["patient_A", folders[1].name])
    plain = next(c for c in cases if c.case_id == "patient_A")
    assert sorted(plain.images) == sorted(MODALITIES) and plain.label.name == "seg.nii.gz"
    assert plain.layout == layout and not plain.problems
    assert np.array_equal(read_case(plain, layout).label, phantom_label(0, 0))


def test_plain_case_folder_as_root_and_dot(tmp_path, monkeypatch):
    folder = plain_names(brats(tmp_path, 1)[0])
    assert [c.case_id for c in find_cases(folder)] == [folder.name]
    monkeypatch.chdir(folder)
    assert [c.case_id for c in find_cases(".")] == [folder.name]  # never "" (Path(".").name)


def test_id_named_case_folder_given_as_dot(tmp_path, monkeypatch):
    folder = brats(tmp_path, 1)[0]
    monkeypatch.chdir(folder)
    assert [c.case_id for c in find_cases(".")] == [folder.name]
    monkeypatch.chdir(folder / "..")
    assert [c.case_id for c in find_cases(Path(folder.name) / ".." / folder.name)] == [folder.name]


def test_plain_folders_with_one_name_are_an_error_naming_both(tmp_path):
    case = plain_names(brats(tmp_path / "src", 1)[0])
    for group in ("HGG", "LGG"):
        shutil.copytree(case, tmp_path / "data" / group / "P1")
    with pytest.raises(DatasetError, match="case ID P1 appears twice") as err:
        find_cases(tmp_path / "data")
    message = str(err.value)
    assert str(tmp_path / "data" / "HGG" / "P1") in message and str(tmp_path / "data" / "LGG" / "P1") in message
    assert "\n" not in message and "rename one" in message


def test_ids_differing_only_in_case_are_an_error(tmp_path):
    case = plain_names(brats(tmp_path / "src", 1)[0])
    shutil.copytree(case, tmp_path / "data" / "Case1")
    shutil.copytree(case, tmp_path / "data" / "case1")
    with pytest.raises(DatasetError, match="Case1 and case1 differ only in case"):
        find_cases(tmp_path / "data")


def test_case_from_files_ids(tmp_path):
    folder = plain_names(brats(tmp_path, 1)[0])
    plain = [folder / f"{BRATS2017_SUFFIX[m]}.nii.gz" for m in MODALITIES]
    assert case_from_files(*plain).case_id == folder.name  # not "t1"
    leading = [p.rename(p.with_name(f"_{p.name}")) for p in plain]
    assert case_from_files(*leading).case_id == folder.name  # "_t1.nii.gz" has an empty ID
    for bad in ("", " ", ".", "..", "a/b", "a\\b"):
        with pytest.raises(DatasetError, match="case ID"):
            case_from_files(*leading, case_id=bad)


# ----------------------------------------------------------------------------- item 7: mixed naming, symlinks


def test_mixed_2017_and_2023_naming_is_refused_not_dropped(tmp_path):
    root = tmp_path / "data"
    brats(root, 2, "brats2017")
    brats(root / "new", 3, "brats2023")
    with pytest.raises(DatasetError) as err:
        find_cases(root)
    message = str(err.value)
    assert re.search(r"2 cases .*BraTS 2017-21.* 3 cases .*BraTS 2023", message), message
    assert "Brats18_SYN_000_1" in message and "BraTS-GLI-00000-000" in message and "\n" not in message
    assert "separate folders" in message
    assert [c.layout for c in find_cases(root, layout="brats2023")] == ["brats2023"] * 3  # asked for: one kind
    report = check_dataset(root)
    assert not report.ok and "BraTS 2023" in report.errors[0]


def test_one_folder_with_both_namings_is_refused(tmp_path):
    a = brats(tmp_path / "a", 1, "brats2017")[0]
    b = brats(tmp_path / "b", 1, "brats2023")[0]
    mixed = tmp_path / "data" / "case"
    shutil.copytree(a, mixed)
    for path in b.iterdir():
        shutil.copy(path, mixed / path.name)
    with pytest.raises(DatasetError, match=r"BraTS 2017-21 .*BraTS 2023"):
        find_cases(tmp_path / "data")


def test_symlinked_subfolders_and_case_folders_are_followed(tmp_path):
    root = tmp_path / "data"
    brats(root / "HGG", 2, seed=1)
    other = tmp_path / "other_disk"
    brats(other / "LGG", 1, seed=2)
    (other / "LGG" / "Brats18_SYN_000_1").rename(other / "LGG" / "Brats18_SYN_100_1")
    for path in (other / "LGG" / "Brats18_SYN_100_1").iterdir():
        path.rename(path.with_name(path.name.replace("_000_", "_100_")))
    brats(other / "loose", 1, seed=3)
    (other / "loose" / "Brats18_SYN_000_1").rename(other / "loose" / "Brats18_SYN_200_1")
    for path in (other / "loose" / "Brats18_SYN_200_1").iterdir():
        path.rename(path.with_name(path.name.replace("_000_", "_200_")))
    os.symlink(other / "LGG", root / "LGG")  # LGG -> /other/disk/LGG
    os.symlink(other / "loose" / "Brats18_SYN_200_1", root / "HGG" / "Brats18_SYN_200_1")  # a case folder
    os.symlink(root, root / "HGG" / "loop")  # a cycle must neither hang nor duplicate cases
    cases = find_cases(root)
    assert [c.case_id for c in cases] == ["Brats18_SYN_000_1", "Brats18_SYN_001_1",
                                          "Brats18_SYN_100_1", "Brats18_SYN_200_1"]
    assert all(len(c.images) == 4 and c.label is not None for c in cases)
    assert cases[2].images["t1"].path.parent == root / "LGG" / "Brats18_SYN_100_1"  # the path as given
    assert np.array_equal(read_case(cases[2]).label, phantom_label(2, 0))


def test_broken_symlinked_file_is_reported_not_dropped(tmp_path):
    folder = brats(tmp_path, 2)[1]
    t2 = folder / f"{folder.name}_t2.nii.gz"
    t2.unlink()
    os.symlink(tmp_path / "gone.nii.gz", t2)
    case = find_cases(tmp_path)[1]
    assert case.images["t2"].path == t2
    report = check_dataset(tmp_path)
    assert [f.check for f in report.cases[1].errors] == ["missing-file"] and report.cases[0].ok

"""`glioseg view`: writes the viewer page, and refuses bad input in one line naming the file and the fix."""

import base64
import gzip
import re

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.layouts import find_cases

runner = CliRunner()


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    from glioseg.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("view_cli")
    write_synthetic_dataset(root, 1, layout="brats2017", shape=(24, 24, 24), seed=2)
    files = find_cases(root)[0]
    return files.label.parent, files


def _error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def _labels(page: str, key: str) -> np.ndarray:
    text = re.search(rf'id="vol-{key}">([^<]*)<', page).group(1)
    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(text))).dataobj)


def test_view_writes_the_page(case, tmp_path):
    folder, files = case
    seg = np.asarray(nib.load(str(files.label)).dataobj)
    pred = tmp_path / "pred.nii.gz"
    img = nib.load(str(files.label))
    nib.save(nib.Nifti1Image(np.where(seg == 2, 0, seg).astype(np.uint8), img.affine, img.header), str(pred))
    out = tmp_path / "sub" / "view.html"
    result = runner.invoke(app, ["view", str(folder), "--pred", str(pred), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "prediction, ground truth" in result.output
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and 'data-state="loading"' in page
    assert (_labels(page, "pred") == 2).sum() == 0 and (_labels(page, "gt") == 2).sum() > 0  # each its own map
    assert '"radiological": true' in page


def test_view_with_an_explicit_ground_truth_and_no_prediction(case, tmp_path):
    folder, files = case
    out = tmp_path / "v.html"
    result = runner.invoke(app, ["view", str(folder), "--gt", str(files.label), "-o", str(out), "--neurological"])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert 'id="vol-pred"' not in page and 'id="vol-gt"' in page and '"radiological": false' in page
    assert 'id="overlay-pred"' not in page and 'id="overlay-gt"' in page


def test_missing_case_folder(tmp_path):
    line = _error(runner.invoke(app, ["view", str(tmp_path / "nowhere"), "-o", str(tmp_path / "v.html")]))
    assert "nowhere" in line and "not found" in line


def test_missing_prediction(case, tmp_path):
    folder, _ = case
    line = _error(runner.invoke(app, ["view", str(folder), "--pred", str(tmp_path / "p.nii.gz"),
                                      "-o", str(tmp_path / "v.html")]))
    assert "p.nii.gz" in line and "--pred file not found" in line
    assert not (tmp_path / "v.html").exists()


def test_prediction_on_another_grid(case, tmp_path):
    folder, files = case
    img = nib.load(str(files.label))
    pred = tmp_path / "cropped.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[2:-2], img.affine), str(pred))
    line = _error(runner.invoke(app, ["view", str(folder), "--pred", str(pred), "-o", str(tmp_path / "v.html")]))
    assert "cropped.nii.gz" in line and "flair" in line and "another grid" in line and "resample" in line
    assert not (tmp_path / "v.html").exists()


def test_output_equal_to_an_input_is_refused(case):
    folder, files = case
    before = files.label.read_bytes()
    line = _error(runner.invoke(app, ["view", str(folder), "-o", str(files.label)]))
    assert str(files.label) in line and ".html" in line
    assert files.label.read_bytes() == before


def test_output_html_named_like_an_input_is_refused(case, tmp_path):
    folder, files = case
    link = tmp_path / "flair.html"
    link.symlink_to(files.images["flair"].path)  # an .html path that *is* an input file
    line = _error(runner.invoke(app, ["view", str(folder), "-o", str(link)]))
    assert "is the input" in line and files.images["flair"].path.read_bytes()[:2] == b"\x1f\x8b"


def test_unwritable_output(case, tmp_path):
    folder, _ = case
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = _error(runner.invoke(app, ["view", str(folder), "-o", str(blocker / "v.html")]))
    assert "-o" in line and str(blocker) in line


def test_output_is_a_folder(case, tmp_path):
    folder, _ = case
    (tmp_path / "dir.html").mkdir()
    line = _error(runner.invoke(app, ["view", str(folder), "-o", str(tmp_path / "dir.html")]))
    assert "is a folder" in line


def test_evaluate_viewer_writes_linked_pages(make_synthetic_dataset, tmp_path):
    root = make_synthetic_dataset("brats2017", n_cases=2, shape=(24, 24, 24), seed=4)
    pred = tmp_path / "pred"
    pred.mkdir()
    cases = find_cases(root)
    for case in cases:
        img = nib.load(str(case.label))
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), str(pred / f"{case.case_id}.nii.gz"))
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", "--pred", str(pred), "--gt", str(root), "-o", str(out), "--viewer",
                                 "--no-thumbnails"])
    assert result.exit_code == 0, result.output
    assert "[viewer 2/2]" in result.output and f"viewer pages: {out / 'viewer'}" in result.output
    report = (out / "report.html").read_text()
    for case in cases:
        link = f'href="viewer/{case.case_id}.html"'
        assert link in report
        page = (out / "viewer" / f"{case.case_id}.html").read_text()
        np.testing.assert_array_equal(_labels(page, "pred"), _labels(page, "gt"))  # the prediction is the truth
        assert _labels(page, "pred").any()


def test_evaluate_viewer_without_images_says_why(make_synthetic_dataset, tmp_path):
    root = make_synthetic_dataset("brats2017", n_cases=1, shape=(24, 24, 24), seed=4)
    case = find_cases(root)[0]
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / f"{case.case_id}.nii.gz").write_bytes(case.label.read_bytes())  # ground truths without images
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", "--pred", str(labels), "--gt", str(labels), "-o", str(out),
                                 "--viewer", "--no-thumbnails"])
    assert result.exit_code == 0, result.output
    report = (out / "report.html").read_text()
    assert "No viewer page for 1 cases" in report and "give --gt the dataset folder" in report
    assert 'href="viewer/' not in report and list((out / "viewer").iterdir()) == []

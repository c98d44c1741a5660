"""The evaluation report's per-case volumes table and its links to viewer pages (evaluate --viewer)."""

import html as htmllib
import re

import nibabel as nib
import numpy as np
import pytest

from glioseg.data.layouts import find_cases
from glioseg.data.nifti import CaseError
from glioseg.evaluation.evaluate import evaluate_folder
from glioseg.evaluation.report import VIEWER_DIR, render_html, write_report
from glioseg.labels import REGIONS


@pytest.fixture()
def evaluated(make_synthetic_dataset, tmp_path):
    """Three cases; the first predicted exactly, the second with its edema dropped, the third missing."""
    root = make_synthetic_dataset("brats2017", n_cases=3, shape=(32, 32, 32), seed=11)
    pred = tmp_path / "pred"
    pred.mkdir()
    cases = find_cases(root)
    for drop_edema, case in zip((False, True), cases[:2], strict=True):
        img = nib.load(str(case.label))
        data = np.asarray(img.dataobj)
        data = np.where(data == 2, 0, data) if drop_edema else data
        nib.save(nib.Nifti1Image(data.astype(np.uint8), img.affine, img.header), str(pred / f"{case.case_id}.nii.gz"))
    return evaluate_folder(pred, root), cases


def _rows(page: str, table: str) -> list[list[str]]:
    body = re.search(rf'<table id="{table}".*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    return [re.findall(r'data-value="([^"]*)"', row) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def test_volumes_table_per_case(evaluated):
    result, cases = evaluated
    page = render_html(result, None)
    head = re.search(r'<table id="volumes".*?<thead>(.*?)</thead>', page, re.S).group(1)
    titles = re.findall(r"<th[^>]*>([^<]*)</th>", head)
    assert titles == ["case_id"] + [f"{r.value} {n}" for r in REGIONS for n in ("predicted", "true", "difference")]
    rows = {row[0]: [float(v) if v else None for v in row[1:]] for row in _rows(page, "volumes")}
    assert sorted(rows) == sorted(c.case_id for c in cases)
    for scores in result.cases:
        values = rows[scores.case_id]
        for i, region in enumerate(REGIONS):
            pred, true = scores.regions[region].volume_pred_ml, scores.regions[region].volume_true_ml
            if scores.failed:
                assert values[3 * i] is None and values[3 * i + 1] == pytest.approx(true)
            else:
                assert values[3 * i: 3 * i + 3] == pytest.approx([pred, true, pred - true])
    exact, no_edema = (rows[c.case_id] for c in cases[:2])
    assert exact[2] == 0 and exact[0] > 0  # WT predicted exactly
    assert no_edema[2] < 0 and no_edema[5] == 0  # WT too small without edema, TC untouched
    assert 'id="viewer-note"' not in page and 'href="viewer/' not in page  # no viewer asked for


def _fake_viewer(pages: list):
    def write(case_id, path):
        if case_id.endswith("001_1"):
            raise CaseError(case_id, "cannot be shown here")
        path.write_text(f"<html>{case_id}</html>")
        pages.append(path)
        return path

    return write


def test_report_links_each_case_to_its_viewer_page(evaluated, tmp_path):
    result, cases = evaluated
    written = []
    paths = write_report(result, tmp_path / "report", thumbnails=False, viewer=_fake_viewer(written))
    page = paths["html"].read_text()
    assert paths["viewer"] == tmp_path / "report" / VIEWER_DIR and paths["viewer"].is_dir()
    links = set(re.findall(r'<a href="([^"]+)"', page))
    first, second, third = (c.case_id for c in cases)
    assert links == {f"{VIEWER_DIR}/{first}.html"}  # relative, and only to pages that exist
    for link in links:
        target = paths["html"].parent / link
        assert target.is_file() and first in target.read_text()
    assert page.count(f'<a href="{VIEWER_DIR}/{first}.html"') == 2  # in the scores and in the volumes table
    note = htmllib.unescape(re.search(r'<div id="viewer-note">(.*?)</div>', page, re.S).group(1))
    assert f"{second}: case {second}: cannot be shown here" in note and f"{third}: no prediction file" in note
    assert sorted(p.name for p in paths["viewer"].iterdir()) == [f"{first}.html"]
    assert [p.name for p in (tmp_path / "report").iterdir() if p.name.startswith(".")] == []  # no staging left


def test_a_new_report_replaces_the_old_viewer_pages(evaluated, tmp_path):
    result, cases = evaluated
    out = tmp_path / "report"
    (out / VIEWER_DIR).mkdir(parents=True)
    (out / VIEWER_DIR / "stale.html").write_text("old")
    write_report(result, out, thumbnails=False, viewer=_fake_viewer([]))
    assert sorted(p.name for p in (out / VIEWER_DIR).iterdir()) == [f"{cases[0].case_id}.html"]


def test_a_failed_page_write_leaves_the_old_report(evaluated, tmp_path):
    result, _ = evaluated
    out = tmp_path / "report"
    write_report(result, out, thumbnails=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full_disk(case_id, path):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_report(result, out, thumbnails=False, viewer=full_disk)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # all or none: no viewer/, no staging

"""`glioseg predict --viewer`: one self-contained viewer page per predicted case, beside the label maps."""

import re

import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.layouts import find_cases

runner = CliRunner()


@pytest.fixture(scope="module")
def predicted_with_viewer(make_synthetic_dataset, tmp_path_factory):
    dataset = make_synthetic_dataset(layout="brats2017", n_cases=2, shape=(64, 64, 64))  # >= 32 voxels at 2 mm
    out = tmp_path_factory.mktemp("pred")
    result = runner.invoke(app, ["predict", "-i", str(dataset), "-o", str(out), "--device", "cpu",
                                 "--precision", "fp32", "--viewer"])
    return dataset, out, result


def test_every_predicted_case_gets_a_page_that_needs_no_network(predicted_with_viewer):
    dataset, out, result = predicted_with_viewer
    assert result.exit_code == 0, result.output
    ids = sorted(c.case_id for c in find_cases(dataset))
    assert sorted(p.stem for p in (out / "viewer").glob("*.html")) == ids
    assert "2 viewer page(s)" in result.output
    page = (out / "viewer" / f"{ids[0]}.html").read_text()
    assert "niivue" in page.lower() and ids[0] in page
    assert not re.search(r"""(src|href)=["']https?://""", page)  # nothing fetched from the network


def test_without_the_flag_no_pages_are_written(make_synthetic_dataset, tmp_path):
    dataset = make_synthetic_dataset(layout="brats2017", n_cases=1, shape=(64, 64, 64))
    result = runner.invoke(app, ["predict", "-i", str(dataset), "-o", str(tmp_path), "--device", "cpu",
                                 "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "viewer").exists()


def test_a_case_whose_page_cannot_be_made_is_named_and_the_others_are_written(make_synthetic_dataset, tmp_path,
                                                                               monkeypatch):
    from glioseg.interop import viewer

    dataset = make_synthetic_dataset(layout="brats2017", n_cases=2, shape=(64, 64, 64))
    ids = sorted(c.case_id for c in find_cases(dataset))
    real = viewer.read_viewer_inputs

    def broken_first(files, *args, **kwargs):
        if files.case_id == ids[0]:
            raise ValueError(f"{files.case_id}: unreadable for the test")
        return real(files, *args, **kwargs)

    monkeypatch.setattr(viewer, "read_viewer_inputs", broken_first)
    result = runner.invoke(app, ["predict", "-i", str(dataset), "-o", str(tmp_path), "--device", "cpu",
                                 "--precision", "fp32", "--viewer"])
    assert result.exit_code == 0, result.output
    assert f"warning: {ids[0]}: no viewer page" in result.stderr
    assert [p.stem for p in (tmp_path / "viewer").glob("*.html")] == [ids[1]]

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.layouts import find_cases
from glioseg.evaluation.figures import (
    GIF_GAP_PX,
    LABEL_COLOURS,
    case_figure,
    largest_cross_section,
    orientation_marks,
    overlay,
    plane,
    save_figure,
    sweep_frames,
    thumbnail_figure,
)
from glioseg.labels import ED, ET, NCR

runner = CliRunner()


def _labels():
    labels = np.zeros((20, 16, 12), np.uint8)
    labels[5:9, 4:10, 3:5] = ED
    labels[6:8, 6:8, 4] = ET
    labels[12, 2:4, 8] = NCR
    return labels


def test_largest_cross_section():
    labels = np.zeros((20, 16, 12), np.uint8)
    labels[5:9, 4:10, 3:5] = ED  # per slice: x 12, y 8, z 24 voxels
    labels[6, 7, 5:9] = ET  # x=6 and y=7 gain 4
    labels[2, 2, 4] = NCR  # z=4 gains 1
    assert largest_cross_section(labels) == (6, 7, 4)
    assert largest_cross_section(np.zeros((6, 8, 10), np.uint8)) == (3, 4, 5)


def test_overlay_colours_and_plane_orientation():
    image = np.full((2, 2), 0.5, np.float32)
    labels = np.array([[0, ED], [ET, NCR]], np.uint8)
    rgb = overlay(image, labels, alpha=1.0)
    assert rgb[0, 0].tolist() == [0.5, 0.5, 0.5]
    assert np.allclose(rgb[0, 1], LABEL_COLOURS[ED]) and np.allclose(rgb[1, 0], LABEL_COLOURS[ET])
    assert np.allclose(rgb[1, 1], (1.0, 0.0, 0.0))  # necrosis red
    assert LABEL_COLOURS[ED][1] > LABEL_COLOURS[ED][0] and LABEL_COLOURS[ET][:2] > (0.8, 0.8)  # green, yellow
    volume = np.arange(24).reshape(2, 3, 4)
    assert plane(volume, 2, 0).shape == (3, 2)  # rows: y (anterior up), columns: x
    assert plane(volume, 2, 0)[0, 0] == volume[1, 2, 0]  # radiological: top left is anterior, patient's right
    assert plane(volume, 2, 0, "neurological")[0, 0] == volume[0, 2, 0]  # top left: anterior, patient's left
    assert plane(volume, 1, 1)[-1, -1] == volume[0, 1, 0]  # coronal bottom right: inferior, left
    assert plane(volume, 0, 1, "neurological")[0, 0] == volume[1, 2, 3]  # sagittal top left: superior, anterior
    assert orientation_marks(2) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert orientation_marks(0, "neurological") == {"left": "A", "right": "P", "top": "S", "bottom": "I"}


def test_unknown_convention_and_sweep_arguments_raise():
    flair = np.ones((20, 16, 12))
    with pytest.raises(ValueError, match="unknown display convention 'upside'; use one of radiological, neuro"):
        case_figure(flair, flair, _labels(), convention="upside")
    with pytest.raises(ValueError, match="unknown display convention"):
        plane(flair, 2, 0, "Radiological")
    with pytest.raises(ValueError, match="sweep axis 3 must be 0, 1 or 2"):
        sweep_frames(flair, _labels(), axis=3)
    with pytest.raises(ValueError, match="scale 0 >= 1"):
        sweep_frames(flair, _labels(), scale=0)


def test_case_figure_and_sweep(tmp_path):
    rng = np.random.default_rng(0)
    flair, t1ce = rng.random((20, 16, 12)) + 1, rng.random((20, 16, 12)) + 1
    fig = case_figure(flair, t1ce, _labels(), np.roll(_labels(), 1, axis=0), spacing=(1.0, 1.0, 2.5), title="T")
    assert len(fig.axes) == 12
    path = save_figure(fig, tmp_path / "case.png")
    assert Image.open(path).size[0] > 600
    assert len(case_figure(flair, t1ce, _labels()).axes) == 6  # no prediction: two columns
    frames = sweep_frames(flair, _labels(), _labels(), axis=2, margin=1, scale=10)
    assert len(frames) == 8 and frames[0].dtype == np.uint8  # slices 2..9: the tumour (3..8) and one each side
    assert frames[0].shape[1] == 2 * 200 + GIF_GAP_PX and frames[0].shape[0] > 160 + 40  # panels + header and footer
    auto = sweep_frames(flair, _labels(), None, axis=0, margin=0)  # sagittal, one panel, auto scale
    assert len(auto) == 8 and auto[0].shape[1] == 16 * 13  # x 5..12; 16 columns (y) x 13 >= 200 px
    assert len(sweep_frames(flair, None)) == 12  # no labels: every slice, still a legend
    thumb = thumbnail_figure(flair, _labels(), None, title="t")
    assert {t.get_text() for t in thumb.legends[0].get_texts()} == {"NCR", "ED", "ET"}
    assert sum(t.get_gid() == "orientation-left" for ax in thumb.axes for t in ax.texts) == 2


def test_show_cli(make_synthetic_dataset, tmp_path):
    root = make_synthetic_dataset("brats2017", n_cases=1, shape=(32, 32, 32), seed=2)
    case = find_cases(root)[0]
    out = tmp_path / "pics"
    result = runner.invoke(app, ["show", str(case.label.parent), "--pred", str(case.label), "-o", str(out), "--gif"])
    assert result.exit_code == 0, result.output
    png, gif = out / f"{case.case_id}.png", out / f"{case.case_id}.gif"
    assert Image.open(png).format == "PNG"
    assert Image.open(gif).n_frames > 3
    bad = runner.invoke(app, ["show", str(case.label.parent), "--pred", str(tmp_path / "nope.nii.gz"), "-o", str(out)])
    assert bad.exit_code == 1 and "file not found" in bad.output

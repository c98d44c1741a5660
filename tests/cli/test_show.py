"""`glioseg show`: orientation letters on every panel agree with the anatomy, whatever the affine.

The case is built in world (RAS mm) coordinates: one lesion only on the patient's left, anterior
and superior side, written with flipped and permuted affines. The lesion's place in each drawn
panel is compared with the letters drawn on that panel, so swapped letters, or a flip of the
picture without its letters, fail.
"""

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import glioseg.evaluation.figures as figures
from glioseg.cli import app

runner = CliRunner()
CASE = "Brats18_ORI_001_1"
SHAPE = (40, 36, 30)  # on disk (I, J, K)
AFFINES = {
    # L, P, S (the usual BraTS header): x and y flipped
    "LPS": np.array([[-1.0, 0, 0, 19.5], [0, -1.0, 0, 17.5], [0, 0, 1.0, -14.5], [0, 0, 0, 1]]),
    # axes permuted and flipped, anisotropic: i -> anterior, j -> inferior, k -> left
    "AIL": np.array([[0, 0, -1.2, 17.4], [1.0, 0, 0, -19.5], [0, -1.1, 0, 19.25], [0, 0, 0, 1]]),
}
WORLD_LESION = {"x": (-15.0, -5.0), "y": (4.0, 14.0), "z": (3.0, 12.0)}  # left (x < 0), anterior, superior
LESION_LETTERS = {"R": "L", "L": "L", "A": "A", "P": "A", "S": "S", "I": "S"}  # axis letter -> the lesion's end


def _world(affine: np.ndarray) -> np.ndarray:
    """RAS mm coordinates ``(3, I, J, K)`` of every on-disk voxel."""
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")).reshape(3, -1)
    return (affine[:3, :3] @ ijk + affine[:3, 3:]).reshape(3, *SHAPE)


def _write_case(root, affine):
    x, y, z = _world(affine)
    assert abs(x.min() + x.max()) < 3 and abs(y.min() + y.max()) < 3 and abs(z.min() + z.max()) < 3  # centred
    brain = (x / 19) ** 2 + (y / 17) ** 2 + (z / 14) ** 2 < 1
    lesion = np.ones(SHAPE, bool)
    for coords, (low, high) in zip((x, y, z), WORLD_LESION.values(), strict=True):
        lesion &= (coords > low) & (coords < high)
    seg = np.where(lesion, 2, 0).astype(np.uint8)  # BraTS 2017: 2 = edema
    seg[lesion & (np.abs(x + 10) < 2.5)] = 4  # enhancing core inside it
    folder = root / CASE
    folder.mkdir(parents=True)
    image = (brain * 100 + lesion * 50).astype(np.int16)
    for name, data in [(m, image) for m in ("t1", "t1ce", "t2", "flair")] + [("seg", seg)]:
        nib.save(nib.Nifti1Image(data, affine), str(folder / f"{CASE}_{name}.nii.gz"))
    assert nib.aff2axcodes(affine) in (("L", "P", "S"), ("A", "I", "L"))
    return folder


def _lesion_centre(panel: np.ndarray) -> tuple[float, float]:
    """Row and column fractions (0 top/left .. 1) of the coloured (label) pixels of an RGB panel."""
    coloured = np.abs(panel - panel.mean(axis=-1, keepdims=True)).max(axis=-1) > 0.05
    rows, cols = np.nonzero(coloured)
    assert rows.size > 0, "the lesion is not in this panel"
    return (rows.mean() + 0.5) / panel.shape[0], (cols.mean() + 0.5) / panel.shape[1]


def _marks(ax) -> dict[str, str]:
    return {t.get_gid().removeprefix("orientation-"): t.get_text() for t in ax.texts
            if (t.get_gid() or "").startswith("orientation-")}


def _check_panel(ax) -> None:
    marks = _marks(ax)
    assert set(marks) == {"left", "right", "top", "bottom"}, marks
    row, col = _lesion_centre(np.asarray(ax.images[0].get_array()))
    assert abs(col - 0.5) > 0.1 and abs(row - 0.5) > 0.1  # clearly off-centre both ways
    lesion_end = LESION_LETTERS[marks["left"]]
    assert marks["left" if col < 0.5 else "right"] == lesion_end, (marks, col)
    assert marks["top" if row < 0.5 else "bottom"] == LESION_LETTERS[marks["top"]], (marks, row)
    assert {marks["left"], marks["right"]} in ({"R", "L"}, {"A", "P"})
    assert {marks["top"], marks["bottom"]} in ({"A", "P"}, {"S", "I"})


@pytest.fixture()
def capture(monkeypatch):
    """Figures `show` saves, in order (still written to disk)."""
    saved = []
    original = figures.save_figure

    def save(fig, path, dpi=100):
        saved.append(fig)
        return original(fig, path, dpi)

    monkeypatch.setattr(figures, "save_figure", save)
    return saved


@pytest.mark.parametrize("affine", list(AFFINES))
@pytest.mark.parametrize("convention", ["radiological", "neurological"])
def test_orientation_letters_follow_the_anatomy(tmp_path, capture, affine, convention):
    folder = _write_case(tmp_path / "data", AFFINES[affine])
    png = tmp_path / "case.png"
    args = ["show", str(folder), "--pred", str(folder / f"{CASE}_seg.nii.gz"), "-o", str(png)]
    result = runner.invoke(app, [*args, "--convention", convention])
    assert result.exit_code == 0, result.output
    (fig,) = capture
    assert len(fig.axes) == 12
    for ax in fig.axes:
        _check_panel(ax)
    by_plane = {ax.get_ylabel().split()[0]: ax for ax in fig.axes if ax.get_ylabel()}
    expected_left = "R" if convention == "radiological" else "L"  # what the convention promises
    assert _marks(by_plane["axial"])["left"] == expected_left and _marks(by_plane["coronal"])["left"] == expected_left
    assert _marks(by_plane["sagittal"])["left"] == "A" and _marks(by_plane["axial"])["top"] == "A"
    statement = " ".join(t.get_text() for t in fig.texts)
    assert f"{convention} convention" in statement and "image's left" in statement
    assert Image.open(png).size[0] > 800


def test_lesion_side_flips_between_conventions(tmp_path, capture):
    folder = _write_case(tmp_path / "data", AFFINES["LPS"])
    sides = {}
    for convention in ("radiological", "neurological"):
        result = runner.invoke(app, ["show", str(folder), "-o", str(tmp_path / f"{convention}.png"),
                                     "--convention", convention])
        assert result.exit_code == 0, result.output
        axial = capture[-1].axes[0]
        sides[convention] = _lesion_centre(np.asarray(axial.images[0].get_array()))[1]
    assert sides["radiological"] > 0.5 > sides["neurological"]  # the patient's left: image right, then left


def _gif_frames(path) -> list[np.ndarray]:
    gif = Image.open(path)
    frames = []
    for index in range(gif.n_frames):
        gif.seek(index)
        frames.append(np.asarray(gif.convert("RGB")).astype(int))
    return frames


@pytest.mark.parametrize("convention", ["radiological", "neurological"])
def test_gif_frames_have_titles_legend_slice_numbers(tmp_path, convention):
    folder = _write_case(tmp_path / "data", AFFINES["AIL"])
    result = runner.invoke(app, ["show", str(folder), "--pred", str(folder / f"{CASE}_seg.nii.gz"),
                                 "-o", str(tmp_path / "case.png"), "--gif", "--convention", convention])
    assert result.exit_code == 0, result.output
    frames = _gif_frames(tmp_path / "case.gif")
    height, width = frames[0].shape[:2]
    panel_w = (width - figures.GIF_GAP_PX) // 2  # two panels
    panel_h = panel_w * 40 // 30  # axial panel of the AIL case: rows y (40 voxels), columns x (30)
    assert len(frames) >= 8 and panel_w >= figures.MIN_PANEL_PX and height - panel_h >= 60
    band = (height - panel_h) // 2  # header (title, panel titles) and footer (slice, legend) are equally high
    assert frames[0][:band].max() > 200 and frames[0][-band:].max() > 200  # text above and below
    footer = [f[-band:] for f in frames]
    for label in (figures.NCR, figures.ED, figures.ET):  # the legend's swatches
        rgb = np.array([int(255 * c) for c in figures.LABEL_COLOURS[label]])
        assert (np.abs(footer[0] - rgb).max(axis=-1) < 12).sum() > 20, label
    assert not np.array_equal(footer[0], footer[1])  # the slice number changes
    middle = frames[len(frames) // 2][band:band + panel_h, :panel_w]
    rows, cols = np.nonzero(np.maximum(middle[..., 0], middle[..., 1]) - middle[..., 2] > 40)  # label colours
    assert rows.size > 0 and rows.mean() < 0.5 * panel_h  # anterior lesion: upper half
    assert (cols.mean() > 0.5 * panel_w) == (convention == "radiological")  # the patient's left


def test_bad_convention_is_one_line(tmp_path):
    folder = _write_case(tmp_path / "data", AFFINES["LPS"])
    result = runner.invoke(app, ["show", str(folder), "-o", str(tmp_path / "x.png"), "--convention", "sideways"])
    assert result.exit_code == 1
    assert "--convention 'sideways'" in result.output and "radiological, neurological" in result.output
    assert not (tmp_path / "x.png").exists()


def test_help_names_the_convention():
    text = " ".join(runner.invoke(app, ["show", "--help"], env={"COLUMNS": "200"}).output.replace("│", " ").split())
    assert "radiological" in text and "neurological" in text and "[radiological]" in text
    assert "patient's right on the image's left" in text

"""`--label-scheme` is the input's label scheme in every command; `predict --output-label-scheme` the output's."""

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.layouts import find_cases
from glioseg.data.nifti import read_case
from glioseg.inference.predictor import Prediction, Predictor
from glioseg.labels import ED, ET, NCR, SCHEMES, get_scheme

runner = CliRunner()
VALID = str(sorted(SCHEMES))  # the error lists the valid names as a Python list


@pytest.fixture()
def fixed_prediction(monkeypatch):
    """Predictions with every tumour label in slabs, so that the written values name the scheme."""

    def predict_case(self, case, return_probabilities=False):
        labels = np.zeros(case.geometry.canonical_shape, dtype=np.uint8)
        labels[2:6], labels[6:10], labels[10:14] = NCR, ED, ET
        return Prediction(case.case_id, labels)

    monkeypatch.setattr(Predictor, "predict_case", predict_case)


def _written_scheme_matches(out, files, scheme: str) -> bool:
    written = np.asarray(nib.load(out / f"{files.case_id}.nii.gz").dataobj)
    case = read_case(files, read_label=False)
    canonical = get_scheme(scheme).to_canonical(case.geometry.to_canonical(written))
    values = {get_scheme(scheme).to_file[k] for k in (0, NCR, ED, ET)}
    return set(np.unique(written).tolist()) == values and set(np.unique(canonical).tolist()) == {0, NCR, ED, ET}


@pytest.mark.parametrize("layout,flags,written", [
    ("brats2023", [], "brats2023"),  # default: the input dataset's scheme
    ("brats2023", ["--output-label-scheme", "brats2017"], "brats2017"),
    ("brats2023", ["--label-scheme", "brats2023", "--output-label-scheme", "msd"], "msd"),
    ("brats2017", ["--label-scheme", "brats2023"], "brats2023"),  # the input's scheme, given, is the default
    ("brats2017", ["--output-label-scheme", "brats2023"], "brats2023"),
])
def test_predict_output_scheme_flags(fixed_prediction, make_synthetic_dataset, tmp_path, layout, flags, written):
    dataset = make_synthetic_dataset(layout=layout, n_cases=1, shape=(32, 32, 32))
    result = runner.invoke(app, ["predict", "-i", str(dataset), "-o", str(tmp_path), "--device", "cpu", *flags])
    assert result.exit_code == 0, result.output
    assert _written_scheme_matches(tmp_path, find_cases(dataset)[0], written)


def test_predict_files_without_a_layout_scheme(fixed_prediction, synthetic_dataset, tmp_path):
    files = find_cases(synthetic_dataset)[0]
    args = ["predict", *[f"--{m}={files.images[m].path}" for m in ("t1", "t1ce", "t2", "flair")], "--device", "cpu"]
    assert runner.invoke(app, [*args, "-o", str(tmp_path / "a")]).exit_code == 0
    assert _written_scheme_matches(tmp_path / "a", files, "brats2017")
    assert runner.invoke(app, [*args, "-o", str(tmp_path / "b"), "--label-scheme", "msd"]).exit_code == 0
    assert _written_scheme_matches(tmp_path / "b", files, "msd")


@pytest.mark.parametrize("flag", ["--label-scheme", "--output-label-scheme"])
def test_predict_unknown_scheme_is_one_line_listing_the_valid_names(synthetic_dataset, tmp_path, flag):
    result = runner.invoke(app, ["predict", "-i", str(synthetic_dataset), "-o", str(tmp_path / "o"),
                                 "--device", "cpu", flag, "brats1999"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}: unknown label scheme 'brats1999'")
    assert VALID in lines[0]
    assert not (tmp_path / "o").exists()


def test_predict_help_names_input_and_output_schemes():
    result = runner.invoke(app, ["predict", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--label-scheme <str> Label scheme of the input dataset" in text
    assert "--output-label-scheme <str> Label scheme of the written label maps" in text


@pytest.mark.parametrize("command", ["check", "info", "preprocess", "evaluate", "show"])
def test_every_command_label_scheme_is_the_input_s(command, synthetic_dataset, tmp_path):
    case = synthetic_dataset / find_cases(synthetic_dataset)[0].case_id
    args = {"check": [str(synthetic_dataset)], "info": [str(case)],
            "preprocess": [str(synthetic_dataset), str(tmp_path / "pre")],
            "evaluate": ["--pred", str(case), "--gt", str(synthetic_dataset)],
            "show": [str(case), "-o", str(tmp_path / "x.png")]}[command]
    help_text = " ".join(runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"}).output.split())
    assert "--label-scheme <str> Label scheme of the input" in help_text
    result = runner.invoke(app, [command, *args, "--label-scheme", "brats1999"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --label-scheme: unknown label scheme 'brats1999'")
    assert VALID in lines[0]
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("command", ["evaluate", "show"])
def test_pred_label_scheme_unknown_name(command, synthetic_dataset, tmp_path):
    case = synthetic_dataset / find_cases(synthetic_dataset)[0].case_id
    args = ["--pred", str(case), "--gt", str(synthetic_dataset)] if command == "evaluate" else \
        [str(case), "-o", str(tmp_path / "x.png")]
    result = runner.invoke(app, [command, *args, "--pred-label-scheme", "nope"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --pred-label-scheme: unknown label scheme 'nope'")

"""`glioseg predict` options with the shipped model (its flags for labels schemes: test_label_schemes.py)."""

import nibabel as nib
import numpy as np
import torch
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.layouts import find_cases

runner = CliRunner()


def test_single_threaded_tiles_flag_same_labels_threads_untouched(make_synthetic_dataset, tmp_path):
    dataset = make_synthetic_dataset(layout="brats2017", n_cases=1, shape=(64, 64, 64))  # >= 32 voxels at 2 mm
    case_id = find_cases(dataset)[0].case_id
    before = torch.get_num_threads()
    written = []
    for name, flags in (("default", []), ("serial", ["--single-threaded-tiles"])):
        result = runner.invoke(app, ["predict", "-i", str(dataset), "-o", str(tmp_path / name), "--device", "cpu",
                                     "--precision", "fp32", *flags])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == before
        written.append(np.asarray(nib.load(tmp_path / name / f"{case_id}.nii.gz").dataobj))
    np.testing.assert_array_equal(written[0], written[1])

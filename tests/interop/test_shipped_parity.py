"""Parity of the shipped model on a real BraTS 2018 case: ONNX Runtime and OpenVINO against torch fp32.

Stated tolerances: logits of a whole-brain tile within 0.01 of torch fp32 (they span about -26..14;
torch's own bf16 autocast differs by ~0.16), label maps identical on >= 99.9 % of voxels, and Dice
against the ground truth within 0.002 per region.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glioseg.artifacts.bundles import default_model_dir
from glioseg.artifacts.folds import run_folders
from glioseg.artifacts.rundir import load_run
from glioseg.data.layouts import find_cases
from glioseg.data.nifti import read_case
from glioseg.interop.backends import cached_export, load_backend_predictor
from glioseg.interop.runners import make_runner, read_export, stage_graphs
from glioseg.preprocessing.normalize import preprocess_case
from glioseg.utils import region_dice

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
CASE = "Brats18_2013_2_1"
LOGIT_ATOL, LABEL_AGREEMENT, DICE_ATOL = 0.01, 0.999, 0.002


@pytest.fixture(scope="module")
def case(shared_brats18):
    files = [c for c in find_cases(shared_brats18) if c.case_id == CASE]
    if not files:
        pytest.skip(f"{CASE} not in {shared_brats18}")
    return read_case(files[0])


@pytest.fixture(scope="module")
def torch_fp32(case):
    return load_backend_predictor(default_model_dir(), "torch", precision="fp32", device="cpu").predict_case(case)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_shipped_model_backend_parity(backend, case, torch_fp32, tmp_path_factory):
    pytest.importorskip(backend)
    cache = tmp_path_factory.mktemp("cache")
    got = load_backend_predictor(default_model_dir(), backend, cache_dir=cache).predict_case(case)
    agreement = float((got.labels == torch_fp32.labels).mean())
    dice_torch, dice_backend = region_dice(torch_fp32.labels, case.label), region_dice(got.labels, case.label)
    print(f"{backend}: labels agree on {agreement:.6f}; Dice WT/TC/ET torch {np.round(dice_torch, 4)} "
          f"{backend} {np.round(dice_backend, 4)}")
    assert agreement >= LABEL_AGREEMENT
    np.testing.assert_allclose(dice_backend, dice_torch, rtol=0, atol=DICE_ATOL)
    assert dice_torch[0] > 0.7  # the comparison is of a working model

    pc = preprocess_case(case, 2.0)
    size = [s // 16 * 16 for s in pc.image.shape[1:]]  # the brain box, cut to multiples of 16
    x = np.ascontiguousarray(pc.image[None, :, :size[0], :size[1], :size[2]])
    with torch.inference_mode():
        member = run_folders(default_model_dir())[0]  # the shipped run, or fold_0: the first graph of an ensemble
        ref = load_run(member).stages["low"].model.eval()(torch.from_numpy(x)).numpy()
    entry = cached_export(default_model_dir(), backend, cache)
    logits = make_runner(backend, stage_graphs(read_export(entry), entry, "low")[0], torch.get_num_threads())(x)
    assert np.abs(logits - ref).max() <= LOGIT_ATOL, np.abs(logits - ref).max()

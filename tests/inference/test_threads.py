"""torch's process-wide thread count: untouched by prediction by default, restored when single-threaded
tiles are asked for (also when a tile fails)."""

import pytest
import torch
from torch import nn

from glioseg.data.layouts import find_cases
from glioseg.data.nifti import read_case
from glioseg.inference.ensemble import TilePredictor, predict_volume
from glioseg.inference.predictor import Predictor, Stage
from glioseg.inference.sliding_window import single_threaded, sliding_window_inference


@pytest.fixture()
def thread_calls(monkeypatch):
    """Two torch threads for the test (restored after it); records every torch.set_num_threads call."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    calls: list[int] = []
    real = torch.set_num_threads

    def record(n: int) -> None:
        calls.append(n)
        real(n)

    monkeypatch.setattr(torch, "set_num_threads", record)
    yield calls
    real(before)


class ThreadProbe(nn.Module):
    """Pointwise network that records the thread count it runs with."""

    divisor = 1

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(4, 3, 1)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        return self.conv(x)


def _predictor(model: nn.Module, **options) -> Predictor:
    stage = Stage("high", [model], 1.0, (16, 16, 16), "regions", 1)  # tiles smaller than the case
    return Predictor({"high": stage}, device="cpu", precision="fp32", tta=2, **options)


def test_predicting_leaves_the_thread_count_alone_by_default(thread_calls, synthetic_dataset):
    case = read_case(find_cases(synthetic_dataset)[0])
    model = ThreadProbe().eval()
    _predictor(model).predict_case(case)
    assert thread_calls == [] and torch.get_num_threads() == 2
    assert len(model.seen) > 2 and set(model.seen) == {2}  # tiled, mirrored: many passes


def test_single_threaded_tiles_is_opt_in_and_restored(thread_calls, synthetic_dataset):
    case = read_case(find_cases(synthetic_dataset)[0])
    model = ThreadProbe().eval()
    default = _predictor(model).predict_case(case, True)
    serial = _predictor(model, single_threaded_tiles=True).predict_case(case, True)
    assert thread_calls and set(thread_calls) == {1, 2} and torch.get_num_threads() == 2
    assert set(model.seen) == {2}  # the networks keep the caller's threads
    torch.testing.assert_close(serial.probabilities, default.probabilities, rtol=0, atol=1e-6)


def test_thread_count_restored_when_a_tile_fails(thread_calls):
    def wrong_size(tiles: torch.Tensor) -> torch.Tensor:  # stitching this output raises inside the block
        return torch.zeros(tiles.shape[0], 3, 8, 8, 8)

    with pytest.raises(RuntimeError):
        sliding_window_inference(torch.zeros(4, 40, 40, 40), wrong_size, (16, 16, 16), single_threaded_tiles=True)
    assert thread_calls == [1, 2, 1, 2] and torch.get_num_threads() == 2  # copying the tile, then stitching it
    with pytest.raises(KeyboardInterrupt), single_threaded():
        assert torch.get_num_threads() == 1
        raise KeyboardInterrupt
    assert torch.get_num_threads() == 2


def test_predict_volume_takes_the_option_from_the_tile_predictor(thread_calls):
    image = torch.randn(4, 40, 24, 24)
    for serial in (False, True):
        predictor = TilePredictor([ThreadProbe().eval()], precision="fp32", single_threaded_tiles=serial)
        probs, _ = predict_volume(image, predictor, (16, 16, 16), divisor=1)
        assert probs.shape == (3, 40, 24, 24)
        assert bool(thread_calls) == serial
    assert torch.get_num_threads() == 2

"""Post-training int8 quantisation of an OpenVINO export with NNCF (optional: ``pip install nncf``).

The calibration inputs are the very tiles the networks see: the export's own
:class:`glioseg.inference.predictor.Predictor` predicts the calibration cases on OpenVINO and
records every tile each stage's networks receive (the cascade's high stage sees tumour boxes only).
Each fold's graph is then quantised on its stage's tiles (``nncf.quantize``: int8 weights and
activations around the convolutions, the rest as it was) and written as a new export folder with
its own ``model.json`` (``quantization``: method and calibration cases) and sha256 manifest.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.data.nifti import Case
from glioseg.interop.backends import BackendNetwork, load_backend_predictor
from glioseg.interop.export import check_export_target, publish_folder, write_export_manifest
from glioseg.interop.runners import SPEC_FILE, ExportError, Runner, import_backend, read_export, stage_graphs

MAX_TILES = 300
"""NNCF's default calibration subset size."""


def collect_tiles(export_dir: Path, cases: Sequence[Case]) -> dict[str, list[np.ndarray]]:
    """Every float32 tile ``(B, 4, x, y, z)`` each stage's networks receive while predicting ``cases``.

    Raises:
        ExportError: a stage received no tile (e.g. no calibration case had a tumour for the high stage).
    """
    predictor = load_backend_predictor(export_dir, "openvino")
    tiles: dict[str, list[np.ndarray]] = {name: [] for name in predictor.stages}
    for name, stage in predictor.stages.items():
        net = stage.models[0]
        assert isinstance(net, BackendNetwork)  # an export folder gives backend networks only
        net.runner = _recording(net.runner, tiles[name])
    for case in cases:
        predictor.predict_case(case)
    empty = [name for name, found in tiles.items() if not found]
    if empty:
        raise ExportError(f"calibration cases {[c.case_id for c in cases]} gave no tile to stage(s) {empty}; "
                          "give cases with tumours (the high stage runs on tumour boxes)")
    return {name: found[:MAX_TILES] for name, found in tiles.items()}


def _recording(run: Runner, into: list[np.ndarray]) -> Runner:
    def record(x: np.ndarray) -> np.ndarray:
        into.append(np.array(x, dtype=np.float32, copy=True))
        return run(x)

    return record


def quantize_export(export_dir: Path | str, out: Path | str, cases: Sequence[Case],
                    overwrite: bool = False) -> Path:
    """Write an int8 copy of an OpenVINO export folder, calibrated on ``cases``.

    Args:
        export_dir: written by ``glioseg export-model --format openvino``.
        out: the int8 export folder to create (atomically).
        cases: calibration cases (from :func:`glioseg.data.nifti.read_case`), e.g. a few training cases.
        overwrite: replace an existing ``out``.

    Returns:
        ``out``; predict with ``glioseg predict -m OUT --backend openvino``.

    Raises:
        ExportError: not an OpenVINO export, ``out`` exists, nncf not installed, no calibration tile.
    """
    export_dir, out = Path(export_dir), Path(out)
    check_export_target(out, "openvino", overwrite)
    spec = read_export(export_dir)
    if spec.get("graph_format") != "openvino":
        raise ExportError(f"{export_dir}: {spec.get('graph_format')} graphs; int8 quantisation needs an "
                          "export made with --format openvino")
    if not cases:
        raise ExportError("no calibration case; give a few cases with tumours")
    nncf, ov = import_backend("nncf"), import_backend("openvino")
    tiles = collect_tiles(export_dir, cases)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        core = ov.Core()
        for name in spec["stages"]:
            (tmp / name).mkdir()
            for graph in stage_graphs(spec, export_dir, name):
                model = nncf.quantize(core.read_model(str(graph)), nncf.Dataset(tiles[name]),
                                      subset_size=len(tiles[name]), fast_bias_correction=True)
                ov.save_model(model, str(tmp / name / graph.name), compress_to_fp16=False)
        (tmp / SPEC_FILE).write_text(json.dumps(_int8_spec(spec, cases, tiles), indent=2) + "\n")
        write_export_manifest(tmp)
        return publish_folder(tmp, out, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _int8_spec(spec: dict[str, Any], cases: Sequence[Case], tiles: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """The source's ``model.json`` plus what the quantisation did."""
    nncf = import_backend("nncf")
    return {**spec, "quantization": {"method": "NNCF post-training int8 (nncf.quantize)",
                                     "nncf_version": str(getattr(nncf, "__version__", "?")),
                                     "calibration_cases": [c.case_id for c in cases],
                                     "calibration_tiles": {n: len(t) for n, t in tiles.items()}}}

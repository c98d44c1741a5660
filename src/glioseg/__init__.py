"""glioseg: brain tumour segmentation in multi-modal MRI with 3D U-Nets.

The main API is importable from the package (``glioseg.read_case``, ``glioseg.Predictor``, ...).
Names load their module on first use (PEP 562), so ``import glioseg`` imports neither torch nor
nibabel/scipy and ``glioseg --help`` stays instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> defining module
_EXPORTS: dict[str, str] = {
    # data in and out
    "MODALITIES": "glioseg.io", "Case": "glioseg.io", "CaseError": "glioseg.io", "CaseFiles": "glioseg.io",
    "Geometry": "glioseg.io", "read_case": "glioseg.io", "write_seg": "glioseg.io",
    "DatasetError": "glioseg.discovery", "case_from_files": "glioseg.discovery", "find_cases": "glioseg.discovery",
    "REGIONS": "glioseg.labels", "LabelScheme": "glioseg.labels", "Region": "glioseg.labels",
    "detect_scheme": "glioseg.labels", "get_scheme": "glioseg.labels",
    "make_synthetic_case": "glioseg.synth", "write_synthetic_dataset": "glioseg.synth",
    # preprocessing and training
    "PreprocessedCase": "glioseg.preprocess", "preprocess_case": "glioseg.preprocess",
    "load_preprocessed": "glioseg.preprocess",
    "make_splits": "glioseg.splits",
    "StageConfig": "glioseg.config", "TrainConfig": "glioseg.config", "load_config": "glioseg.config",
    "resolve_config": "glioseg.config",
    "build_model": "glioseg.model",
    "fit": "glioseg.train", "load_run": "glioseg.train",
    # prediction and evaluation
    "Prediction": "glioseg.predictor", "Predictor": "glioseg.predictor",
    "predict_dataset": "glioseg.batch",
    "PostprocessConfig": "glioseg.postprocess", "postprocess_probabilities": "glioseg.postprocess",
    "compute_brats_metrics": "glioseg.metrics", "dice": "glioseg.metrics", "hd95": "glioseg.metrics",
    "evaluate_folder": "glioseg.evaluation",
}

__all__ = [  # a literal list for linters; test_package checks it against _EXPORTS
    "MODALITIES",
    "REGIONS",
    "Case",
    "CaseError",
    "CaseFiles",
    "DatasetError",
    "Geometry",
    "LabelScheme",
    "PostprocessConfig",
    "Prediction",
    "Predictor",
    "PreprocessedCase",
    "Region",
    "StageConfig",
    "TrainConfig",
    "__version__",
    "build_model",
    "case_from_files",
    "compute_brats_metrics",
    "detect_scheme",
    "dice",
    "evaluate_folder",
    "find_cases",
    "fit",
    "get_scheme",
    "hd95",
    "load_config",
    "load_preprocessed",
    "load_run",
    "make_splits",
    "make_synthetic_case",
    "postprocess_probabilities",
    "predict_dataset",
    "preprocess_case",
    "read_case",
    "resolve_config",
    "write_seg",
    "write_synthetic_dataset"
]

if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from glioseg.batch import predict_dataset
    from glioseg.config import StageConfig, TrainConfig, load_config, resolve_config
    from glioseg.discovery import DatasetError, case_from_files, find_cases
    from glioseg.evaluation import evaluate_folder
    from glioseg.io import MODALITIES, Case, CaseError, CaseFiles, Geometry, read_case, write_seg
    from glioseg.labels import REGIONS, LabelScheme, Region, detect_scheme, get_scheme
    from glioseg.metrics import compute_brats_metrics, dice, hd95
    from glioseg.model import build_model
    from glioseg.postprocess import PostprocessConfig, postprocess_probabilities
    from glioseg.predictor import Prediction, Predictor
    from glioseg.preprocess import PreprocessedCase, load_preprocessed, preprocess_case
    from glioseg.splits import make_splits
    from glioseg.synth import make_synthetic_case, write_synthetic_dataset
    from glioseg.train import fit, load_run


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and cache the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'glioseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

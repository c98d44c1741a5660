"""glioseg: brain tumour segmentation in multi-modal MRI with 3D U-Nets.

The main API is importable from the package (``glioseg.read_case``, ``glioseg.Predictor``, ...).
Names load their module on first use (PEP 562), so ``import glioseg`` imports neither torch nor
nibabel/scipy and ``glioseg --help`` stays instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# defining module -> public names (in pipeline order)
_MODULE_EXPORTS: dict[str, tuple[str, ...]] = {
    "glioseg.labels": ("REGIONS", "LabelScheme", "Region", "get_scheme"),
    "glioseg.scheme_rules": ("detect_scheme",),
    "glioseg.config": ("StageConfig", "TrainConfig", "load_config", "resolve_config"),
    "glioseg.data.nifti": ("MODALITIES", "Case", "CaseError", "CaseFiles", "Geometry", "read_case", "write_seg"),
    "glioseg.data.naming": ("DatasetError",),
    "glioseg.data.layouts": ("case_from_files", "find_cases"),
    "glioseg.data.synthetic": ("make_synthetic_case", "write_synthetic_dataset"),
    "glioseg.preprocessing.normalize": ("PreprocessedCase", "preprocess_case"),
    "glioseg.preprocessing.cache": ("load_preprocessed",),
    "glioseg.preprocessing.splits": ("make_splits",),
    "glioseg.networks": ("build_model",),
    "glioseg.artifacts.rundir": ("load_run",),
    "glioseg.training.trainer": ("fit",),
    "glioseg.inference.predictor": ("Prediction", "Predictor"),
    "glioseg.inference.batch": ("predict_dataset",),
    "glioseg.inference.postprocess": ("PostprocessConfig", "postprocess_probabilities"),
    "glioseg.utils": ("dice",),
    "glioseg.evaluation.metrics": ("hd95",),
    "glioseg.evaluation.scores": ("compute_brats_metrics",),
    "glioseg.evaluation.evaluate": ("evaluate_folder",),
}
# public name -> defining module
_EXPORTS: dict[str, str] = {name: module for module, names in _MODULE_EXPORTS.items() for name in names}

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
    from glioseg.artifacts.rundir import load_run
    from glioseg.config import StageConfig, TrainConfig, load_config, resolve_config
    from glioseg.data.layouts import case_from_files, find_cases
    from glioseg.data.naming import DatasetError
    from glioseg.data.nifti import MODALITIES, Case, CaseError, CaseFiles, Geometry, read_case, write_seg
    from glioseg.data.synthetic import make_synthetic_case, write_synthetic_dataset
    from glioseg.evaluation.evaluate import evaluate_folder
    from glioseg.evaluation.metrics import hd95
    from glioseg.evaluation.scores import compute_brats_metrics
    from glioseg.inference.batch import predict_dataset
    from glioseg.inference.postprocess import PostprocessConfig, postprocess_probabilities
    from glioseg.inference.predictor import Prediction, Predictor
    from glioseg.labels import REGIONS, LabelScheme, Region, get_scheme
    from glioseg.networks import build_model
    from glioseg.preprocessing.cache import load_preprocessed
    from glioseg.preprocessing.normalize import PreprocessedCase, preprocess_case
    from glioseg.preprocessing.splits import make_splits
    from glioseg.scheme_rules import detect_scheme
    from glioseg.training.trainer import fit
    from glioseg.utils import dice


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

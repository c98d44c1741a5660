"""glioseg: brain tumour segmentation in multi-modal MRI with 3D U-Nets."""

from glioseg.discovery import case_from_files, find_cases
from glioseg.io import MODALITIES, Case, CaseError, CaseFiles, Geometry, read_case, write_seg
from glioseg.labels import REGIONS, LabelScheme, Region, detect_scheme, get_scheme

__version__ = "0.1.0"

__all__ = [
    "MODALITIES", "REGIONS", "Case", "CaseError", "CaseFiles", "Geometry", "LabelScheme", "Region",
    "__version__", "case_from_files", "detect_scheme", "find_cases", "get_scheme", "read_case",
    "write_seg",
]

"""The feature table: every radiomics feature's name, family, unit and meaning, in column order.

:data:`FEATURES` is the one source: :mod:`glioseg.radiomics.features` computes exactly these
columns in this order, and :func:`feature_table_markdown` renders the table for the docs (one
row per name pattern). Names are ``<family>_<region>[_<modality>]_<stat>``.

Regions are those of :mod:`glioseg.labels`: NCR (necrotic / non-enhancing core), ED (edema), ET
(enhancing tumour), TC = NCR + ET, WT = NCR + ED + ET. Bump :data:`FEATURE_VERSION` whenever a
feature changes meaning; fitted models record it and refuse a table of another version.
"""

from __future__ import annotations

from dataclasses import dataclass

from glioseg.data.nifti import MODALITIES
from glioseg.radiomics.intensity import INTENSITY_STATS
from glioseg.radiomics.location import LOCATION_STATS
from glioseg.radiomics.shape import SHAPE_STATS
from glioseg.radiomics.texture import GLCM_LEVELS, GLCM_STATS

FEATURE_VERSION = 1
VOLUME_REGIONS: tuple[str, ...] = ("NCR", "ED", "ET", "TC", "WT")
RATIOS: tuple[tuple[str, str], ...] = (("NCR", "TC"), ("ET", "TC"), ("NCR", "WT"), ("ED", "WT"), ("ET", "WT"),
                                       ("TC", "WT"), ("WT", "brain"))
SHAPE_REGIONS: tuple[str, ...] = ("WT", "TC", "ET")
INTENSITY_REGIONS: tuple[str, ...] = ("NCR", "ED", "ET", "WT")
TEXTURE_REGIONS: tuple[str, ...] = ("WT", "TC")

_SHAPE_DOC = {
    "surface_mm2": ("mm^2", "marching-cubes mesh area"),
    "sphericity": ("1", "pi^(1/3) (6V)^(2/3) / A of the mesh; 1 = sphere"),
    "elongation": ("1", "sqrt(l2/l1) of the voxel-coordinate covariance; 1 = round"),
    "flatness": ("1", "sqrt(l3/l1) of the voxel-coordinate covariance"),
    "major_axis_mm": ("mm", "4 sqrt(l1): major axis of the equivalent ellipsoid"),
    "extent": ("1", "volume / axis-aligned bounding-box volume"),
    "components": ("count", "26-connected components"),
    "largest_component_fraction": ("1", "share of the volume in the largest component"),
}
_LOCATION_DOC = {
    "centroid_rel_x": ("1", "WT centroid in the brain's bounding box, 0 = left edge, 1 = right edge (world x)"),
    "centroid_rel_y": ("1", "same, 0 = posterior, 1 = anterior (world y)"),
    "centroid_rel_z": ("1", "same, 0 = inferior, 1 = superior (world z)"),
    "midline_signed_mm": ("mm", "WT centroid's world-x offset from the brain's midline, + = right"),
    "midline_distance_mm": ("mm", "absolute value of midline_signed_mm"),
    "midline_min_distance_mm": ("mm", "distance of the WT voxel nearest the midline; 0 = touches or crosses"),
    "right_fraction": ("1", "share of the WT volume right of the midline"),
    "hemisphere_right": ("0/1", "1 when the WT centroid is right of the midline (patient's right)"),
}
_INTENSITY_DOC = {
    "mean": "mean", "std": "standard deviation (population)", "p10": "10th percentile", "median": "median",
    "p90": "90th percentile", "skewness": "skewness (biased moment)", "kurtosis": "excess kurtosis (biased moment)",
}
_GLCM_DOC = {
    "contrast": "sum P (i-j)^2", "homogeneity": "inverse difference sum P/(1+|i-j|)",
    "energy": "angular second moment sum P^2", "entropy": "joint entropy -sum P log2 P",
    "correlation": "GLCM correlation (1 for a flat region)",
}


@dataclass(frozen=True)
class Feature:
    """One column of the feature table.

    Attributes:
        name: column name.
        family: volume, ratio, shape, location, intensity or glcm.
        unit: unit (``1`` for dimensionless).
        description: one line.
        pattern: the name with region/modality as placeholders (one docs row per pattern).
    """

    name: str
    family: str
    unit: str
    description: str
    pattern: str


def _volume_features() -> list[Feature]:
    vols = [Feature(f"vol_{r}_ml", "volume", "ml", "region volume (voxel count x voxel volume)", "vol_{region}_ml")
            for r in VOLUME_REGIONS]
    vols.append(Feature("vol_brain_ml", "volume", "ml", "brain volume (voxels non-zero in any modality)",
                        "vol_brain_ml"))
    ratios = [Feature(f"ratio_{a}_{b}", "ratio", "1", f"vol_{a} / vol_{b}, 0 when vol_{b} is 0", f"ratio_{a}_{b}")
              for a, b in RATIOS]
    return vols + ratios


def _shape_features() -> list[Feature]:
    return [Feature(f"shape_{r}_{s}", "shape", *_SHAPE_DOC[s], f"shape_{{region}}_{s}")
            for r in SHAPE_REGIONS for s in SHAPE_STATS]


def _location_features() -> list[Feature]:
    return [Feature(f"loc_WT_{s}", "location", *_LOCATION_DOC[s], f"loc_WT_{s}") for s in LOCATION_STATS]


def _intensity_features() -> list[Feature]:
    return [Feature(f"int_{r}_{m}_{s}", "intensity", "z", f"{_INTENSITY_DOC[s]} of the z-scored image in the region",
                    f"int_{{region}}_{{modality}}_{s}")
            for r in INTENSITY_REGIONS for m in MODALITIES for s in INTENSITY_STATS]


def _glcm_features() -> list[Feature]:
    return [Feature(f"glcm_{r}_{m}_{s}", "glcm", "1", f"{_GLCM_DOC[s]}, {GLCM_LEVELS} levels, 13 directions averaged",
                    f"glcm_{{region}}_{{modality}}_{s}")
            for r in TEXTURE_REGIONS for m in MODALITIES for s in GLCM_STATS]


FEATURES: tuple[Feature, ...] = tuple(_volume_features() + _shape_features() + _location_features()
                                      + _intensity_features() + _glcm_features())
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)


def feature_table_markdown() -> str:
    """The feature table as Markdown, one row per name pattern with the regions/modalities it covers."""
    rows: dict[str, tuple[Feature, int]] = {}
    for f in FEATURES:
        first, count = rows.get(f.pattern, (f, 0))
        rows[f.pattern] = (first, count + 1)
    lines = ["| name | family | unit | columns | meaning |", "|---|---|---|---|---|"]
    for pattern, (f, count) in rows.items():
        lines.append(f"| `{pattern}` | {f.family} | {f.unit} | {count} | {f.description} |")
    lines.append("")
    lines.append(f"{len(FEATURES)} features (version {FEATURE_VERSION}); regions: volumes {', '.join(VOLUME_REGIONS)}; "
                 f"shape {', '.join(SHAPE_REGIONS)}; intensity {', '.join(INTENSITY_REGIONS)}; "
                 f"GLCM {', '.join(TEXTURE_REGIONS)}; modalities {', '.join(MODALITIES)}.")
    return "\n".join(lines)

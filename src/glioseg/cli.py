"""The ``glioseg`` command line. Thin: parses arguments, calls the library, prints.

Heavy imports (torch, nibabel, matplotlib) happen inside the commands so that
``glioseg --help`` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="glioseg",
    help="Brain tumour segmentation in multi-modal MRI (BraTS-style T1, T1ce, T2, FLAIR).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 1) -> None:
    """Print an error in red on stderr and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.callback()
def main() -> None:
    """glioseg: find, check, preprocess, train, predict and evaluate brain-tumour segmentations."""


@app.command()
def version() -> None:
    """Print the glioseg version."""
    from glioseg import __version__

    typer.echo(__version__)


@app.command()
def info(
    case: Path = typer.Argument(..., help="A case folder (any layout) or a dataset folder."),
    label_scheme: Optional[str] = typer.Option(None, "--label-scheme", help="Scheme of the segmentation."),
) -> None:
    """Print modalities, shape, spacing, orientation, intensity ranges and label volumes."""
    from glioseg.discovery import DatasetError, find_cases
    import numpy as np

    from glioseg.io import MODALITIES, CaseError, read_case
    from glioseg.labels import CANONICAL_NAMES, LabelSchemeError

    try:
        cases = find_cases(case)
        if len(cases) != 1:
            fail(f"{case}: holds {len(cases)} cases; give one case folder")
        c = read_case(cases[0], label_scheme)
    except (DatasetError, CaseError, LabelSchemeError) as exc:
        fail(str(exc))
    geo = c.geometry
    typer.echo(f"case        {c.case_id}  (layout {c.files.layout})")
    typer.echo(f"shape       {geo.shape}  spacing {tuple(round(s, 3) for s in geo.spacing)} mm  "
               f"orientation {''.join(geo.axcodes)}")
    for ch, mod in zip(c.image, MODALITIES):
        typer.echo(f"{mod:<11} {c.files.images[mod].path.name}  range [{ch.min():.1f}, {ch.max():.1f}]  "
                   f"nonzero {(ch != 0).mean() * 100:.1f}%")
    if c.label is not None and c.scheme is not None:
        voxel_ml = float(np.prod(geo.spacing)) / 1000.0
        typer.echo(f"labels      scheme {c.scheme.name}: {c.scheme.description}")
        for canon, name in CANONICAL_NAMES.items():
            n = int((c.label == canon).sum())
            if canon and n:
                typer.echo(f"  {name:<4} {n:>9d} voxels  {n * voxel_ml:8.2f} ml")


@app.command("import-model")
def import_model_cmd(
    bundle_zip: Path = typer.Argument(..., help="Zip made by `glioseg export-model`."),
    models_home: Optional[Path] = typer.Option(None, "--models-home", help="Install folder [~/.glioseg/models]."),
    name: Optional[str] = typer.Option(None, "--name", help="Install name [the manifest's name]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an installed model of that name."),
) -> None:
    """Install a model bundle safely (sha256 verified, no paths outside the target, no pickle)."""
    from glioseg.models import BundleError, default_models_home, import_model

    try:
        dest = import_model(bundle_zip, models_home or default_models_home(), name, overwrite)
    except BundleError as exc:
        fail(str(exc))
    typer.echo(f"installed {dest}  (use: glioseg predict -m {dest.name} ...)")


@app.command("export-model")
def export_model_cmd(
    bundle_dir: Path = typer.Argument(..., help="Bundle folder (with manifest.json)."),
    out_zip: Path = typer.Argument(..., help="Zip to write."),
) -> None:
    """Zip a verified model bundle for sharing."""
    from glioseg.models import BundleError, export_model

    try:
        typer.echo(str(export_model(bundle_dir, out_zip)))
    except BundleError as exc:
        fail(str(exc))


if __name__ == "__main__":
    app()

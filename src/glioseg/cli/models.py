"""Model bundles: ``export-model``, ``import-model``."""

from __future__ import annotations

from pathlib import Path

import typer

from glioseg.cli.app import fail


def export_model_cmd(
    bundle_dir: Path = typer.Argument(..., help="Bundle folder (with manifest.json)."),
    out_zip: Path = typer.Argument(..., help="Zip to write."),
) -> None:
    """Zip a verified model bundle for sharing."""
    from glioseg.artifacts.bundles import BundleError
    from glioseg.artifacts.install import export_model

    try:
        typer.echo(str(export_model(bundle_dir, out_zip)))
    except BundleError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{out_zip}: cannot write the zip ({exc.strerror or exc}); choose another path")


def import_model_cmd(
    bundle_zip: Path = typer.Argument(..., help="Zip made by `glioseg export-model`."),
    models_home: Path | None = typer.Option(None, "--models-home", help="Install folder \\[~/.glioseg/models]."),
    name: str | None = typer.Option(None, "--name", help="Install name \\[the manifest's name]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an installed model of that name."),
) -> None:
    """Install a model bundle safely (sha256 verified, no paths outside the target, no pickle)."""
    from glioseg.artifacts.bundles import BundleError, default_models_home
    from glioseg.artifacts.install import import_model

    try:
        dest = import_model(bundle_zip, models_home or default_models_home(), name, overwrite)
    except BundleError as exc:
        fail(str(exc))
    except OSError as exc:  # the models home itself (permissions, disk), not the bundle
        fail(f"{models_home or default_models_home()}: cannot install there ({exc}); pass --models-home FOLDER")
    typer.echo(f"installed {dest}  (use: glioseg predict -m {dest.name} ...)")

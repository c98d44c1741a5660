"""Model bundles and exports: ``export-model``, ``import-model``."""

from __future__ import annotations

from pathlib import Path

import typer

from glioseg.cli.app import fail

EXPORT_FORMATS = ("zip", "onnx", "torchscript", "openvino")


def export_model_cmd(
    model: str = typer.Argument(..., help="Model: bundle folder, run directory, installed model name, or "
                                "'default' (the shipped model)."),
    out: Path = typer.Argument(..., help="Zip to write (--format zip), else the export folder to create."),
    fmt: str = typer.Option("zip", "--format", help="zip (the bundle, for `glioseg import-model`), onnx, "
                            "torchscript or openvino: every stage and fold as a graph with dynamic spatial "
                            "sizes, model.json (pre/post-processing, label scheme) and a sha256 manifest."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """Zip a verified model bundle for sharing, or export its networks as ONNX / TorchScript / OpenVINO."""
    if fmt not in EXPORT_FORMATS:
        fail(f"--format {fmt!r}: choose one of {list(EXPORT_FORMATS)}")
    if out.exists() and not overwrite:
        fail(f"{out}: already exists; choose a new path or pass --overwrite")
    if fmt == "zip":
        _export_zip(model, out)
    else:
        _export_graphs(model, out, fmt, overwrite)


def _export_zip(model: str, out_zip: Path) -> None:
    from glioseg.artifacts.bundles import BundleError
    from glioseg.artifacts.install import export_model
    from glioseg.interop.export import resolve_export_source

    try:
        typer.echo(str(export_model(resolve_export_source(model), out_zip)))
    except BundleError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{out_zip}: cannot write the zip ({exc.strerror or exc}); choose another path")


def _export_graphs(model: str, out: Path, fmt: str, overwrite: bool) -> None:
    from glioseg.artifacts.bundles import BundleError
    from glioseg.artifacts.weights import TrainError
    from glioseg.interop.export import export_graphs
    from glioseg.interop.runners import ExportError

    try:
        folder = export_graphs(model, out, fmt, overwrite)
    except (BundleError, ExportError, FileNotFoundError, TrainError, ValueError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{out}: cannot write the export ({exc.strerror or exc}); choose another folder")
    typer.echo(f"{folder}  (predict with it: glioseg predict -m {folder} --backend "
               f"{'onnxruntime' if fmt == 'onnx' else fmt} ...)" if fmt != "torchscript" else str(folder))


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

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
    int8_calibration: Path | None = typer.Option(None, "--int8-calibration", help="With --format openvino: "
                                                 "quantise to int8 (NNCF, pip install nncf), calibrated on the "
                                                 "cases of this dataset folder (any layout)."),
    calibration_cases: int = typer.Option(4, "--calibration-cases", min=1, help="How many of its cases (the "
                                          "first N) calibrate --int8-calibration."),
) -> None:
    """Zip a verified model bundle for sharing, or export its networks as ONNX / TorchScript / OpenVINO."""
    if fmt not in EXPORT_FORMATS:
        fail(f"--format {fmt!r}: choose one of {list(EXPORT_FORMATS)}")
    if int8_calibration is not None and fmt != "openvino":
        fail(f"--int8-calibration quantises OpenVINO graphs; use --format openvino, not {fmt}")
    if out.exists() and not overwrite:
        fail(f"{out}: already exists; choose a new path or pass --overwrite")
    if fmt == "zip":
        _export_zip(model, out)
    elif int8_calibration is not None:
        _export_int8(model, out, overwrite, int8_calibration, calibration_cases)
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


def _export_int8(model: str, out: Path, overwrite: bool, data: Path, n_cases: int) -> None:
    """OpenVINO export into a temporary folder beside OUT, then its int8 copy at OUT."""
    import tempfile

    from glioseg.artifacts.bundles import BundleError
    from glioseg.artifacts.weights import TrainError
    from glioseg.data.layouts import find_cases
    from glioseg.data.naming import DatasetError
    from glioseg.data.nifti import CaseError, read_case
    from glioseg.interop.export import export_graphs
    from glioseg.interop.quantize import quantize_export
    from glioseg.interop.runners import ExportError, import_backend

    try:
        import_backend("nncf")
        cases = [read_case(f) for f in find_cases(data)[:n_cases]]
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.fp32.", dir=out.parent) as tmp:
            fp32 = export_graphs(model, Path(tmp) / "fp32", "openvino")
            folder = quantize_export(fp32, out, cases, overwrite)
    except (BundleError, ExportError, FileNotFoundError, TrainError, ValueError, DatasetError, CaseError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{out}: cannot write the export ({exc.strerror or exc}); choose another folder")
    typer.echo(f"{folder}  (int8; predict with it: glioseg predict -m {folder} --backend openvino ...)")


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

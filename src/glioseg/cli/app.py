"""The typer app, its error exit and the per-case progress bar shared by the commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:  # annotations only: the modules are imported inside the commands
    from rich.progress import Progress

    from glioseg.data.nifti import Case

app = typer.Typer(
    name="glioseg",
    help="Brain tumour segmentation in multi-modal MRI (BraTS-style T1, T1ce, T2, FLAIR).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error in red on stderr and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def check_label_scheme(name: str | None, flag: str = "--label-scheme") -> str | None:
    """Return ``name`` if it is a known label scheme (or None); otherwise exit with a one-line error
    naming the flag and the valid schemes."""
    if name is None:
        return None
    from glioseg.labels import LabelSchemeError, get_scheme

    try:
        get_scheme(name)
    except LabelSchemeError as exc:
        fail(f"{flag}: {exc}")
    return name


class CaseBar:
    """Progress bar over a batch of cases: the last case's status on the right, failures printed above it."""

    def __init__(self, name: str, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn(name), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[last]}", markup=False))
        self.progress: Progress = Progress(*columns, transient=False)
        self.task = self.progress.add_task(name, total=total, last="")

    def __enter__(self) -> CaseBar:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def advance(self, case_id: str, status: str, error: str | None = None, note: str = "") -> None:
        """Count one case done (``status`` done, skipped or failed); print its error when it failed."""
        from rich.markup import escape

        self.progress.update(self.task, advance=1, last=f"{case_id} {status}{note}")
        if status == "failed":
            self.progress.console.print(f"[red]failed[/red] {escape(error or '')}")


@app.callback()
def main() -> None:
    """glioseg: find, check, preprocess, train, predict and evaluate brain-tumour segmentations."""


def version() -> None:
    """Print the glioseg version."""
    from glioseg import __version__

    typer.echo(__version__)


def read_one_case(folder: Path, label_scheme: str | None) -> Case:
    """Read the only case in ``folder`` (any layout); exit with an error when it holds several or none.

    Raises:
        DatasetError, CaseError, LabelSchemeError: as :func:`glioseg.data.nifti.read_case` (the caller reports them).
    """
    from glioseg.data.layouts import find_cases
    from glioseg.data.nifti import read_case

    cases = find_cases(folder)
    if len(cases) != 1:
        fail(f"{folder}: holds {len(cases)} cases; give one case folder")
    return read_case(cases[0], label_scheme)

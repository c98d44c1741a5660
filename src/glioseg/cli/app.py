"""The typer app, its error exit, its consoles and the per-case progress bar shared by the commands.

Errors stay one line in logs and CI output: without a terminal, error messages, usage errors,
tables and progress lines are printed without wrapping at rich's default 80 columns.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:  # annotations only: the modules are imported inside the commands
    from rich.console import Console
    from rich.progress import Progress

    from glioseg.data.nifti import Case

# columns of a console writing to a file, a pipe or a CI log: long lines stay whole
LOG_WIDTH = 10_000


def _click_exception() -> type[Exception]:
    """click's ClickException: typer >= 0.2x vendors click as ``typer._click``, older typer uses click."""
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            return importlib.import_module(name).ClickException
        except ImportError:
            continue
    raise ImportError("neither typer._click nor click is installed; reinstall typer")


class OneLineErrorGroup(TyperGroup):
    """The ``glioseg`` group: without a terminal on stderr, usage errors are click's plain one-line
    ``Error: ...`` instead of rich's boxed panel (which wraps at 80 columns in logs). ``--help`` lists
    commands and command groups together in ``order`` (the workflow order ``cli/__init__`` sets)."""

    order: ClassVar[tuple[str, ...]] = ()

    def list_commands(self, ctx: Any) -> list[str]:
        rank = {name: i for i, name in enumerate(self.order)}
        return sorted(super().list_commands(ctx), key=lambda name: rank.get(name, len(rank)))

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        if not standalone_mode or sys.stderr.isatty():
            return super().main(args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except _click_exception() as exc:
            if type(exc).__name__ != "NoArgsIsHelpError":  # help already printed by typer
                exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="glioseg",
    cls=OneLineErrorGroup,
    help="Brain tumour segmentation in multi-modal MRI (BraTS-style T1, T1ce, T2, FLAIR).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def join_lines(text: str) -> str:
    """``text`` with its line breaks (multi-line exception messages) joined by single spaces."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: <message>`` as one line on stderr (red on a terminal) and exit with ``code``."""
    typer.secho(f"error: {join_lines(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def console(stderr: bool = False) -> Console:
    """A rich console for tables and progress: the terminal's width on a terminal, else no wrapping."""
    from rich.console import Console

    terminal = Console(stderr=stderr)
    if terminal.is_terminal:
        return terminal
    return Console(stderr=stderr, width=LOG_WIDTH, soft_wrap=True)


def check_tta_and_precision(tta: str, precision: str) -> None:
    """Exit with one line naming the flag when --tta or --precision is not a valid value."""
    from glioseg.config import PRECISIONS
    from glioseg.inference.ensemble import parse_flips

    try:
        parse_flips(tta)
    except ValueError as exc:
        fail(f"--tta {tta!r}: {exc}")
    if precision not in PRECISIONS:
        fail(f"--precision {precision!r}: choose one of {list(PRECISIONS)}")


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
        self.progress: Progress = Progress(*columns, transient=False, console=console())
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
            self.progress.console.print(f"[red]failed[/red] {escape(join_lines(error or ''))}")


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

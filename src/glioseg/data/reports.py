"""What ``glioseg check`` reports: findings, per-case and dataset reports, and their renderings
(one line per finding, a rich table, JSON).

The checks that fill these reports are in :mod:`glioseg.data.checks`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from glioseg.scheme_rules import LabelStats
from glioseg.utils import atomic_write

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem of one case.

    Attributes:
        severity: ``"error"`` (the case cannot be used) or ``"warning"``.
        check: short machine-readable name, e.g. ``"missing-modality"``, ``"nan"``.
        message: what is wrong and what to do.
        path: the file concerned, or None.
    """

    severity: Severity
    check: str
    message: str
    path: Path | None = None

    def line(self, case_id: str) -> str:
        """One line naming the case, the file and the fix."""
        where = f" [{self.path}]" if self.path is not None else ""
        return f"{self.severity.upper()} case {case_id}{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"severity": self.severity, "check": self.check, "message": self.message,
                "path": str(self.path) if self.path is not None else None}


@dataclass
class CaseReport:
    """Result of checking one case.

    Attributes:
        case_id: the case.
        layout: layout it was found in.
        findings: errors and warnings, in the order found.
        shape: on-disk spatial shape of the reference image, or None if unreadable.
        spacing: voxel size in mm, or None.
        label_values: distinct values in the segmentation, or None without a readable one.
        scheme_hint: label scheme that the layout implies, or None.
        label_path: the segmentation file, or None.
        scheme: label scheme the segmentation was checked against, or None.
        seconds: time spent on the case.
        label_stats: values and outer-border counts of the segmentation (for the scheme
            decision), or None without a readable one.
    """

    case_id: str
    layout: str
    findings: list[Finding] = field(default_factory=list)
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    label_values: tuple[int, ...] | None = None
    scheme_hint: str | None = None
    label_path: Path | None = None
    scheme: str | None = None
    seconds: float = 0.0
    label_stats: LabelStats | None = None

    @property
    def errors(self) -> list[Finding]:
        """Findings of severity error."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        """Findings of severity warning."""
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when the case has no error (warnings allowed)."""
        return not self.errors

    @property
    def status(self) -> str:
        """``"fail"``, ``"warn"`` or ``"ok"``."""
        return "fail" if self.errors else "warn" if self.warnings else "ok"

    def error(self, check: str, message: str, path: Path | None = None) -> None:
        """Record an error (whitespace collapsed: one line per finding)."""
        self.findings.append(Finding("error", check, " ".join(message.split()), path))

    def warn(self, check: str, message: str, path: Path | None = None) -> None:
        """Record a warning (whitespace collapsed: one line per finding)."""
        self.findings.append(Finding("warning", check, " ".join(message.split()), path))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "case_id": self.case_id, "layout": self.layout, "status": self.status,
            "scheme": self.scheme, "shape": list(self.shape) if self.shape else None,
            "spacing": [round(s, 4) for s in self.spacing] if self.spacing else None,
            "label_values": list(self.label_values) if self.label_values is not None else None,
            "seconds": round(self.seconds, 3),
            "errors": [f.to_dict() for f in self.errors],
            "warnings": [f.to_dict() for f in self.warnings],
        }


@dataclass
class DatasetReport:
    """Result of checking a dataset.

    Attributes:
        root: the dataset folder.
        layout: detected (or forced) layout, or None when no case was found.
        cases: one report per case, sorted by ID.
        errors: dataset-level problems (no cases, unreadable dataset.json, undecidable scheme).
        scheme: label scheme used for the segmentations, or None.
        seconds: total time.
        scheme_evidence: what decided the scheme (option, layout, dataset.json, values), or None.
    """

    root: Path
    layout: str | None
    cases: list[CaseReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    scheme: str | None = None
    seconds: float = 0.0
    scheme_evidence: str | None = None

    @property
    def ok(self) -> bool:
        """True when there is no dataset-level error and no case failed."""
        return not self.errors and all(c.ok for c in self.cases)

    @property
    def n_failed(self) -> int:
        """Number of cases with at least one error."""
        return sum(not c.ok for c in self.cases)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what ``glioseg check --json`` writes)."""
        return {
            "root": str(self.root), "layout": self.layout, "scheme": self.scheme,
            "scheme_evidence": self.scheme_evidence, "ok": self.ok,
            "n_cases": len(self.cases), "n_failed": self.n_failed,
            "n_warned": sum(c.status == "warn" for c in self.cases),
            "seconds": round(self.seconds, 3), "errors": list(self.errors),
            "cases": [c.to_dict() for c in self.cases],
        }


def write_report_json(report: DatasetReport, path: Path | str) -> Path:
    """Write the dataset report as JSON, atomically."""
    text = json.dumps(report.to_dict(), indent=2)
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def report_lines(report: DatasetReport) -> Iterable[str]:
    """One line per dataset-level error and per finding, errors first."""
    for message in report.errors:
        yield f"ERROR dataset {report.root}: {message}"
    for severity in ("error", "warning"):
        for case in report.cases:
            for finding in case.findings:
                if finding.severity == severity:
                    yield finding.line(case.case_id)


def report_table(report: DatasetReport) -> Any:
    """A rich Table with one row per case (rich is imported here, not at module import)."""
    from rich.table import Table

    table = Table(title=f"glioseg check {report.root} ({report.layout}, scheme {report.scheme})")
    for column in ("case", "status", "shape", "spacing (mm)", "labels", "problems"):
        table.add_column(column)
    style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    for case in report.cases:
        table.add_row(
            case.case_id, f"[{style[case.status]}]{case.status}[/]",
            "x".join(map(str, case.shape)) if case.shape else "-",
            "x".join(f"{s:.3g}" for s in case.spacing) if case.spacing else "-",
            ",".join(map(str, case.label_values)) if case.label_values is not None else "-",
            "; ".join(f.check for f in case.findings) or "-",
        )
    return table

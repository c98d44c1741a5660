"""Layering: every stage imports only its own and earlier stages (data -> ... -> evaluation -> interop -> cli)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import glioseg

STAGES = ("data", "preprocessing", "networks", "artifacts", "inference", "training", "evaluation", "radiomics",
          "interop", "cli")
PACKAGE = Path(glioseg.__file__).parent


def glioseg_imports(path: Path) -> set[str]:
    """Every ``glioseg.<stage>`` imported by a module, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found |= {n.split(".")[1] for n in names if n.startswith("glioseg.") and n.count(".") >= 1}
    return found


@pytest.mark.parametrize("stage", STAGES[:-1])
def test_stage_imports_only_itself_and_earlier_stages(stage):
    later = set(STAGES[STAGES.index(stage) + 1:])
    for path in sorted((PACKAGE / stage).glob("*.py")):
        wrong = glioseg_imports(path) & later
        assert not wrong, f"{path.relative_to(PACKAGE)} imports later stage(s) {sorted(wrong)}"
